"""tk.device.Session: shadow sync on connect and the serve loop, with a fake client."""

from __future__ import annotations

import json
import re
import time

from .test_config import CERTS, VALID

PRE = """
import json, time
import sim_board as sim
from tk import config, device, log
from tkfakes import out, err, FakeMQTT, ShadowService

class Client(FakeMQTT):
    # FakeMQTT plus the keepalive bookkeeping of tk.mqtt.Client.
    def __init__(self):
        super().__init__()
        self.last_tx = self.last_rx = self.ping_at = time.ticks_ms()
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
                # The update agent's (tk.ota): subscribed even with OTA off (no key).
                "$aws/things/kit-1_A/jobs/notify-next",
                "$aws/things/kit-1_A/jobs/start-next/+",
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
            # the MicroPython image's version, from its app descriptor: this test's kit
            # has no app partitions written, so the device says it does not know
            "runtime": "unknown",
            "board": "sim",
            # firmware partition / app slot (tk.ota.app_slot): a fresh kit
            "slot": "ota_0/factory",
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


def test_serve_pings_a_silent_broker_even_while_sending(mpy):
    # A busy publisher on a half-open link: it sent a moment ago, but nothing came from
    # the broker for over half the keepalive. It asks (PINGREQ) rather than wait for a
    # QoS 1 time-out.
    r = mpy.one(
        prelude=setup(mpy, None),
        code="""
        c.max_polls = 1
        c.last_tx = time.ticks_ms()
        c.last_rx = time.ticks_add(time.ticks_ms(), -29000)
        try:
            s.serve()
        except RuntimeError:
            pass
        heard_recently = c.pings
        c.polls, c.max_polls = 0, 1
        c.last_tx = time.ticks_ms()
        c.last_rx = time.ticks_add(time.ticks_ms(), -30500)
        try:
            s.serve()
        except RuntimeError:
            pass
        out([heard_recently, c.pings, c.ping_outstanding])
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


# -- store and forward: the serve loop sends the outbox in bounded batches ---------------
def test_serve_sends_backlog_in_order_in_bounded_batches(mpy):
    r = mpy.one(
        prelude=setup(mpy, None),
        code="""
        from tk.app2 import App2
        from tk.outbox import Outbox
        topic = b"bench/kit-1_A/telemetry"
        a2 = App2(c, "kit-1_A", topic, [], sim, "b00t")
        a2.outbox = Outbox("outbox", 64)
        for i in range(1, 21):                 # taken while offline (an earlier boot)
            a2.outbox.append(b'{"boot":"old","seq":%d}' % i)
        s.app2 = a2
        turns = []
        real_publish = c.publish
        def publish(t, m, *a):
            if t == topic:
                turns.append([c.polls, json.loads(m)["seq"]])
            real_publish(t, m, *a)
        c.publish = publish
        c.max_polls = 6
        try:
            s.serve()
        except RuntimeError:
            pass
        live = [json.loads(m) for t, m, _, q in c.pubs if t == topic and q == 1][-1]
        out({"turns": turns, "left": a2.outbox.size, "live": live})
    """,
    )
    seqs = [q for _, q in r["turns"]]
    # The live reading (seq 1 of this boot, taken on the first turn) queues behind the
    # backlog: the stream stays in order.
    assert seqs == list(range(1, 21)) + [1]
    per_turn: dict[int, int] = {}
    for turn, _ in r["turns"]:
        per_turn[turn] = per_turn.get(turn, 0) + 1
    assert max(per_turn.values()) <= 8 and len(per_turn) >= 3
    assert r["left"] == 0
    assert r["live"]["boot"] == "b00t" and r["live"]["outbox"] == {"dropped": 0, "downsampled": 0}
    assert set(r["live"]) >= {"thing", "boot", "seq", "ts", "readings"}


def test_no_pingresp_over_tcp_ends_the_session(mpy):
    """A broker that stops answering: PINGREQ after half the keepalive without sending,
    then the session ends when no PINGRESP came within another half."""
    from .harness import ScriptedTCPServer

    marks: dict[str, object] = {}

    def broker(conn, srv):
        srv.read_packet()  # CONNECT
        conn.sendall(b"\x20\x02\x00\x00")
        t0 = time.monotonic()
        marks["ping"] = srv.read_packet()
        marks["ping_after"] = time.monotonic() - t0
        marks["eof"] = conn.recv(16)  # silent until the client gives up and closes
        marks["closed_after"] = time.monotonic() - t0

    code = """
        from tk.mqtt import Client as RealClient
        rc = RealClient("kit-1_A", "127.0.0.1", PORT, 2, {})
        rc.ssl = False
        rc.connect()
        s.client = s.shadow.client = s.app1.client = rc
        s.app2_shadow.client = s.diag_shadow.client = rc
        s.cfg.keepalive_s = 2
        t0 = time.ticks_ms()
        try:
            s.serve()
        except OSError as e:
            res = err(e)
        ms = time.ticks_diff(time.ticks_ms(), t0)
        s.close()
        out({"res": res, "ms": ms})
    """
    with ScriptedTCPServer(broker) as srv:
        r = mpy.one(prelude=setup(mpy, None), code=code.replace("PORT", str(srv.port)))
    assert srv.error is None, srv.error
    assert r["res"] == ["OSError", "no PINGRESP within 1000 ms"]
    assert marks["ping"] == b"\xc0\x00"
    assert 0.9 <= marks["ping_after"] <= 2.5
    assert marks["eof"] == b"" and marks["closed_after"] >= 1.9
    assert 1900 <= r["ms"] <= 5000


# -- device.run: backoff after kicks, readings while offline -------------------------------
RUN = """
import errno, time
import sim_board as sim
from tk import config, device
from tk.app2 import App2
from tk.diag import Diag
from tk.outbox import Outbox
from tkfakes import out

cfg = config.load()
cfg.backoff_base_ms, cfg.backoff_cap_ms, cfg.backoff_reset_s = 100, 800, 1
SCRIPT = SCRIPT_
sessions = []

class FakeSession:
    # Connects at once, stays up for up_ms, then ends with the scripted error.
    def __init__(self, hal, cfg, boot, app2, diag):
        if not SCRIPT:
            raise KeyboardInterrupt   # not an Exception: ends run()
        self.up_ms, self.exc = SCRIPT.pop(0)
    def open(self):
        sessions.append(time.ticks_ms())
    def serve(self):
        time.sleep_ms(self.up_ms)
        raise self.exc
    def close(self):
        pass

a2 = App2(None, cfg.thing_name, b"t", [], sim, "b00t")
a2.set_interval(0.1)
a2.outbox = Outbox("outbox", 512)
diag = Diag(None, cfg.thing_name, b"d", sim)
device.Session = FakeSession
from tk import boot
boot.parts = lambda hal, cfg, boot_id, lean=False: (a2, diag)
boot.sync_time = lambda hal, cfg: "ntp"
try:
    device.run(sim, cfg)
except KeyboardInterrupt:
    pass
got = []
while a2.outbox.peek() is not None:
    got.append(json.loads(a2.outbox.peek())["seq"])
    a2.outbox.pop()
out({"seqs": got, "seq": a2.seq})
"""


def _run(mpy, script: str):
    for name, data in CERTS.items():
        mpy.write(name, data)
    mpy.write("config.json", json.dumps(VALID))
    out = mpy.run(
        RUN.replace("SCRIPT_", script).replace("import errno", "import errno, json"), timeout=60
    )
    from .harness import parse_json_lines

    [res] = parse_json_lines(out)
    windows = [
        int(w) for w in re.findall(r"reconnect in \d+ ms \(attempt \d+, window (\d+) ms\)", out)
    ]
    delays = [int(d) for d in re.findall(r"reconnect in (\d+) ms", out)]
    return out, res, windows, delays


def test_kicks_back_off_exponentially_other_failures_reset(mpy):
    # Four sessions closed by the broker after 1.1 s (stable by reset_after_s = 1 s, but
    # shorter than twice the 800 ms cap): a kick fight. The backoff grows to the cap.
    # Then a session closed by the broker after 1.7 s (> 2 x cap) and one that ended by
    # our own time-out after 1.1 s: both reset it.
    out, _, windows, delays = _run(
        mpy,
        "[(1100, OSError(-1)), (1100, OSError(-1)), (1100, OSError(errno.ECONNRESET)),"
        " (1100, OSError(-1)), (1700, OSError(-1)), (1100, OSError('no PINGRESP'))]",
    )
    assert windows == [100, 200, 400, 800, 100, 100], out
    assert all(0 <= d <= w for d, w in zip(delays, windows))
    assert out.count("(closed by the broker)") == 5
    assert out.count("backoff reset") == 2


def test_readings_go_on_while_offline(mpy):
    # Sessions that fail at once (a broker that is down); App #2 reads every 100 ms
    # during the waits, into the outbox, in order.
    out, res, windows, delays = _run(mpy, "[(0, OSError(111))] * 6")
    waited = sum(delays)
    assert windows == [100, 200, 400, 800, 800, 800]
    assert res["seqs"] == list(range(1, res["seq"] + 1))
    assert res["seq"] >= 0.7 * waited / 100, (res, delays)  # one per 100 ms, give or take
    assert out.count("offline: seq ") == res["seq"]


def test_jitter_off_only_on_the_sim(mpy):
    for name, data in CERTS.items():
        mpy.write(name, data)
    mpy.write("config.json", json.dumps(dict(VALID, backoff=dict(VALID["backoff"], jitter=False))))
    r = mpy.one("""
        from tk import boot, config
        from tkfakes import out
        cfg = config.load()
        class Board:
            NAME = "esp32"
        import sim_board as sim
        out([cfg.backoff_jitter, boot.jitter(sim, cfg), boot.jitter(Board, cfg)])
    """)
    assert r == [False, False, True]


# -- device.run: out of memory, the device goes on without App #2 --------------------------
LEAN = """
import time
import sim_board as sim
from tk import config, device
from tk.app2 import App2
from tk.diag import Diag
from tkfakes import out

cfg = config.load()
cfg.backoff_base_ms, cfg.backoff_cap_ms = 10, 20
SCRIPT = SCRIPT_
seen = []

class FakeSession:
    def __init__(self, hal, cfg, boot, app2, diag):
        if not SCRIPT:
            raise KeyboardInterrupt   # not an Exception: ends run()
        self.exc = SCRIPT.pop(0)
        seen.append({"app2": app2 is not None, "degraded": boot.get("degraded")})
    def open(self):
        pass
    def serve(self):
        raise self.exc
    def close(self):
        pass

a2 = App2(None, cfg.thing_name, b"t", [], sim, "b00t")
diag = Diag(None, cfg.thing_name, b"d", sim)
leans = []
def parts(hal, cfg, boot_id, lean=False):
    leans.append(lean)
    if not lean and BOOT_OOM_:
        raise MemoryError("test")
    return (None if lean else a2), diag
device.Session = FakeSession
_forget = device.forget  # keep the patched tk.boot for the second start
device.forget = lambda names: _forget(tuple(n for n in names if n != "boot"))
from tk import boot
boot.parts = parts
boot.sync_time = lambda hal, cfg: "ntp"
try:
    device.run(sim, cfg)
except KeyboardInterrupt:
    pass
out({"leans": leans, "sessions": seen})
"""


def _lean(mpy, boot_oom: bool, script: str) -> tuple[str, dict]:
    for name, data in CERTS.items():
        mpy.write(name, data)
    mpy.write("config.json", json.dumps(VALID))
    out = mpy.run(LEAN.replace("SCRIPT_", script).replace("BOOT_OOM_", str(boot_oom)), timeout=60)
    from .harness import parse_json_lines

    [res] = parse_json_lines(out)
    return out, res


def test_out_of_memory_at_boot_starts_again_without_app2(mpy):
    out, res = _lean(mpy, True, "[OSError(-1)]")
    assert res["leans"] == [False, True], out
    assert res["sessions"] == [{"app2": False, "degraded": "App #2 off: out of memory at boot"}]
    assert "E device: out of memory at boot" in out


def test_two_sessions_out_of_memory_drop_app2(mpy):
    out, res = _lean(
        mpy, False, "[MemoryError(), OSError(-1), MemoryError(), MemoryError(), OSError(-1)]"
    )
    assert res["leans"] == [False], out
    # One MemoryError then another failure: the count starts again; two in a row: off.
    assert [s["app2"] for s in res["sessions"]] == [True, True, True, True, False], out
    assert res["sessions"][-1]["degraded"] == "App #2 off: out of memory"
    assert out.count("App #2 off until the next boot") == 1
