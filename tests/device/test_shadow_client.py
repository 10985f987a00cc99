"""tk.shadow.Shadow over a fake MQTT client with a small AWS-like shadow behind it."""

from __future__ import annotations

import json
import re
import textwrap

import pytest

BASE = "$aws/things/kit-1/shadow/"

PRE = """
import time, json
from tk.shadow import Shadow, ShadowRejected, ShadowTimeout
from tkfakes import out, err, FakeMQTT, ShadowService
c = FakeMQTT()
svc = ShadowService(c, "kit-1", doc={doc})
sh = Shadow(c, "kit-1", timeout_ms=300)
sh.subscribe()
def call(f, *a, **kw):
    try:
        return {{"ok": f(*a, **kw)}}
    except Exception as e:
        return {{"error": err(e)}}
"""

DOC = '{"state": {"reported": {"fw": "0.0.9"}}, "version": 5}'


def run(mpy, body: str, doc: str = DOC):
    return mpy.one(PRE.format(doc=doc) + textwrap.dedent(body))


def tokens(requests) -> list[str]:
    return [body["clientToken"] for _, body in requests]


SUFFIXES = ["get/accepted", "get/rejected", "update/accepted", "update/rejected", "update/delta"]


def test_subscribes_to_reply_and_delta_topics_in_one_packet(mpy):
    r = run(
        mpy,
        """
        first = c.sub_packets
        c.sub_packets = []
        sh2 = Shadow(c, "kit-1", name="cfg")
        sh2.subscribe()
        out({"first": [[[t.decode() for t in ts], q] for ts, q in first],
             "named": [[[t.decode() for t in ts], q] for ts, q in c.sub_packets],
             "handlers": sorted(t.decode() for t in c.handlers)})
    """,
    )
    named = "$aws/things/kit-1/shadow/name/cfg/"
    assert r["first"] == [[[BASE + s for s in SUFFIXES], 1]]
    assert r["named"] == [[[named + s for s in SUFFIXES], 1]]
    assert r["handlers"] == sorted([BASE + s for s in SUFFIXES] + [named + s for s in SUFFIXES])


def test_topics_registers_handlers_without_subscribing(mpy):
    r = mpy.one("""
        from tk.shadow import Shadow
        from tkfakes import out, FakeMQTT
        c = FakeMQTT()
        topics = Shadow(c, "kit-9").topics()
        out({"topics": [t.decode() for t in topics], "subs": c.subs,
             "handlers": sorted(t.decode() for t in c.handlers)})
    """)
    base = "$aws/things/kit-9/shadow/"
    assert r == {
        "topics": [base + s for s in SUFFIXES],
        "subs": [],
        "handlers": sorted(base + s for s in SUFFIXES),
    }


def test_get_returns_the_document(mpy):
    r = run(
        mpy,
        """
        res = call(sh.get)
        out({"res": res, "pubs": [[t.decode(), json.loads(m), rt, q] for t, m, rt, q in c.pubs]})
    """,
    )
    [(topic, body, retain, qos)] = r["pubs"]
    assert (topic, retain, qos) == (BASE + "get", False, 1)
    assert list(body) == ["clientToken"]
    assert r["res"] == {
        "ok": {
            "state": {"reported": {"fw": "0.0.9"}},
            "version": 5,
            "clientToken": body["clientToken"],
        }
    }


def test_get_returns_none_when_no_shadow(mpy):
    r = run(mpy, "out(call(sh.get))", doc="None")
    assert r == {"ok": None}


def test_get_other_rejection_raises(mpy):
    r = run(
        mpy,
        """
        svc.script = [("reject", 500, "Internal service failure")]
        out(call(sh.get))
    """,
    )
    assert r == {"error": ["ShadowRejected", 500, "Internal service failure"]}


def test_update_sends_state_version_and_client_token(mpy):
    r = run(
        mpy,
        """
        res = call(sh.update, reported={"connected": True}, desired={"led": "on"}, version=5)
        out({"res": res, "reqs": svc.requests, "pubs": [[t.decode(), rt, q] for t, _, rt, q in c.pubs]})
    """,
    )
    [(op, body)] = r["reqs"]
    assert op == "update"
    assert r["pubs"] == [[BASE + "update", False, 1]]
    assert body == {
        "state": {"reported": {"connected": True}, "desired": {"led": "on"}},
        "version": 5,
        "clientToken": body["clientToken"],
    }
    assert r["res"] == {
        "ok": {"state": body["state"], "version": 6, "clientToken": body["clientToken"]}
    }


def test_update_without_version_is_unconditional(mpy):
    r = run(
        mpy,
        """
        res = call(sh.update, reported={"a": 1})
        out({"res": res, "reqs": svc.requests})
    """,
    )
    [(_, body)] = r["reqs"]
    assert sorted(body) == ["clientToken", "state"]
    assert r["res"]["ok"]["version"] == 6


def test_replies_with_other_client_tokens_are_ignored(mpy):
    r = run(
        mpy,
        """
        svc.script = [("foreign", 3), ("foreign", 2)]
        g = call(sh.get)
        u = call(sh.update, reported={"x": 1}, version=5)
        out({"get": g, "update": u, "reqs": svc.requests, "left": len(c.queue)})
    """,
    )
    get_tok, upd_tok = tokens(r["reqs"])
    assert r["get"]["ok"]["version"] == 5 and r["get"]["ok"]["clientToken"] == get_tok
    assert r["update"]["ok"]["version"] == 6 and r["update"]["ok"]["clientToken"] == upd_tok
    assert r["left"] == 0


def test_late_reply_to_an_earlier_request_is_ignored(mpy):
    r = run(
        mpy,
        """
        svc.mute = True
        first = call(sh.get)
        svc.mute = False
        old = svc.requests[0][1]["clientToken"]
        # The reply to the timed-out request turns up while the next one waits.
        c.inject(sh.base + b"get/accepted", {"clientToken": old, "state": {}, "version": 1})
        second = call(sh.get)
        out({"first": first, "second": second})
    """,
    )
    assert r["first"] == {"error": ["ShadowTimeout", "no reply to get"]}
    assert r["second"]["ok"]["version"] == 5


def test_version_conflict_reads_again_and_retries_with_new_version(mpy):
    r = run(
        mpy,
        """
        res = call(sh.update, reported={"connected": True}, version=3)
        out({"res": res, "reqs": svc.requests})
    """,
    )
    reqs = r["reqs"]
    assert [op for op, _ in reqs] == ["update", "get", "update"]
    assert reqs[0][1]["version"] == 3 and reqs[2][1]["version"] == 5
    assert reqs[0][1]["state"] == reqs[2][1]["state"] == {"reported": {"connected": True}}
    assert len(set(tokens(reqs))) == 3
    assert r["res"]["ok"]["version"] == 6


def test_version_conflict_gives_up_after_retries(mpy):
    r = run(
        mpy,
        """
        conflict = ("reject", 409, "Version conflict")
        svc.script = [conflict, ("serve",), conflict, ("serve",), conflict]
        res = call(sh.update, reported={"a": 1}, version=5, retries=2)
        out({"res": res, "ops": [op for op, _ in svc.requests]})
    """,
    )
    assert r["res"] == {"error": ["ShadowRejected", 409, "Version conflict"]}
    assert r["ops"] == ["update", "get", "update", "get", "update"]


def test_conflict_on_unconditional_update_is_not_retried(mpy):
    r = run(
        mpy,
        """
        svc.script = [("reject", 409, "Version conflict")]
        res = call(sh.update, reported={"a": 1})
        out({"res": res, "ops": [op for op, _ in svc.requests]})
    """,
    )
    assert r == {"res": {"error": ["ShadowRejected", 409, "Version conflict"]}, "ops": ["update"]}


def test_other_rejection_raises_without_retry(mpy):
    r = run(
        mpy,
        """
        svc.script = [("reject", 400, "Missing required node: state")]
        res = call(sh.update, reported={"a": 1}, version=5)
        out({"res": res, "ops": [op for op, _ in svc.requests]})
    """,
    )
    assert r == {
        "res": {"error": ["ShadowRejected", 400, "Missing required node: state"]},
        "ops": ["update"],
    }


@pytest.mark.parametrize("op, foreign", [("get", 0), ("update", 0), ("update", 3)])
def test_no_reply_times_out(mpy, op, foreign):
    # The request is sent twice with the same clientToken (one resend after timeout_ms),
    # then ShadowTimeout; replies for other tokens do not count as an answer.
    call = "call(sh.get)" if op == "get" else "call(sh.update, reported={'a': 1})"
    r = run(
        mpy,
        f"""
        if {foreign}:
            svc.script = [("foreign_only", {foreign}), ("foreign_only", {foreign})]
        else:
            svc.mute = True
        t0 = time.ticks_ms()
        res = {call}
        out({{"res": res, "ms": time.ticks_diff(time.ticks_ms(), t0), "waiting": sh._waiting,
              "pubs": [[t.decode(), m.decode()] for t, m, _, _ in c.pubs]}})
    """,
    )
    assert r["res"] == {"error": ["ShadowTimeout", f"no reply to {op}"]}
    assert 600 <= r["ms"] < 1500
    assert r["waiting"] is None
    assert len(r["pubs"]) == 2 and r["pubs"][0] == r["pubs"][1]
    assert r["pubs"][0][0] == BASE + op


def test_unanswered_request_is_resent_with_the_same_token(mpy):
    r = run(
        mpy,
        """
        svc.script = [("silent",)]
        t0 = time.ticks_ms()
        res = call(sh.get)
        out({"res": res, "ms": time.ticks_diff(time.ticks_ms(), t0),
             "pubs": [m.decode() for _, m, _, _ in c.pubs]})
    """,
    )
    assert len(r["pubs"]) == 2 and r["pubs"][0] == r["pubs"][1]
    assert r["res"]["ok"]["version"] == 5
    assert r["res"]["ok"]["clientToken"] == json.loads(r["pubs"][0])["clientToken"]
    assert 300 <= r["ms"] < 1000


def test_client_tokens_are_short_and_unique(mpy):
    r = mpy.one("""
        from tk.shadow import Shadow
        from tkfakes import out, FakeMQTT, ShadowService
        thing = "T" * 64
        c = FakeMQTT()
        svc = ShadowService(c, thing, doc={"state": {}, "version": 1})
        toks = []
        for name in (None, "n" * 64):
            sh = Shadow(c, thing, name=name, timeout_ms=300)
            sh.subscribe()
            for i in range(30):
                sh.get()
            sh._seq = 10 ** 15   # a kit that has run for a very long time
            toks.append(sh._token())
        toks += [body["clientToken"] for _, body in svc.requests]
        out(toks)
    """)
    assert len(r) == 2 + 60
    assert len(set(r)) == 62
    for t in r:
        assert len(t.encode()) <= 64
        assert re.fullmatch(r"[0-9a-f]{8}-\d+", t), t
    # Two Shadow objects (two boots) use different random prefixes.
    assert r[0].split("-")[0] != r[1].split("-")[0]


# -- deltas ------------------------------------------------------------------------------
DELTA = """
calls = []
sh.on_delta = lambda state, version: calls.append([state, version])
raised = []
for payload in {payloads!r}:
    c.inject(sh.base + b"update/delta", payload)
    try:
        c.poll(0)
    except Exception as e:
        raised.append(err(e))
c.inject(sh.base + b"update/delta", b'{{"state": {{"settings": {{"log_level": "debug"}}}}, "version": 12}}')
c.poll(0)
out({{"calls": calls, "raised": raised}})
"""

GOOD_CALL = [[{"settings": {"log_level": "debug"}}, 12]]


def test_valid_delta_goes_to_handler(mpy):
    r = run(
        mpy, DELTA.format(payloads=[b'{"state": {"led": "on"}, "version": 3}', b'{"state": {}}'])
    )
    assert r == {"calls": [[{"led": "on"}, 3], [{}, None]] + GOOD_CALL, "raised": []}


def test_delta_without_handler_is_dropped(mpy):
    r = run(
        mpy,
        """
        c.inject(sh.base + b"update/delta", b'{"state": {"led": "on"}, "version": 3}')
        c.poll(0)
        out("ok")
    """,
    )
    assert r == "ok"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff\xfe",
        b"",
        b"{}",
        b'{"version": 3}',
        b'{"state": 5}',
        b'{"state": [1, 2]}',
        b'{"state": null}',
        b'{"state": "on"}',
    ],
)
def test_bad_delta_payloads_are_ignored(mpy, payload):
    r = run(mpy, DELTA.format(payloads=[payload]))
    assert r == {"calls": GOOD_CALL, "raised": []}


# Found as a bug (TypeError out of poll()) and fixed in 43c130f.
@pytest.mark.parametrize("payload", [b"[]", b"null", b"42", b'"state"', b'[{"state": {}}]'])
def test_non_object_delta_payloads_are_ignored(mpy, payload):
    r = run(mpy, DELTA.format(payloads=[payload]))
    assert r == {"calls": GOOD_CALL, "raised": []}


def test_unparsable_reply_is_ignored_while_waiting(mpy):
    r = run(
        mpy,
        """
        def respond(topic, msg):
            c.inject(sh.base + b"get/accepted", b"{not json")
            svc.respond(topic, msg)
        c.responder = respond
        out(call(sh.get))
    """,
    )
    assert r["ok"]["version"] == 5


# Found as a bug (AttributeError out of poll()) and fixed in 43c130f.
@pytest.mark.parametrize("junk", [b"[]", b"null", b"7", b"\xff"])
def test_non_object_reply_is_ignored_while_waiting(mpy, junk):
    r = run(
        mpy,
        f"""
        def respond(topic, msg):
            c.inject(sh.base + b"get/accepted", {junk!r})
            svc.respond(topic, msg)
        c.responder = respond
        out(call(sh.get))
    """,
    )
    assert r["ok"]["version"] == 5, r
