"""AWS IoT MQTT-based file delivery (streams), JSON variant: the device side.

Blocks are asked for in windows (``o`` first block, ``n`` count) and arrive one message
each on ``data/json``; the handler only decodes and keeps them (no I/O in a callback).

    s = Stream(client, "kit-1", "ota-1-2-0", 0, 1024, 16)
    client.subscribe_many(s.topics(), 1)
    s.request(0, 4)
    ... client.poll(...) ...
    data = s.take(0)              # bytes of block 0, or None if not here yet
    s.error                       # (code, message) from rejected/json, or None
"""
import binascii
import json
import os

from tk.log import Logger

_log = Logger("streams")


class Stream:
    def __init__(self, client, thing, stream_id, file_id, block, hold=16):
        self.client = client
        self.base = ("$aws/things/%s/streams/%s/" % (thing, stream_id)).encode()
        self.file_id = file_id
        self.block = block
        self.hold = hold  # blocks kept at most: one window written, one arriving
        self.blocks = {}
        self.error = None
        self.token = "%08x" % int.from_bytes(os.urandom(4), "big")

    def topics(self):
        self.client.on(self.base + b"data/json", self._on_data)
        self.client.on(self.base + b"rejected/json", self._on_rejected)
        return [self.base + b"data/json", self.base + b"rejected/json"]

    def forget(self):
        """Stop routing this stream's messages (the job is over)."""
        for t in (b"data/json", b"rejected/json"):
            self.client.on(self.base + t, None)  # late blocks are dropped
        self.blocks = {}

    def request(self, first, count):
        self.error = None
        body = {"c": self.token, "f": self.file_id, "l": self.block, "o": first, "n": count}
        self.client.publish(self.base + b"get/json", json.dumps(body).encode(), False, 0)

    def _on_data(self, topic, msg):
        if msg is None:
            return
        try:
            d = json.loads(msg)
            if d.get("c") != self.token or d.get("f") != self.file_id:
                return
            i = d["i"]
            if len(self.blocks) < self.hold:
                self.blocks[i] = binascii.a2b_base64(d["p"])
        except Exception as e:
            _log.warn("bad stream block: %r", e)

    def _on_rejected(self, topic, msg):
        try:
            d = json.loads(msg)
            if d.get("c") not in (None, self.token):
                return
            self.error = (d.get("o"), d.get("m"))
        except Exception:
            self.error = ("InvalidJson", "unparsable rejected message")

    def take(self, i):
        return self.blocks.pop(i, None)
