"""tk.app1 and tk.topics: the online message, ping/pong and the Last Will."""

from __future__ import annotations

import json
import time

PRE = """
import json
from tk.app1 import App1, last_will, status_message
from tk.topics import Topics
from tkfakes import out, FakeMQTT
c = FakeMQTT()
t = Topics("bench", "kit-1")
app = App1(c, "kit-1", t, "1.2.3")
def pubs():
    return [[tp.decode(), json.loads(m), rt, q] for tp, m, rt, q in c.pubs]
"""


def test_topics(mpy):
    r = mpy.one("""
        from tk.topics import Topics
        from tkfakes import out
        t = Topics("thingkit", "kit-1")
        out([type(t.status).__name__, t.status.decode(), t.ping.decode(), t.pong.decode()])
    """)
    assert r == ["bytes", "thingkit/kit-1/status", "thingkit/kit-1/ping", "thingkit/kit-1/pong"]


def test_subscriptions_register_ping_handler_without_subscribing(mpy):
    r = mpy.one(
        prelude=PRE,
        code="""
        topics = app.subscriptions()
        out({"topics": [tp.decode() for tp in topics], "subs": c.subs,
             "handlers": [tp.decode() for tp in c.handlers], "pubs": pubs()})
    """,
    )
    assert r == {
        "topics": ["bench/kit-1/ping"],
        "subs": [],
        "handlers": ["bench/kit-1/ping"],
        "pubs": [],
    }


def test_start_publishes_retained_online_status(mpy):
    before = time.time() * 1000
    r = mpy.one(
        prelude=PRE,
        code="""
        app.start({"reason": "power_on", "uid": "abc"})
        out({"subs": c.subs, "pubs": pubs()})
    """,
    )
    after = time.time() * 1000
    assert r["subs"] == []
    [[topic, body, retain, qos]] = r["pubs"]
    assert (topic, retain, qos) == ("bench/kit-1/status", True, 1)
    ts = body.pop("ts")
    assert before - 1000 <= ts <= after + 1000
    assert body == {
        "thing": "kit-1",
        "state": "online",
        "fw": "1.2.3",
        "reason": "power_on",
        "uid": "abc",
    }


def test_ping_answered_on_pong(mpy):
    r = mpy.one(
        prelude=PRE,
        code="""
        app.subscriptions()
        for payload in (b'{"id": "abc-1"}', b'{"id": 42, "x": 1}', b"not json", b"[1]", b'{}',
                        b"\xff\xfe"):
            c.inject(t.ping, payload)
            c.poll(0)
            app.service()
        out({"pubs": pubs(), "pings": app.pings})
    """,
    )
    assert r["pings"] == 6
    ids = []
    for i, (topic, body, retain, qos) in enumerate(r["pubs"], 1):
        assert (topic, retain, qos) == ("bench/kit-1/pong", False, 1)
        assert sorted(body) == ["count", "id", "rx_ts", "thing", "ts"]
        assert body["thing"] == "kit-1" and body["count"] == i
        assert 0 <= body["ts"] - body["rx_ts"] < 1000
        ids.append(body["id"])
    assert ids == ["abc-1", 42, None, None, None, None]


def test_pings_are_answered_from_the_main_loop_not_the_callback(mpy):
    r = mpy.one(
        prelude=PRE,
        code="""
        app.subscriptions()
        for i in range(6):
            c.inject(t.ping, b'{"id": %d}' % i)
            c.poll(0)
        before = len(pubs())
        app.service()
        out({"before": before, "ids": [b["id"] for _, b, _, _ in pubs()]})
    """,
    )
    # Nothing is published inside the MQTT callback; at most 4 pings wait for an answer.
    assert r == {"before": 0, "ids": [0, 1, 2, 3]}


def test_stop_publishes_retained_offline_status(mpy):
    r = mpy.one(
        prelude=PRE,
        code="""
        app.stop()
        out(pubs())
    """,
    )
    [[topic, body, retain, qos]] = r
    assert (topic, retain, qos) == ("bench/kit-1/status", True, 1)
    del body["ts"]
    assert body == {"thing": "kit-1", "state": "offline", "fw": "1.2.3", "reason": "shutdown"}


def test_last_will(mpy):
    r = mpy.one(
        prelude=PRE,
        code="""
        lw = last_will("kit-1", "1.2.3")
        out([type(lw).__name__, lw])
    """,
    )
    assert r[0] == "str"
    assert json.loads(r[1]) == {
        "thing": "kit-1",
        "state": "offline",
        "fw": "1.2.3",
        "reason": "connection_lost",
    }
