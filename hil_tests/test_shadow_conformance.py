"""Device Shadow conformance of the firmware, driven through the bench's shadow service
as the cloud would drive it: deltas while online and offline, version conflicts, null
deletes, the 8 KB document limit and client tokens.

The device's settings (``desired.settings`` -> ``reported.settings``) are the state the
tests move; ``log_level`` and ``diag_interval_s`` are valid on every board.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid

import pytest

from hil_tests.helpers import ping, reported
from host_tools.bench import clients, shadow_doc
from host_tools.bench.layout import OPERATOR_CN
from host_tools.bench.observer import Message
from host_tools.bench.shadow_engine import MAX_STATE_BYTES

pytestmark = pytest.mark.slow

DEVICE_REQUEST = ("get", "update", "delete")


def _shadow_base(thing: str) -> str:
    return f"$aws/things/{thing}/shadow/"


def _device_requests(observer, thing: str, since: float = 0.0) -> list[Message]:
    """Shadow requests the device published (classic and named), oldest first. The
    operator's own requests carry 16-hex tokens from the Observer; the device's do not."""
    base = _shadow_base(thing)
    out = []
    for m in list(observer.messages):
        if m.t < since or not m.topic.startswith(base):
            continue
        if m.topic.rsplit("/", 1)[-1] not in DEVICE_REQUEST:
            continue
        d = m.json()
        tok = d.get("clientToken") if isinstance(d, dict) else None
        if isinstance(tok, str) and len(tok) == 16 and "-" not in tok:
            continue  # the operator (Observer.shadow_request)
        out.append(m)
    return out


def _device_accepted(observer, thing: str, pred, timeout: float, since: float):
    """The first update/accepted of the classic shadow whose reported part matches."""
    topic = _shadow_base(thing) + "update/accepted"
    return observer.wait(lambda m: m.topic == topic and pred(reported(m)), timeout, since=since)


def _desired(observer, thing: str, settings: dict | None) -> dict:
    suffix, doc = observer.shadow_request(
        thing, "update", {"state": {"desired": {"settings": settings}}}
    )
    assert suffix == "update/accepted", doc
    return doc


def _refused_log_level(observer, kit) -> float:
    """Desire an invalid log_level and wait for the device's refusal; when it was asked."""
    t = time.time()
    _desired(observer, kit.thing, {"log_level": "loud"})
    bad = _device_accepted(
        observer, kit.thing, lambda r: r.get("settings_rejected", {}).get("log_level"), 10, t
    )
    assert bad is not None, kit.console()
    return t


def _delta_of(doc: dict) -> dict:
    return doc.get("state", {}).get("delta") or {}


@pytest.mark.checklist("hw.shadow_validated", "lens.config_via_shadow")
def test_delta_applied_and_reported(bench, make_kit, observer):
    kit = make_kit(bench, state="online")
    t1 = time.time()
    _desired(observer, kit.thing, {"log_level": "warn", "diag_interval_s": 120})
    acc = _device_accepted(
        observer,
        kit.thing,
        lambda r: r.get("settings", {}).get("log_level") == "warn",
        10,
        t1,
    )
    assert acc is not None, kit.console()
    assert reported(acc)["settings"]["diag_interval_s"] == 120
    doc = observer.shadow_get(kit.thing)
    assert "settings" not in _delta_of(doc), f"delta left after the device reported: {doc}"
    assert doc["state"]["reported"]["settings"]["log_level"] == "warn"


@pytest.mark.checklist("hw.shadow_validated", "lens.shadow_sync", "lens.config_via_shadow")
def test_delta_set_while_offline_reconciled_on_reconnect(bench, make_kit, observer):
    kit = make_kit(bench, state="online")
    kit.power_off()
    _desired(observer, kit.thing, {"log_level": "debug", "diag_interval_s": 300})
    assert "settings" in _delta_of(observer.shadow_get(kit.thing))

    t_on = time.time()
    kit.power_on()
    acc = _device_accepted(
        observer,
        kit.thing,
        lambda r: r.get("connected") is True and r.get("settings", {}).get("log_level") == "debug",
        30,
        t_on,
    )
    assert acc is not None, kit.console()
    assert reported(acc)["settings"]["diag_interval_s"] == 300
    # Reconciled in the connect-time sync (one get, one update), not a later round.
    first = _device_requests(observer, kit.thing, t_on)[:2]
    assert [m.topic.rsplit("/", 1)[-1] for m in first] == ["get", "update"], first
    assert "settings" not in _delta_of(observer.shadow_get(kit.thing))


class _ConflictInjector:
    """Operator client that answers the device's shadow get with an update of its own,
    so the device's conditional update that follows carries a stale version (409)."""

    def __init__(self, bench, thing: str, desired: dict) -> None:
        self.thing = thing
        self.body = json.dumps({"state": {"desired": desired}}).encode()
        self.fired = threading.Event()
        self.client = clients.make_client(
            bench.layout, OPERATOR_CN, f"inject-{uuid.uuid4().hex[:6]}"
        )
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        clients.connect(self.client, bench.port)
        self.client.subscribe(_shadow_base(thing) + "get", 1)
        assert subscribed.wait(5)

    def _on_message(self, c, userdata, msg) -> None:
        if not self.fired.is_set():
            self.fired.set()
            c.publish(_shadow_base(self.thing) + "update", self.body, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.checklist("hw.shadow_validated", "lens.shadow_sync")
# The fault proxy listens on this host's loopback, which only the virtual kit reaches.
@pytest.mark.capability("virtual_kit")
def test_version_conflict_recovered(bench, proxied_kit, fault_proxy, observer):
    kit = proxied_kit()
    # A shadow must exist for the device's update to be conditional on its version.
    observer.shadow_request(kit.thing, "update", {"state": {"reported": {"connected": False}}})
    inj = _ConflictInjector(bench, kit.thing, {"settings": {"diag_interval_s": 90}})
    # What the broker sends the kit arrives 1 s late, so the injected update (sent when the
    # injector sees the device's get) reaches the shadow before the device's conditional
    # update, however busy this host is (without it the injector lost the race under load).
    fault_proxy.delay(down_s=1.0)
    try:
        t0 = time.time()
        kit.power_on()
        ok = _device_accepted(observer, kit.thing, lambda r: r.get("connected") is True, 30, t0)
        assert ok is not None, kit.console()
    finally:
        inj.close()
    assert inj.fired.is_set(), "the device never sent a shadow get"
    rejected = observer.find(
        lambda m: (
            m.topic == _shadow_base(kit.thing) + "update/rejected"
            and (m.json() or {}).get("code") == 409
        ),
        since=t0,
    )
    assert rejected is not None, "no 409: the injected update lost the race"
    kit.wait_for(r"version conflict at \d+, reading the shadow again", 5)
    assert rejected.t <= ok.t
    # The injected setting reached the device too (as a delta), and nothing is left over.
    acc = _device_accepted(
        observer, kit.thing, lambda r: r.get("settings", {}).get("diag_interval_s") == 90, 10, t0
    )
    assert acc is not None, kit.console()
    assert "session ended" not in kit.console()


@pytest.mark.checklist("hw.shadow_validated")
def test_null_deletes_a_key(bench, make_kit, observer):
    kit = make_kit(bench, state="online")
    thing = kit.thing
    _refused_log_level(observer, kit)
    assert "log_level" in observer.shadow_get(thing)["state"]["reported"]["settings_rejected"]

    # A valid value: the device reports settings_rejected.log_level = null, which deletes it.
    t2 = time.time()
    _desired(observer, thing, {"log_level": "warn"})
    cleared = _device_accepted(
        observer,
        thing,
        lambda r: (
            "log_level" in r.get("settings_rejected", {})
            and r["settings_rejected"]["log_level"] is None
        ),
        10,
        t2,
    )
    assert cleared is not None, kit.console()
    doc = observer.shadow_get(thing)
    assert "log_level" not in doc["state"]["reported"].get("settings_rejected", {}), doc

    # The cloud deletes its desired settings with null: gone, no delta, device unmoved.
    t3 = time.time()
    suffix, _ = observer.shadow_request(thing, "update", {"state": {"desired": {"settings": None}}})
    assert suffix == "update/accepted"
    doc = observer.shadow_get(thing)
    assert "settings" not in doc["state"].get("desired", {}), doc
    assert not _delta_of(doc), doc
    time.sleep(1.0)
    assert _device_requests(observer, thing, t3) == [], "the device reacted to a null desired"
    assert doc["state"]["reported"]["settings"]["log_level"] == "warn"


# A rejected setting: the device answers it with a reason in reported.settings_rejected.
_BAD_SETTING = {"desired": {"settings": {"log_level": "loud"}}}
_HEADROOM = 20  # bytes left under the limit once the bad setting is desired


def _pad_shadow(observer, thing: str, then: dict) -> int:
    """Fill reported with operator updates until, once ``then`` is applied, desired +
    reported is exactly ``_HEADROOM`` bytes under the 8 KB limit (the service's own
    accounting). Each update is small, so the device, which receives every
    update/accepted of its shadow, never has to parse a large message."""
    doc = observer.shadow_get(thing) or {"state": {}}
    state = {k: v for k, v in doc["state"].items() if k in shadow_doc.SECTIONS}
    target = MAX_STATE_BYTES - _HEADROOM

    def size_after(st: dict) -> int:
        return shadow_doc.state_size(shadow_doc.apply_state(st, {}, then, 0)[0])

    i = 0
    while (room := target - size_after(state)) > 0:
        key = f"pad{i}"
        overhead = size_after(shadow_doc.apply_state(state, {}, {"reported": {key: ""}}, 0)[0])
        overhead -= size_after(state)
        n = 600 if room > 600 + overhead + 50 else room - overhead
        patch = {"reported": {key: "x" * n}}
        suffix, reply = observer.shadow_request(thing, "update", {"state": patch})
        assert suffix == "update/accepted", reply
        state = shadow_doc.apply_state(state, {}, patch, 0)[0]
        i += 1
    assert size_after(state) == target
    return target


def _rejections(observer, thing: str, code: int, since: float) -> list[Message]:
    topic = _shadow_base(thing) + "update/rejected"
    return [
        m
        for m in list(observer.messages)
        if m.t >= since and m.topic == topic and (m.json() or {}).get("code") == code
    ]


@pytest.mark.checklist("hw.shadow_validated")
def test_oversize_report_413_handled_without_retry_loop(bench, make_kit, observer):
    """A report the service refuses as too large (413) is logged once and not resent; the
    session goes on."""
    kit = make_kit(bench, state="online")
    thing = kit.thing
    _pad_shadow(observer, thing, _BAD_SETTING)
    t1 = time.time()
    suffix, _ = observer.shadow_request(thing, "update", {"state": _BAD_SETTING})
    assert suffix == "update/accepted"
    kit.wait_for(r"W shadow: shadow refused an update: 413", 10)
    time.sleep(3.0)  # long enough for a retry loop to show
    updates = [m for m in _device_requests(observer, thing, t1) if m.topic.endswith("/update")]
    classic = [m for m in updates if "/name/" not in m.topic]
    assert len(classic) == 1, [m.excerpt() for m in classic]
    assert len(_rejections(observer, thing, 413, t1)) == 1
    con = kit.console()
    assert "session ended" not in con and kit.is_running()
    # Still serving: App #1 answers a ping after the refusal.
    assert ping(observer, thing) is not None, con


@pytest.mark.checklist("hw.shadow_validated")
def test_oversize_shadow_at_connect_handled_without_reconnect_loop(bench, make_kit, observer):
    kit = make_kit(bench, state="online", backoff_base_ms=200, backoff_cap_ms=800)
    thing = kit.thing
    kit.power_off()
    _pad_shadow(observer, thing, _BAD_SETTING)
    suffix, _ = observer.shadow_request(thing, "update", {"state": _BAD_SETTING})
    assert suffix == "update/accepted"
    kit.power_on()
    kit.wait_for(r"I device: mqtt connected", 20)
    time.sleep(5.0)  # long enough for a reconnect loop to show
    ended = re.findall(r"^\d+ W device: session ended: (.*)$", kit.console(), re.MULTILINE)
    assert len(ended) <= 1, f"{len(ended)} sessions ended in 5 s: {ended[:2]}"


@pytest.mark.checklist("hw.shadow_validated")
def test_client_tokens_at_most_64_bytes(bench, make_kit, observer):
    """Every shadow request of the device (classic and named shadows) carries a client
    token of at most 64 bytes, even with the longest thing name; the service refuses a
    longer one."""
    thing = ("tk-" + uuid.uuid4().hex * 2)[:64]
    kit = make_kit(bench, thing=thing, diag_interval_s=10)
    t0 = time.time()
    kit.power_on()
    kit.wait_for(r"I device: shadow synced: connected=true", 30)
    _desired(observer, thing, {"log_level": "warn"})
    _device_accepted(
        observer, thing, lambda r: r.get("settings", {}).get("log_level") == "warn", 10, t0
    )
    observer.wait(lambda m: m.topic.endswith("/shadow/name/diag/update"), 15, since=t0)
    reqs = _device_requests(observer, thing, t0)
    kinds = {m.topic[len(_shadow_base(thing)) :] for m in reqs}
    assert {"get", "update", "name/diag/update"} <= kinds, kinds
    for m in reqs:
        tok = (m.json() or {}).get("clientToken")
        assert isinstance(tok, str) and 0 < len(tok.encode()) <= 64, (m.topic, tok)

    # The service side of the same rule: a 65-byte token is refused with 400.
    t1 = observer.publish(
        _shadow_base(thing) + "update",
        {"state": {"reported": {"x": 1}}, "clientToken": "t" * 65},
    )
    rej = observer.wait(
        lambda m: (
            m.topic == _shadow_base(thing) + "update/rejected"
            and (m.json() or {}).get("code") == 400
        ),
        5,
        since=t1,
    )
    assert rej is not None and rej.json()["message"] == "Invalid clientToken"


@pytest.mark.checklist("hw.shadow_validated", "lens.config_via_shadow")
def test_refused_value_does_not_start_a_delta_loop(bench, make_kit, observer):
    """The service publishes a delta after every update that leaves desired != reported,
    the device's own reports included. A refused value stays in desired, so a device
    that answered every delta would report, get the same delta back, and report again,
    for ever. It reports a refusal once; the same delta again changes nothing to say."""
    kit = make_kit(bench, state="online")
    thing = kit.thing
    t1 = _refused_log_level(observer, kit)
    time.sleep(3.0)  # long enough for a loop to show (one turn takes a few ms)
    updates = [
        m
        for m in _device_requests(observer, thing, t1)
        if m.topic == _shadow_base(thing) + "update"
    ]
    assert len(updates) == 1, f"{len(updates)} reports in 3 s: {[m.excerpt() for m in updates[:3]]}"
    deltas = [
        m
        for m in list(observer.messages)
        if m.t >= t1 and m.topic == _shadow_base(thing) + "update/delta"
    ]
    assert len(deltas) <= 2, len(deltas)
    # A new value is still answered at once.
    t2 = time.time()
    _desired(observer, thing, {"log_level": "warn"})
    ok = _device_accepted(
        observer, thing, lambda r: r.get("settings", {}).get("log_level") == "warn", 10, t2
    )
    assert ok is not None, kit.console()
