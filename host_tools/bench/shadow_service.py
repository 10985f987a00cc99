"""Serve the emulated Device Shadow service over an MQTT client (paho-mqtt 2.x).

:func:`attach` subscribes a connected :class:`paho.mqtt.client.Client` to the
shadow request topics, hands each request to a
:class:`~host_tools.bench.shadow_engine.ShadowEngine` and publishes the replies
at QoS 1, not retained, as AWS IoT does. :func:`apply_update` lets bench rules
(for example a Last Will republished into ``reported.connected = false``) run
an update the way an AWS topic rule republishing to ``.../shadow/update`` would.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import paho.mqtt.client as mqtt

from host_tools.bench.shadow_engine import (
    ShadowEngine,
    parse_request_topic,
    reply_topic,
)

REQUEST_SUBSCRIPTIONS = [
    "$aws/things/+/shadow/get",
    "$aws/things/+/shadow/update",
    "$aws/things/+/shadow/delete",
    "$aws/things/+/shadow/name/+/get",
    "$aws/things/+/shadow/name/+/update",
    "$aws/things/+/shadow/name/+/delete",
]
REPLY_QOS = 1

_log = logging.getLogger(__name__)


def attach(client: mqtt.Client, engine: ShadowEngine, log: logging.Logger | None = None) -> None:
    """Serve shadow requests arriving on ``client`` from ``engine``.

    Subscribes on every (re)connect, and at once if the client is already
    connected. Any ``on_connect`` set before this call keeps being called;
    requests are routed with ``message_callback_add``, so ``on_message`` stays
    free for the caller. Callbacks never raise: failures are logged.

    Args:
        client: A paho-mqtt client (``CallbackAPIVersion.VERSION2``).
        engine: The engine answering the requests.
        log: Logger to use; defaults to this module's logger.
    """
    logger = log or _log
    previous_on_connect = client.on_connect

    def on_connect(cl: mqtt.Client, userdata: Any, *args: Any) -> None:
        if previous_on_connect is not None:
            try:
                previous_on_connect(cl, userdata, *args)
            except Exception:
                logger.exception("shadow service: the earlier on_connect callback failed")
        reason = args[1] if len(args) > 1 else 0
        if getattr(reason, "is_failure", reason != 0):
            return
        _subscribe(cl, logger)

    def on_request(cl: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            _serve(cl, engine, message.topic, message.payload, logger)
        except Exception:
            logger.exception("shadow service: failed to serve %s", message.topic)

    client.on_connect = on_connect
    for topic_filter in REQUEST_SUBSCRIPTIONS:
        client.message_callback_add(topic_filter, on_request)
    if client.is_connected():
        _subscribe(client, logger)


def apply_update(
    client: mqtt.Client,
    engine: ShadowEngine,
    thing: str,
    shadow: str | None,
    state_doc: dict[str, Any],
) -> None:
    """Run an update through the engine and publish its replies.

    This is what an AWS topic rule republishing to the shadow update topic
    amounts to: the update is processed like a device's, and accepted, delta,
    documents or rejected replies go out on the usual topics.

    Args:
        client: Client used to publish the replies.
        engine: The engine holding the shadows.
        thing: Thing name.
        shadow: Shadow name, or None for the classic shadow.
        state_doc: The state to apply, e.g. ``{"reported": {"connected": False}}``;
            a full request such as ``{"state": {...}, "clientToken": "t"}`` is
            also accepted.

    Raises:
        ValueError: When ``thing`` or ``shadow`` is not a valid AWS name.
    """
    request = state_doc if "state" in state_doc else {"state": state_doc}
    payload = json.dumps(request, separators=(",", ":")).encode("utf-8")
    replies = engine.handle(thing, shadow, "update", payload)
    _publish_replies(client, thing, shadow, replies, _log)


def _subscribe(client: mqtt.Client, logger: logging.Logger) -> None:
    """Subscribe to every shadow request topic at QoS 1."""
    result, _mid = client.subscribe([(topic, REPLY_QOS) for topic in REQUEST_SUBSCRIPTIONS])
    if result != mqtt.MQTT_ERR_SUCCESS:
        logger.warning("shadow service: subscribe failed (%s)", result)


def _serve(
    client: mqtt.Client,
    engine: ShadowEngine,
    topic: str,
    payload: bytes,
    logger: logging.Logger,
) -> None:
    """Handle one request topic and publish the engine's replies."""
    parsed = parse_request_topic(topic)
    if parsed is None:
        logger.debug("shadow service: ignoring %s", topic)
        return
    thing, shadow, op = parsed
    _publish_replies(client, thing, shadow, engine.handle(thing, shadow, op, payload), logger)


def _publish_replies(
    client: mqtt.Client,
    thing: str,
    shadow: str | None,
    replies: list[tuple[str, dict[str, Any]]],
    logger: logging.Logger,
) -> None:
    """Publish engine replies at QoS 1, not retained, in order."""
    for suffix, document in replies:
        topic = reply_topic(thing, shadow, suffix)
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        client.publish(topic, body, qos=REPLY_QOS, retain=False)
        if suffix.endswith("/rejected"):
            logger.info("shadow %s: %s %s", topic, document.get("code"), document.get("message"))
