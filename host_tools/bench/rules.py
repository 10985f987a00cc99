"""The bench's rules engine: what AWS IoT topic rules do for thingkit.

One rule, as thingkit's AWS deployment defines it::

    SELECT * FROM '<prefix>/+/status' WHERE state = 'offline'
    -> republish to $aws/things/${topic(2)}/shadow/update
       {"state": {"reported": {"connected": false}}}

The device's Last Will says offline on its status topic (AWS does not deliver a Last
Will to reserved $aws topics), so the shadow shows the device offline after an unclean
disconnect (IoT Lens BP 27.2). Retained copies replayed on subscribe are not events
and are ignored, as a rule never sees them.
"""

from __future__ import annotations

import json
import logging

import paho.mqtt.client as mqtt

from host_tools.bench import shadow_service
from host_tools.bench.shadow_engine import ShadowEngine

log = logging.getLogger(__name__)


def offline_thing(topic: str, payload: bytes, prefix: str) -> str | None:
    """The thing a status message reports offline, or None."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != prefix or parts[2] != "status":
        return None
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("state") != "offline":
        return None
    return parts[1]


def attach(client: mqtt.Client, engine: ShadowEngine, prefix: str = "thingkit") -> int:
    """Subscribe to status topics and run the offline rule on each new message.

    Returns:
        The message id of the SUBSCRIBE, so the caller can wait for its SUBACK.
    """
    filt = f"{prefix}/+/status"

    def on_status(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            return
        thing = offline_thing(msg.topic, msg.payload, prefix)
        if thing is None:
            return
        log.info("rule: %s offline -> shadow reported.connected=false", thing)
        try:
            shadow_service.apply_update(
                c, engine, thing, None, {"state": {"reported": {"connected": False}}}
            )
        except Exception:  # a rule failure must not kill the services process
            log.exception("offline rule failed for %s", thing)

    client.message_callback_add(filt, on_status)
    return client.subscribe(filt, qos=1)[1]
