"""tk.mqtt.Client: exact MQTT 3.1.1 bytes on the wire, with a fake socket and a real one."""

from __future__ import annotations

import re
import struct

import pytest

from .harness import ScriptedTCPServer, parse_json_lines

PRE = """
from tk.mqtt import Client, MQTTException
from tkfakes import out, err, hx, FakeSock, FakePoller
c = Client("kit-1", "127.0.0.1", 8883, 30, {})
s = FakeSock()
c.sock = s
got = []
def handler(topic, msg):
    got.append([hx(topic), hx(msg)])
"""


def run(mpy, body: str):
    """Run ``body`` after PRE (a Client whose socket is the FakeSock ``s``)."""
    return mpy.one(body, prelude=PRE)


def varlen(n: int) -> bytes:
    """MQTT remaining-length encoding (an independent implementation)."""
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def publish_pkt(
    topic: bytes, payload: bytes, qos: int = 0, pid: int = 0, retain: bool = False
) -> bytes:
    body = mqtt_str(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return bytes([0x30 | qos << 1 | int(retain)]) + varlen(len(body)) + body


# -- SUBSCRIBE -------------------------------------------------------------------------
def test_subscribe_short_topic_exact_bytes(mpy):
    r = run(
        mpy,
        """
        s.feed(b"\\x90\\x03\\x00\\x01\\x01")
        granted = c.subscribe(b"a/b", 1)
        out({"tx": hx(s.take()), "granted": granted, "left": len(s.rx), "writes": len(s.writes)})
    """,
    )
    assert bytes.fromhex(r["tx"]) == b"\x82\x08\x00\x01\x00\x03a/b\x01"
    assert r["granted"] == 1 and r["left"] == 0
    assert r["writes"] == 1  # one write: one TLS record


def test_subscribe_200_byte_topic_uses_two_byte_length(mpy):
    topic = b"t/" + b"x" * 198
    r = run(
        mpy,
        """
        s.feed(b"\\x90\\x03\\x00\\x01\\x01")
        granted = c.subscribe(b"t/" + b"x" * 198, 1)
        out({"tx": hx(s.take()), "granted": granted})
    """,
    )
    # remaining length 2 + 2 + 200 + 1 = 205 -> 0xCD 0x01
    assert bytes.fromhex(r["tx"]) == b"\x82\xcd\x01\x00\x01\x00\xc8" + topic + b"\x01"
    assert r["granted"] == 1


@pytest.mark.parametrize("n", [1, 122, 123, 16378, 16379, 20000])
def test_subscribe_length_boundaries(mpy, n):
    r = run(
        mpy,
        f"""
        s.feed(b"\\x90\\x03\\x00\\x01\\x00")
        c.subscribe(b"z" * {n}, 0)
        out(hx(s.take()))
    """,
    )
    topic = b"z" * n
    body = b"\x00\x01" + mqtt_str(topic) + b"\x00"
    assert bytes.fromhex(r) == b"\x82" + varlen(len(body)) + body


def test_pinned_umqtt_subscribe_is_broken_for_long_topics(mpy):
    # Why tk.mqtt overrides subscribe(): umqtt.simple 1.3.4 writes the remaining length of
    # a 200-byte topic as the single byte 0xCD, which a broker reads as "more length
    # bytes follow". If this fails, the pin changed: re-check whether the override is
    # still needed.
    r = run(
        mpy,
        """
        from umqtt.simple import MQTTClient
        s.feed(b"\\x90\\x03\\x00\\x01\\x01")
        MQTTClient.subscribe(c, b"t/" + b"x" * 198, 1)
        out(hx(s.take()[:5]))
    """,
    )
    assert bytes.fromhex(r) == b"\x82\xcd\x00\x01\x00"


def test_subscribe_packet_ids_increase(mpy):
    r = run(
        mpy,
        """
        s.feed(b"\\x90\\x03\\x00\\x01\\x01\\x90\\x03\\x00\\x02\\x00")
        a = c.subscribe(b"a", 1)
        b = c.subscribe(b"b", 0)
        out({"tx": hx(s.take()), "granted": [a, b], "pid": c.pid})
    """,
    )
    assert bytes.fromhex(r["tx"]) == (b"\x82\x06\x00\x01\x00\x01a\x01\x82\x06\x00\x02\x00\x01b\x00")
    assert r["granted"] == [1, 0] and r["pid"] == 2


def test_subscribe_many_one_packet_one_write(mpy):
    topics = [b"$aws/things/kit-1/shadow/get/accepted", b"k/ping", b"x" * 130]
    r = run(
        mpy,
        """
        s.feed(b"\\x90\\x05\\x00\\x01\\x01\\x00\\x01")
        granted = c.subscribe_many([b"$aws/things/kit-1/shadow/get/accepted", b"k/ping",
                                    b"x" * 130], 1)
        out({"writes": [hx(w) for w in s.writes], "granted": granted, "left": len(s.rx)})
    """,
    )
    body = b"\x00\x01" + b"".join(mqtt_str(t) + b"\x01" for t in topics)
    assert [bytes.fromhex(w) for w in r["writes"]] == [b"\x82" + varlen(len(body)) + body]
    assert r["granted"] == [1, 0, 1] and r["left"] == 0


@pytest.mark.parametrize(
    "suback, error",
    [
        (b"\x90\x04\x00\x01\x01\x01", "bad SUBACK"),  # two codes for three filters
        (b"\x90\x05\x00\x02\x01\x01\x01", "bad SUBACK"),  # another packet id
        (b"\x90\x05\x00\x01\x01\x80\x01", 0x80),  # one filter refused
    ],
)
def test_subscribe_many_bad_suback(mpy, suback, error):
    r = run(
        mpy,
        f"""
        s.feed(bytes.fromhex("{suback.hex()}"))
        try:
            out(c.subscribe_many([b"a", b"b", b"c"], 1))
        except MQTTException as e:
            out(err(e))
    """,
    )
    assert r == ["MQTTException", error]


def test_suback_refusal_raises(mpy):
    r = run(
        mpy,
        """
        s.feed(b"\\x90\\x03\\x00\\x01\\x80")
        try:
            c.subscribe(b"$aws/things/other/shadow/get/accepted", 1)
            out("subscribed")
        except MQTTException as e:
            out(err(e))
    """,
    )
    assert r == ["MQTTException", 0x80]


def test_suback_for_another_packet_id_raises(mpy):
    r = run(
        mpy,
        """
        s.feed(b"\\x90\\x03\\x00\\x09\\x01")
        try:
            c.subscribe(b"a/b", 1)
            out("subscribed")
        except MQTTException as e:
            out(err(e))
    """,
    )
    assert r == ["MQTTException", "bad SUBACK"]


def test_publish_before_suback_is_dispatched_and_acked(mpy):
    pub = publish_pkt(b"kit/ping", b'{"id":1}', qos=1, pid=0x0102)
    r = run(
        mpy,
        f"""
        c.on(b"kit/ping", handler)
        s.feed(bytes.fromhex("{pub.hex()}") + b"\\x90\\x03\\x00\\x01\\x01")
        granted = c.subscribe(b"kit/ping", 1)
        out({{"tx": hx(s.take()), "got": got, "granted": granted}})
    """,
    )
    assert bytes.fromhex(r["tx"]) == (
        b"\x82\x0d\x00\x01" + mqtt_str(b"kit/ping") + b"\x01" + b"\x40\x02\x01\x02"
    )
    assert r["got"] == [[b"kit/ping".hex(), b'{"id":1}'.hex()]]
    assert r["granted"] == 1


# -- incoming PUBLISH --------------------------------------------------------------------
def test_incoming_qos1_publish_dispatched_and_acked(mpy):
    pub = publish_pkt(b"thingkit/kit-1/ping", b'{"id": "abc"}', qos=1, pid=0x1234)
    r = run(
        mpy,
        f"""
        c.on(b"thingkit/kit-1/ping", handler)
        c.on(b"thingkit/kit-1/other", lambda t, m: got.append("wrong handler"))
        s.feed(bytes.fromhex("{pub.hex()}"))
        res = c.wait_msg()
        out({{"ret": res, "tx": hx(s.take()), "got": got, "left": len(s.rx)}})
    """,
    )
    assert r["ret"] is None
    assert bytes.fromhex(r["tx"]) == b"\x40\x02\x12\x34"
    assert r["got"] == [[b"thingkit/kit-1/ping".hex(), b'{"id": "abc"}'.hex()]]
    assert r["left"] == 0


def test_incoming_qos0_publish_not_acked(mpy):
    pub = publish_pkt(b"a", b"hello")
    r = run(
        mpy,
        f"""
        c.on(b"a", handler)
        s.feed(bytes.fromhex("{pub.hex()}"))
        c.wait_msg()
        out({{"tx": hx(s.take()), "got": got}})
    """,
    )
    assert r == {"tx": "", "got": [[b"a".hex(), b"hello".hex()]]}


def test_incoming_large_retained_publish(mpy):
    payload = bytes(range(256)) * 2  # 512 bytes: two-byte remaining length
    pub = publish_pkt(b"big/topic", payload, qos=1, pid=0xFFFF, retain=True)
    assert pub[:3] == b"\x33\x8d\x04"  # 525 = 13 + 4 * 128
    r = run(
        mpy,
        f"""
        c.on(b"big/topic", handler)
        s.feed(bytes.fromhex("{pub.hex()}"))
        c.wait_msg()
        out({{"tx": hx(s.take()), "got": got, "left": len(s.rx)}})
    """,
    )
    assert bytes.fromhex(r["tx"]) == b"\x40\x02\xff\xff"
    assert r["got"] == [[b"big/topic".hex(), payload.hex()]]
    assert r["left"] == 0


def test_publish_on_unregistered_topic_is_acked_not_dispatched(mpy):
    pub = publish_pkt(b"nobody/listens", b"x", qos=1, pid=5)
    r = run(
        mpy,
        f"""
        c.on(b"nobody/listen", handler)   # a prefix is not a match
        s.feed(bytes.fromhex("{pub.hex()}"))
        c.wait_msg()
        out({{"tx": hx(s.take()), "got": got}})
    """,
    )
    assert r == {"tx": "40020005", "got": []}


def test_poll_processes_one_packet_when_data_is_ready(mpy):
    p1 = publish_pkt(b"a", b"1", qos=1, pid=1)
    p2 = publish_pkt(b"a", b"2", qos=0)
    r = run(
        mpy,
        f"""
        c.on(b"a", handler)
        c._poller = FakePoller(s)
        first = c.poll(50)
        s.feed(bytes.fromhex("{(p1 + p2).hex()}"))
        second = c.poll(50)
        third = c.poll(50)
        fourth = c.poll(50)
        out({{"polls": [first, second, third, fourth], "got": got, "tx": hx(s.take()),
              "timeouts": c._poller.calls}})
    """,
    )
    assert r["polls"] == [False, True, True, False]
    assert r["got"] == [["61", "31"], ["61", "32"]]
    assert bytes.fromhex(r["tx"]) == b"\x40\x02\x00\x01"
    assert r["timeouts"] == [50, 50, 50, 50]


def test_handler_exception_does_not_end_the_session(mpy):
    p1 = publish_pkt(b"a", b"boom", qos=1, pid=3)
    p2 = publish_pkt(b"a", b"fine", qos=1, pid=4)
    out = mpy(
        f"""
        def bad(topic, msg):
            if msg == b"boom":
                raise ValueError("bad payload")
            handler(topic, msg)
        c.on(b"a", bad)
        s.feed(bytes.fromhex("{(p1 + p2).hex()}"))
        r1 = c.wait_msg()
        r2 = c.wait_msg()
        out({{"ret": [r1, r2], "tx": hx(s.take()), "got": got}})
        """,
        prelude=PRE,
    )
    [r] = parse_json_lines(out)
    assert r == {
        "ret": [None, None],
        "tx": "4002000340020004",
        "got": [[b"a".hex(), b"fine".hex()]],
    }
    assert re.search(
        r"^\d+ W mqtt: handler for b'a' failed: ValueError\('bad payload',\)$", out, re.MULTILINE
    )


# -- PINGREQ / PINGRESP, EOF ---------------------------------------------------------------
def test_pingresp_clears_ping_outstanding(mpy):
    r = run(
        mpy,
        """
        import time
        c.last_rx = time.ticks_add(time.ticks_ms(), -5000)
        c.ping()
        after_ping = [c.ping_outstanding, hx(s.take())]
        s.feed(b"\\xd0\\x00")
        ret = c.wait_msg()
        out({"after_ping": after_ping, "ret": ret, "outstanding": c.ping_outstanding,
             "rx_age": time.ticks_diff(time.ticks_ms(), c.last_rx), "left": len(s.rx)})
    """,
    )
    assert r["after_ping"] == [True, "c000"]
    assert r["ret"] is None and r["outstanding"] is False
    assert 0 <= r["rx_age"] < 1000 and r["left"] == 0


def test_connection_closed_by_broker_raises_oserror(mpy):
    r = run(
        mpy,
        """
        c.sock = FakeSock(eof=True)
        try:
            c.wait_msg()
            out("no error")
        except OSError as e:
            out(err(e))
    """,
    )
    assert r == ["OSError", -1]


# -- PUBLISH, DISCONNECT -------------------------------------------------------------------
def test_publish_qos1_exact_bytes_and_waits_for_its_puback(mpy):
    r = run(
        mpy,
        """
        s.feed(b"\\x40\\x02\\x00\\x09" + b"\\x40\\x02\\x00\\x01")  # someone else's, then ours
        c.publish(b"t/x", b"hi", True, 1)
        out({"tx": hx(s.take()), "left": len(s.rx), "pid": c.pid})
    """,
    )
    assert bytes.fromhex(r["tx"]) == b"\x33\x09\x00\x03t/x\x00\x01hi"
    assert r["left"] == 0 and r["pid"] == 1


def test_nested_publish_from_a_handler_loses_no_puback(mpy):
    """A QoS 1 publish made by a handler while another publish waits for its PUBACK:
    the outer PUBACK arrives inside the inner wait and must not be lost (umqtt.simple
    1.3.4 drops it and the outer publish then waits for ever)."""
    ping = publish_pkt(b"kit/ping", b"p", qos=1, pid=0x0777)
    r = run(
        mpy,
        """
        def on_ping(topic, msg):
            c.publish(b"kit/pong", b"q", False, 1)   # pid 2, nested
        c.on(b"kit/ping", on_ping)
        # While publish pid 1 waits: a ping, then PUBACK 1 (consumed by the nested
        # wait), then PUBACK 2.
        s.feed(PING + b"\\x40\\x02\\x00\\x01" + b"\\x40\\x02\\x00\\x02")
        c.publish(b"kit/diag", b"d", False, 1)
        out({"left": len(s.rx), "acked": sorted(c._acked), "pid": c.pid})
    """.replace("PING", repr(ping)),
    )
    assert r == {"left": 0, "acked": [], "pid": 2}


def test_publish_qos0_exact_bytes(mpy):
    r = run(
        mpy,
        """
        c.publish(b"t/x", b"x" * 200)
        out(hx(s.take()))
    """,
    )
    assert bytes.fromhex(r) == publish_pkt(b"t/x", b"x" * 200)
    assert bytes.fromhex(r)[:3] == b"\x30\xcd\x01"


def test_disconnect_and_close(mpy):
    r = run(
        mpy,
        """
        c.disconnect()
        first = {"tx": hx(s.tx), "closed": s.closed, "sock": c.sock is None}
        s2 = FakeSock()
        c.sock = s2
        c.close()
        out([first, {"tx": hx(s2.tx), "closed": s2.closed, "sock": c.sock is None}])
    """,
    )
    assert r == [
        {"tx": "e000", "closed": True, "sock": True},
        {"tx": "", "closed": True, "sock": True},
    ]


# -- packet identifier wrap-around ---------------------------------------------------------
def test_subscribe_packet_id_wraps_to_1(mpy):
    r = run(
        mpy,
        """
        c.pid = 65535
        s.feed(b"\\x90\\x03\\x00\\x01\\x01")
        try:
            c.subscribe(b"a", 1)
            res = "ok"
        except Exception as e:
            res = err(e)
        out({"tx": hx(s.take()), "res": res})
    """,
    )
    assert bytes.fromhex(r["tx"])[2:4] == b"\x00\x01"
    assert r["res"] == "ok"


def test_publish_packet_id_wraps_to_1(mpy):
    r = run(
        mpy,
        """
        c.pid = 65535
        s.feed(b"\\x40\\x02\\x00\\x01")
        try:
            c.publish(b"t", b"m", False, 1)
            res = "ok"
        except Exception as e:
            res = err(e)
        out({"tx": hx(s.take()), "res": res})
    """,
    )
    assert bytes.fromhex(r["tx"]) == b"\x32\x06\x00\x01t\x00\x01m"
    assert r["res"] == "ok"


# -- over a real TCP socket (TLS switched off; the bytes inside TLS are the same) ------------
CONNECT_SNIPPET = """
from tk.mqtt import Client, MQTTException
from tkfakes import out, err, hx
c = Client("kit-1", "127.0.0.1", {port}, 30, {{}})
c.ssl = False
c.set_last_will(b"thingkit/kit-1/status", '{{"state":"offline"}}', True, 1)
got = []
c.on(b"thingkit/kit-1/ping", lambda t, m: got.append(hx(m)))
try:
    present = c.connect()
except MQTTException as e:
    out({{"connect": err(e)}})
    raise SystemExit
polled = c.poll(3000)
c.ping()
outstanding = c.ping_outstanding
polled2 = c.poll(3000)
c.disconnect()
out({{"present": present, "polled": [polled, polled2], "got": got,
      "outstanding": [outstanding, c.ping_outstanding]}})
"""


def expected_connect() -> bytes:
    will_topic, will_msg = b"thingkit/kit-1/status", b'{"state":"offline"}'
    var = b"\x00\x04MQTT\x04" + bytes([0x02 | 0x04 | 0x08 | 0x20]) + b"\x00\x1e"
    payload = mqtt_str(b"kit-1") + mqtt_str(will_topic) + mqtt_str(will_msg)
    return b"\x10" + varlen(len(var + payload)) + var + payload


def test_connect_poll_ping_disconnect_over_tcp(mpy):
    pub = publish_pkt(b"thingkit/kit-1/ping", b'{"id":7}', qos=1, pid=7)
    packets: list[bytes] = []

    def broker(conn, srv):
        packets.append(srv.read_packet())  # CONNECT
        conn.sendall(b"\x20\x02\x00\x00")  # CONNACK accepted
        conn.sendall(pub)
        packets.append(srv.read_exact(4))  # PUBACK
        packets.append(srv.read_exact(2))  # PINGREQ
        conn.sendall(b"\xd0\x00")  # PINGRESP
        packets.append(srv.read_exact(2))  # DISCONNECT

    with ScriptedTCPServer(broker) as srv:
        r = mpy.one(CONNECT_SNIPPET.format(port=srv.port))
    assert srv.error is None, srv.error
    assert packets == [expected_connect(), b"\x40\x02\x00\x07", b"\xc0\x00", b"\xe0\x00"]
    assert r == {
        "present": 0,
        "polled": [True, True],
        "got": [b'{"id":7}'.hex()],
        "outstanding": [True, False],
    }


def test_connack_refusal_raises(mpy):
    def broker(conn, srv):
        srv.read_packet()
        conn.sendall(b"\x20\x02\x00\x05")  # not authorised

    with ScriptedTCPServer(broker) as srv:
        r = mpy.one(CONNECT_SNIPPET.format(port=srv.port))
    assert srv.error is None, srv.error
    assert r == {"connect": ["MQTTException", 5]}


def test_oversize_payload_drained_handler_gets_none_stream_in_step(mpy):
    big = publish_pkt(b"kit/ping", b"x" * 700, qos=1, pid=0x0A0B)
    small = publish_pkt(b"kit/ping", b"ok", qos=0)
    r = run(
        mpy,
        """
        c.max_payload = 512
        seen = []
        c.on(b"kit/ping", lambda t, m: seen.append(None if m is None else m.decode()))
        s.feed(BIG + SMALL)
        c.wait_msg()
        c.wait_msg()
        out({"seen": seen, "tx": hx(s.take()), "left": len(s.rx)})
    """.replace("BIG", repr(big)).replace("SMALL", repr(small)),
    )
    assert r["seen"] == [None, "ok"]
    assert bytes.fromhex(r["tx"]) == b"\x40\x02\x0a\x0b"  # the big one is still acknowledged
    assert r["left"] == 0


# -- QoS 1 without PUBACK: resent with DUP, then the session ends --------------------------
DUP_PRE = """
import time
class FakePoller:
    # Like a real poll: waits out the time-out when nothing is there to read.
    def __init__(self, sock):
        self.sock = sock
    def poll(self, ms):
        if not self.sock.rx:
            time.sleep_ms(ms)
        return [(self.sock, 1)] if self.sock.rx else []
c.puback_ms = 60
class AckAfter(FakeSock):
    # Answers PUBACK(ack_pid) once the n-th write was made.
    def __init__(self, n, ack):
        super().__init__()
        self.n, self.ack = n, ack
    def write(self, buf, n=None):
        r = FakeSock.write(self, buf, n)
        if len(self.writes) == self.n:
            self.feed(self.ack)
        return r
"""


def test_publish_without_puback_is_resent_with_dup_flag(mpy):
    r = mpy.one(
        prelude=PRE + DUP_PRE,
        code="""
        s = AckAfter(4, b"\\x40\\x02\\x00\\x01")   # PUBACK only after the resend
        c.sock = s
        c._poller = FakePoller(s)
        t0 = time.ticks_ms()
        c.publish(b"t/x", b"hi", False, 1)
        out({"writes": [hx(w) for w in s.writes], "ms": time.ticks_diff(time.ticks_ms(), t0),
             "left": len(s.rx), "acked": sorted(c._acked)})
    """,
    )
    first = publish_pkt(b"t/x", b"hi", qos=1, pid=1)[:-2]  # header, topic, packet id
    assert [bytes.fromhex(w) for w in r["writes"]] == [
        first,
        b"hi",
        bytes([first[0] | 0x08]) + first[1:],  # DUP set, same packet id and bytes
        b"hi",
    ]
    assert r["ms"] >= 60 and r["left"] == 0 and r["acked"] == []


def test_publish_gives_up_after_bounded_resends(mpy):
    r = mpy.one(
        prelude=PRE + DUP_PRE,
        code="""
        # A PUBACK for another packet id does not count.
        s = AckAfter(2, b"\\x40\\x02\\x00\\x07")
        c.sock = s
        c._poller = FakePoller(s)
        c.pid = 4
        t0 = time.ticks_ms()
        try:
            c.publish(b"t/x", b"hi", True, 1)
            res = "returned"
        except OSError as e:
            res = err(e)
        out({"res": res, "writes": [hx(w) for w in s.writes],
             "ms": time.ticks_diff(time.ticks_ms(), t0), "acked": sorted(c._acked)})
    """,
    )
    assert r["res"] == ["OSError", "no PUBACK for packet 5 after 2 resends"]
    hdr = publish_pkt(b"t/x", b"hi", qos=1, pid=5, retain=True)[:-2]
    dup = bytes([hdr[0] | 0x08]) + hdr[1:]
    assert [bytes.fromhex(w) for w in r["writes"]] == [hdr, b"hi", dup, b"hi", dup, b"hi"]
    assert r["ms"] >= 3 * 60
    assert r["acked"] == [7]  # recorded for whoever waits for it


def test_dup_resend_over_tcp(mpy):
    """A broker that swallows the first PUBLISH: the client sends it again with DUP
    and the same packet id, and returns once that one is acknowledged."""
    got: list[bytes] = []

    def broker(conn, srv):
        srv.read_packet()  # CONNECT
        conn.sendall(b"\x20\x02\x00\x00")
        got.append(srv.read_packet())  # PUBLISH, not acknowledged
        got.append(srv.read_packet())  # PUBLISH again, DUP
        conn.sendall(b"\x40\x02\x00\x01")
        got.append(srv.read_packet())  # DISCONNECT

    code = """
    from tk.mqtt import Client
    from tkfakes import out
    import time
    c = Client("kit-1", "127.0.0.1", {port}, 30, {{}}, puback_ms=300)
    c.ssl = False
    c.connect()
    t0 = time.ticks_ms()
    c.publish(b"thingkit/kit-1/telemetry", b'{{"seq":1}}', False, 1)
    ms = time.ticks_diff(time.ticks_ms(), t0)
    c.disconnect()
    out(ms)
    """
    with ScriptedTCPServer(broker) as srv:
        ms = mpy.one(code.format(port=srv.port))
    assert srv.error is None, srv.error
    pkt = publish_pkt(b"thingkit/kit-1/telemetry", b'{"seq":1}', qos=1, pid=1)
    assert got == [pkt, bytes([pkt[0] | 0x08]) + pkt[1:], b"\xe0\x00"]
    assert 300 <= ms < 5000
