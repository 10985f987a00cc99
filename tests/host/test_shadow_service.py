"""Tests for the paho-mqtt glue of the Device Shadow emulation (no broker)."""

from __future__ import annotations

import json
import logging
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from host_tools.bench.shadow_engine import ShadowEngine
from host_tools.bench.shadow_service import REQUEST_SUBSCRIPTIONS, apply_update, attach

T0 = 1_700_000_000
SUCCESS = ReasonCode(PacketTypes.CONNACK, "Success")
REFUSED = ReasonCode(PacketTypes.CONNACK, "Not authorized")


class FakeClient:
    """Records subscribe/publish calls and lets a test fire paho callbacks."""

    def __init__(self, connected: bool = False) -> None:
        self.on_connect: Any = None
        self.on_message: Any = None
        self.connected = connected
        self.callbacks: dict[str, Any] = {}
        self.subscribe_calls: list[Any] = []
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.fail_publish = False

    def is_connected(self) -> bool:
        return self.connected

    def message_callback_add(self, sub: str, callback: Any) -> None:
        self.callbacks[sub] = callback

    def subscribe(self, topic: Any, qos: int = 0) -> tuple[int, int]:
        self.subscribe_calls.append(topic)
        return mqtt.MQTT_ERR_SUCCESS, len(self.subscribe_calls)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if self.fail_publish:
            raise RuntimeError("socket gone")
        self.published.append((topic, payload, qos, retain))

    def connect_ack(self, reason: Any = SUCCESS) -> None:
        """What paho's network thread does on CONNACK (VERSION2 signature)."""
        self.connected = not getattr(reason, "is_failure", False)
        self.on_connect(self, None, mqtt.ConnectFlags(session_present=False), reason, None)

    def deliver(self, topic: str, payload: bytes) -> None:
        """Route an incoming PUBLISH like paho: per-filter callbacks, else on_message."""
        message = mqtt.MQTTMessage(topic=topic.encode())
        message.payload = payload
        matched = [cb for sub, cb in self.callbacks.items() if mqtt.topic_matches_sub(sub, topic)]
        for callback in matched:
            callback(self, None, message)
        if not matched and self.on_message is not None:
            self.on_message(self, None, message)

    def sent(self) -> list[tuple[str, dict]]:
        return [(topic, json.loads(payload)) for topic, payload, _, _ in self.published]


@pytest.fixture
def engine() -> ShadowEngine:
    return ShadowEngine(clock=lambda: T0)


@pytest.fixture
def client(engine: ShadowEngine) -> FakeClient:
    fake = FakeClient()
    attach(fake, engine)  # type: ignore[arg-type]
    fake.connect_ack()
    return fake


def test_request_subscriptions_cover_classic_and_named() -> None:
    assert sorted(REQUEST_SUBSCRIPTIONS) == sorted(
        [
            "$aws/things/+/shadow/get",
            "$aws/things/+/shadow/update",
            "$aws/things/+/shadow/delete",
            "$aws/things/+/shadow/name/+/get",
            "$aws/things/+/shadow/name/+/update",
            "$aws/things/+/shadow/name/+/delete",
        ]
    )


def test_subscribes_at_qos1_on_every_connect(engine: ShadowEngine) -> None:
    fake = FakeClient()
    attach(fake, engine)  # type: ignore[arg-type]
    assert fake.subscribe_calls == []
    fake.connect_ack()
    fake.connect_ack()
    expected = [(topic, 1) for topic in REQUEST_SUBSCRIPTIONS]
    assert fake.subscribe_calls == [expected, expected]


def test_no_subscribe_when_connection_refused(engine: ShadowEngine) -> None:
    fake = FakeClient()
    attach(fake, engine)  # type: ignore[arg-type]
    fake.connect_ack(REFUSED)
    assert fake.subscribe_calls == []


def test_subscribes_at_once_when_already_connected(engine: ShadowEngine) -> None:
    fake = FakeClient(connected=True)
    attach(fake, engine)  # type: ignore[arg-type]
    assert len(fake.subscribe_calls) == 1


def test_earlier_on_connect_is_kept_and_may_fail(
    engine: ShadowEngine, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeClient()
    calls: list[Any] = []

    def earlier(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        calls.append(reason)
        raise RuntimeError("boom")

    fake.on_connect = earlier
    attach(fake, engine)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        fake.connect_ack()
    assert calls == [SUCCESS]
    assert len(fake.subscribe_calls) == 1
    assert "earlier on_connect" in caplog.text


def test_on_message_is_left_to_the_caller(engine: ShadowEngine) -> None:
    fake = FakeClient()
    seen: list[str] = []
    fake.on_message = lambda client, userdata, message: seen.append(message.topic)
    attach(fake, engine)  # type: ignore[arg-type]
    fake.deliver("telemetry/T", b"{}")
    assert seen == ["telemetry/T"]
    assert fake.published == []


def test_update_publishes_replies_in_order(client: FakeClient) -> None:
    client.deliver("$aws/things/T/shadow/update", b'{"state":{"reported":{"on":false}}}')
    client.published.clear()
    client.deliver(
        "$aws/things/T/shadow/update", b'{"state":{"desired":{"on":true}},"clientToken":"t1"}'
    )
    topics = [topic for topic, _, _, _ in client.published]
    assert topics == [
        "$aws/things/T/shadow/update/accepted",
        "$aws/things/T/shadow/update/delta",
        "$aws/things/T/shadow/update/documents",
    ]
    assert all(qos == 1 and retain is False for _, _, qos, retain in client.published)
    delta = dict(client.sent())["$aws/things/T/shadow/update/delta"]
    assert delta == {
        "version": 2,
        "timestamp": T0,
        "state": {"on": True},
        "metadata": {"on": {"timestamp": T0}},
        "clientToken": "t1",
    }


def test_named_shadow_replies_on_named_topics(client: FakeClient, engine: ShadowEngine) -> None:
    client.deliver("$aws/things/T/shadow/name/cfg/update", b'{"state":{"reported":{"x":1}}}')
    client.deliver("$aws/things/T/shadow/name/cfg/get", b"")
    topics = [topic for topic, _, _, _ in client.published]
    assert topics == [
        "$aws/things/T/shadow/name/cfg/update/accepted",
        "$aws/things/T/shadow/name/cfg/update/documents",
        "$aws/things/T/shadow/name/cfg/get/accepted",
    ]
    assert engine.document("T") is None
    assert engine.document("T", "cfg")["state"]["reported"] == {"x": 1}


def test_errors_go_to_rejected(client: FakeClient) -> None:
    client.deliver("$aws/things/T/shadow/update", b"{not json")
    client.deliver("$aws/things/T/shadow/get", b"")
    client.deliver("$aws/things/T/shadow/name/s/delete", b"")
    sent = client.sent()
    assert [topic for topic, _ in sent] == [
        "$aws/things/T/shadow/update/rejected",
        "$aws/things/T/shadow/get/rejected",
        "$aws/things/T/shadow/name/s/delete/rejected",
    ]
    assert [doc["code"] for _, doc in sent] == [400, 404, 404]


def test_payload_is_compact_utf8_json(client: FakeClient) -> None:
    client.deliver("$aws/things/T/shadow/update", '{"state":{"reported":{"name":"café"}}}'.encode())
    payload = client.published[0][1]
    assert isinstance(payload, bytes)
    assert "café".encode() in payload
    assert b", " not in payload


def test_invalid_names_are_ignored(client: FakeClient) -> None:
    client.deliver("$aws/things/bad name/shadow/update", b'{"state":{}}')
    client.deliver("$aws/things/T/shadow/name/bad.name/get", b"")
    assert client.published == []


def test_callback_never_raises(
    engine: ShadowEngine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeClient()
    attach(fake, engine, logging.getLogger("bench.test"))  # type: ignore[arg-type]
    fake.connect_ack()
    fake.fail_publish = True
    with caplog.at_level(logging.ERROR, logger="bench.test"):
        fake.deliver("$aws/things/T/shadow/update", b'{"state":{"reported":{"a":1}}}')

    def explode(*args: Any) -> None:
        raise RuntimeError("engine bug")

    monkeypatch.setattr(engine, "handle", explode)
    fake.fail_publish = False
    with caplog.at_level(logging.ERROR, logger="bench.test"):
        fake.deliver("$aws/things/T/shadow/get", b"")
    assert caplog.text.count("failed to serve") == 2
    assert fake.published == []


def test_apply_update_runs_like_a_republish_rule(client: FakeClient, engine: ShadowEngine) -> None:
    client.deliver(
        "$aws/things/T/shadow/update",
        b'{"state":{"desired":{"connected":true},"reported":{"connected":true}}}',
    )
    client.published.clear()
    apply_update(client, engine, "T", None, {"reported": {"connected": False}})  # type: ignore[arg-type]
    sent = client.sent()
    assert [topic for topic, _ in sent] == [
        "$aws/things/T/shadow/update/accepted",
        "$aws/things/T/shadow/update/delta",
        "$aws/things/T/shadow/update/documents",
    ]
    assert sent[0][1]["state"] == {"reported": {"connected": False}}
    assert engine.document("T")["state"]["reported"] == {"connected": False}
    assert engine.document("T")["version"] == 2


def test_apply_update_accepts_a_full_request(client: FakeClient, engine: ShadowEngine) -> None:
    apply_update(
        client, engine, "T", "conn", {"state": {"reported": {"up": 1}}, "clientToken": "rule"}
    )  # type: ignore[arg-type]
    topic, doc = client.sent()[0]
    assert topic == "$aws/things/T/shadow/name/conn/update/accepted"
    assert doc["clientToken"] == "rule"


def test_apply_update_publishes_rejections(client: FakeClient, engine: ShadowEngine) -> None:
    apply_update(client, engine, "T", None, {"reported": "not an object"})  # type: ignore[arg-type]
    topic, doc = client.sent()[0]
    assert topic == "$aws/things/T/shadow/update/rejected"
    assert doc["message"] == "Reported node must be an object"


def test_apply_update_rejects_bad_names(client: FakeClient, engine: ShadowEngine) -> None:
    with pytest.raises(ValueError):
        apply_update(client, engine, "bad name", None, {"reported": {}})  # type: ignore[arg-type]


def test_attach_to_a_real_paho_client(engine: ShadowEngine) -> None:
    real = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    attach(real, engine)
    assert real.on_connect is not None
    real.on_connect(real, None, mqtt.ConnectFlags(session_present=False), REFUSED, None)
