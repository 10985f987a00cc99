"""MicroPython-side test helpers (on MICROPYPATH for tests/device only).

Snippets report results with ``out({"ok": True})``: one "JSON {...}" line for the host.
"""

import json
import time
from binascii import hexlify


def out(obj):
    print("JSON " + json.dumps(obj))


def hx(b):
    return hexlify(bytes(b)).decode()


def err(e):
    """An exception as JSON-friendly [class name, args...]."""
    return [type(e).__name__] + [a.decode() if isinstance(a, bytes) else a for a in e.args]


class FakeSock:
    """A socket stand-in: write() records bytes, read(n) serves scripted bytes.

    When the script is exhausted read() raises OSError(11), as a real socket with a
    time-out does, or returns b"" (the peer closed) when ``eof`` is set.
    """

    def __init__(self, rx=b"", eof=False):
        self.rx = bytearray(rx)
        self.eof = eof
        self.tx = bytearray()
        self.writes = []
        self.closed = False

    def feed(self, data):
        self.rx += data

    def write(self, buf, n=None):
        b = bytes(buf) if n is None else bytes(buf)[:n]
        self.tx += b
        self.writes.append(b)
        return len(b)

    def read(self, n):
        if not self.rx:
            if self.eof:
                return b""
            raise OSError(11)
        b = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return b

    def setblocking(self, flag):
        pass

    def settimeout(self, t):
        pass

    def close(self):
        self.closed = True

    def take(self):
        """Bytes written since the last take()."""
        b = bytes(self.tx)
        self.tx = bytearray()
        return b


class FakePoller:
    """Stands in for select.poll() registered on a FakeSock."""

    def __init__(self, sock):
        self.sock = sock
        self.calls = []

    def poll(self, timeout_ms):
        self.calls.append(timeout_ms)
        return [(self.sock, 1)] if self.sock.rx else []


class FakeMQTT:
    """The part of tk.mqtt.Client that tk.shadow and tk.app1 use.

    publish() is recorded and handed to ``responder(topic, msg)`` (if set), which may
    queue replies with inject(); poll() delivers one queued message to its handler.
    Handlers are called directly: an exception in one reaches the caller of poll().
    """

    def __init__(self):
        self.handlers = {}
        self.subs = []  # (topic, qos) for every filter subscribed
        self.sub_packets = []  # [[topic, ...], qos] per SUBSCRIBE packet
        self.pubs = []  # (topic, msg, retain, qos)
        self.queue = []
        self.responder = None
        self.polls = 0

    def on(self, topic, handler):
        self.handlers[topic] = handler

    def subscribe(self, topic, qos=0):
        return self.subscribe_many((topic,), qos)[0]

    def subscribe_many(self, topics, qos=1):
        self.sub_packets.append([list(topics), qos])
        for t in topics:
            self.subs.append((t, qos))
        return [qos] * len(topics)

    def publish(self, topic, msg, retain=False, qos=0):
        self.pubs.append((topic, msg, retain, qos))
        if self.responder is not None:
            self.responder(topic, msg)

    def inject(self, topic, msg):
        if isinstance(msg, str):
            msg = msg.encode()
        elif not isinstance(msg, (bytes, bytearray)):
            msg = json.dumps(msg).encode()
        self.queue.append((topic, msg))

    def poll(self, timeout_ms):
        self.polls += 1
        if not self.queue:
            time.sleep_ms(min(timeout_ms, 5))
            return False
        topic, msg = self.queue.pop(0)
        h = self.handlers.get(topic)
        if h is not None:
            h(topic, msg)
        return True

    def published(self):
        """[(topic str, JSON body)] of everything published."""
        return [(t.decode(), json.loads(m)) for t, m, _, _ in self.pubs]


class ShadowService:
    """A small AWS-like shadow behind a FakeMQTT: get and (conditional) update.

    Serves the classic and any named shadow of ``thing`` (one document for all).
    ``script`` is a list of actions used for the next requests, one per request
    publish, before normal service: ("reject", code, message), ("silent",) for no
    reply, ("foreign", n) to send first n replies carrying another clientToken and then
    serve, ("foreign_only", n) for those replies alone, or ("serve",). With ``mute`` set it never replies.
    """

    def __init__(self, client, thing, doc=None):
        self.c = client
        self.prefix = f"$aws/things/{thing}/shadow/"
        self.doc = doc  # {"state": {...}, "version": n} or None
        self.script = []
        self.mute = False
        self.requests = []
        client.responder = self.respond

    def respond(self, topic, msg):
        topic = topic.decode()
        if not topic.startswith(self.prefix):
            return
        rest = topic[len(self.prefix) :]
        base = self.prefix
        if rest.startswith("name/"):
            name, rest = rest[5:].split("/", 1)
            base += f"name/{name}/"
        op = rest
        req = json.loads(msg)
        self.requests.append((op, req))
        if self.mute:
            return
        tok = req.get("clientToken")
        action = self.script.pop(0) if self.script else ("serve",)

        def reply(suffix, body):
            self.c.inject((base + suffix).encode(), body)

        if action[0] == "silent":
            return
        if action[0] in ("foreign", "foreign_only"):
            for i in range(action[1]):
                reply(
                    op + "/accepted",
                    {"clientToken": f"someone-else-{i}", "state": {}, "version": 999},
                )
                reply(
                    op + "/rejected",
                    {
                        "clientToken": f"someone-else-{i}",
                        "code": 400,
                        "message": "not yours",
                    },
                )
            if action[0] == "foreign_only":
                return
        if action[0] == "reject":
            reply(op + "/rejected", {"code": action[1], "message": action[2], "clientToken": tok})
            return
        if op == "get":
            if self.doc is None:
                reply(
                    "get/rejected",
                    {"code": 404, "clientToken": tok, "message": "No shadow exists with name: 'x'"},
                )
            else:
                d = dict(self.doc)
                d["clientToken"] = tok
                reply("get/accepted", d)
        elif op == "update":
            cur = self.doc["version"] if self.doc else 0
            if "version" in req and req["version"] != cur:
                reply(
                    "update/rejected",
                    {"code": 409, "message": "Version conflict", "clientToken": tok},
                )
                return
            if self.doc is None:
                self.doc = {"state": {}, "version": 0}
            for part, vals in req["state"].items():
                self.doc["state"].setdefault(part, {}).update(vals)
            self.doc["version"] += 1
            reply(
                "update/accepted",
                {"state": req["state"], "version": self.doc["version"], "clientToken": tok},
            )
