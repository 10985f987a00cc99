"""tk.device.Session: shadow sync on connect and the serve loop, with a fake client."""

from __future__ import annotations

import json

from .test_config import CERTS, VALID

PRE = """
import json, time
from hal import sim
from tk import config, device, log
from tkfakes import out, err, FakeMQTT, ShadowService

class Client(FakeMQTT):
    # FakeMQTT plus the keepalive bookkeeping of tk.mqtt.Client.
    def __init__(self):
        super().__init__()
        self.last_tx = self.ping_at = time.ticks_ms()
        self.ping_outstanding = False
        self.pings = 0
        self.max_polls = 1000
        self.log = []
    def connect(self):
        self.log.append("connect")
    def subscribe_many(self, topics, qos=1):
        self.log.append("subscribe")
        return super().subscribe_many(topics, qos)
    def publish(self, topic, *a):
        self.log.append(topic.decode())
        self.last_tx = time.ticks_ms()
        super().publish(topic, *a)
    def ping(self):
        self.pings += 1
        self.ping_outstanding = True
        self.last_tx = self.ping_at = time.ticks_ms()
    def poll(self, timeout_ms):
        if self.polls >= self.max_polls:
            raise RuntimeError("test over")
        return super().poll(0)

cfg = config.load()
boot = {"reason": "power_on", "uid": "00aa", "fw": "0.1.0"}
s = device.Session(sim, cfg, boot, None, None)
c = Client()
s.client = s.shadow.client = s.app1.client = c
s.app2_shadow.client = s.diag_shadow.client = c
svc = ShadowService(c, "kit-1_A", doc=DOC)
s.shadow.timeout_ms = 300
if SUBSCRIBE:
    s.shadow.subscribe()
"""


def setup(mpy, doc, subscribe: bool = True) -> str:
    """Prelude: a Session on config + certs in the test's cwd, its client a fake."""
    for name, data in CERTS.items():
        mpy.write(name, data)
    mpy.write("config.json", json.dumps(VALID))
    return PRE.replace("DOC", repr(doc)).replace("SUBSCRIBE", repr(subscribe))


def settings_of(level: str) -> dict:
    """reported.settings with this log level and every other setting at its default."""
    return {
        "log_level": level,
        "components": "all",
        "telemetry_interval_s": 10,
        "diag_interval_s": 60,
    }


def reported_updates(requests) -> list:
    return [body for op, body in requests if op == "update"]


def test_open_subscribes_once_then_syncs_shadow_then_goes_online(mpy):
    r = mpy.one(
        prelude=setup(mpy, {"state": {}, "version": 2}, subscribe=False),
        code="""
        s.open()
        out({"log": c.log, "packets": [[[t.decode() for t in ts], q] for ts, q in c.sub_packets]})
    """,
    )
    base = "$aws/things/kit-1_A/shadow/"
    assert r["log"] == [
        "connect",
        "subscribe",
        base + "get",
        base + "update",
        "bench/kit-1_A/status",
    ]
    assert r["packets"] == [
        [
            [
                base + "get/accepted",
                base + "get/rejected",
                base + "update/accepted",
                base + "update/rejected",
                base + "update/delta",
                "bench/kit-1_A/ping",
            ],
            1,
        ]
    ]


def test_sync_shadow_applies_settings_delta_and_reports_online(mpy):
    doc = {
        "state": {
            "desired": {"settings": {"log_level": "warn", "color": "red"}},
            "delta": {"settings": {"log_level": "warn", "color": "red"}},
        },
        "version": 7,
    }
    r = mpy.one(
        prelude=setup(mpy, doc),
        code="""
        s.sync_shadow()
        out({"reqs": svc.requests, "level": log.level_name()})
    """,
    )
    ops = [op for op, _ in r["reqs"]]
    assert ops == ["get", "update"]
    body = r["reqs"][1][1]
    assert body["version"] == 7
    assert body["state"] == {
        "reported": {
            "settings": settings_of("warn"),
            "settings_rejected": {"log_level": None, "color": "unknown setting"},
            "connected": True,
            "fw": "0.1.0",
            "board": "sim",
            "boot": {"reason": "power_on", "uid": "00aa", "fw": "0.1.0"},
        }
    }
    assert r["level"] == "warn"


def test_sync_shadow_without_shadow_creates_it(mpy):
    r = mpy.one(
        prelude=setup(mpy, None),
        code="""
        s.sync_shadow()
        out({"reqs": svc.requests, "doc": svc.doc})
    """,
    )
    [_, (op, body)] = r["reqs"]
    assert op == "update" and "version" not in body
    assert body["state"]["reported"]["settings"] == settings_of("info")
    assert "settings_rejected" not in body["state"]["reported"]
    assert r["doc"]["version"] == 1 and r["doc"]["state"]["reported"]["connected"] is True


def test_serve_reports_settings_deltas(mpy):
    doc = {"state": {"reported": {"connected": True}}, "version": 3}
    r = mpy.one(
        prelude=setup(mpy, doc),
        code="""
        c.max_polls = 6
        delta = s.shadow.base + b"update/delta"
        c.inject(delta, {"state": {"settings": {"log_level": "debug"}}, "version": 4})
        c.inject(delta, {"state": {"led": "on"}, "version": 5})      # nothing to report
        c.inject(delta, {"state": {"settings": {"log_level": "chatty"}}, "version": 6})
        try:
            s.serve()
        except RuntimeError as e:
            out({"end": str(e), "reqs": svc.requests, "level": log.level_name()})
    """,
    )
    assert r["end"] == "test over"
    assert [body["state"] for body in reported_updates(r["reqs"])] == [
        {
            "reported": {
                "settings": settings_of("debug"),
                "settings_rejected": {"log_level": None},
            }
        },
        {
            "reported": {
                "settings": settings_of("debug"),
                "settings_rejected": {"log_level": "must be one of debug, error, info, warn"},
            }
        },
    ]
    assert r["level"] == "debug"


def test_serve_pings_when_idle_for_half_the_keepalive(mpy):
    # VALID has keepalive_s 60: ping after 30 s without sending anything.
    r = mpy.one(
        prelude=setup(mpy, None),
        code="""
        c.max_polls = 3
        c.last_tx = time.ticks_add(time.ticks_ms(), -29000)
        try:
            s.serve()
        except RuntimeError:
            pass
        quiet = c.pings
        c.polls, c.max_polls = 0, 1
        c.ping_outstanding = False
        c.last_tx = time.ticks_add(time.ticks_ms(), -30500)
        try:
            s.serve()
        except RuntimeError:
            pass
        out([quiet, c.pings, c.ping_outstanding])
    """,
    )
    assert r == [0, 1, True]


def test_serve_ends_session_without_pingresp(mpy):
    r = mpy.one(
        prelude=setup(mpy, None),
        code="""
        c.ping_outstanding = True
        c.ping_at = time.ticks_add(time.ticks_ms(), -30500)
        try:
            s.serve()
        except OSError as e:
            out(err(e))
    """,
    )
    assert r == ["OSError", "no PINGRESP within 30000 ms"]
