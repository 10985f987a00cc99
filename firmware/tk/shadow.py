"""Device Shadow client over MQTT (classic or named shadow).

Requests carry a clientToken; replies are matched on it, so other updates to the same
shadow (from the cloud or another app) do not confuse the device. Deltas go to a
handler. A version conflict (409) on update is retried after a fresh get.

    sh = Shadow(client, "kit-1")
    sh.subscribe()
    doc = sh.get()                        # None if no shadow exists yet
    sh.update(reported={"connected": True}, version=doc and doc["version"])
"""
import json
import os
import time

from tk.log import Logger

_log = Logger("shadow")
_REPLIES = (b"get/accepted", b"get/rejected", b"update/accepted", b"update/rejected")


class ShadowRejected(Exception):
    def __init__(self, code, message):
        super().__init__(code, message)
        self.code = code
        self.message = message


class ShadowTimeout(Exception):
    pass


class ShadowTooLarge(Exception):
    """The shadow's reply was larger than this device takes (tk.mqtt max_payload)."""


class Shadow:
    def __init__(self, client, thing, name=None, timeout_ms=5000):
        self.client = client
        if name:
            self.base = "$aws/things/%s/shadow/name/%s/" % (thing, name)
        else:
            self.base = "$aws/things/%s/shadow/" % thing
        self.base = self.base.encode()
        self.timeout_ms = timeout_ms
        self.on_delta = None  # handler(state_dict, version)
        self._seq = 0
        self._prefix = "%08x" % int.from_bytes(os.urandom(4), "big")
        self._waiting = None  # the clientToken we wait for
        self._reply = None  # (suffix, doc)

    def topics(self):
        """Register handlers; return the filters to subscribe to before any request
        (as AWS advises), so the caller can subscribe to them in one packet."""
        c = self.client
        out = []
        for suffix in _REPLIES:
            c.on(self.base + suffix, self._on_reply)
            out.append(self.base + suffix)
        c.on(self.base + b"update/delta", self._on_delta)
        out.append(self.base + b"update/delta")
        return out

    def subscribe(self):
        self.client.subscribe_many(self.topics(), 1)

    def _token(self):
        # Tokens stay far under AWS's 64-byte limit whatever the thing name.
        self._seq += 1
        return "%s-%d" % (self._prefix, self._seq)

    def _on_reply(self, topic, msg):
        if msg is None:
            # Too large to read: it answers the request in flight (one at a time).
            if self._waiting is not None:
                self._reply = (bytes(topic)[len(self.base):], None)
            return
        try:
            doc = json.loads(msg)
        except Exception:
            _log.warn("unparsable reply on %s", topic)
            return
        if not isinstance(doc, dict):
            return
        token = doc.get("clientToken")
        suffix = bytes(topic)[len(self.base):]
        if self._waiting is not None and token == self._waiting:
            self._reply = (suffix, doc)
        elif suffix.endswith(b"rejected") and isinstance(token, str) \
                and token.startswith(self._prefix):
            # The answer to a report() nobody waits for.
            _log.warn("shadow refused an update: %s %s", doc.get("code"), doc.get("message"))

    def _on_delta(self, topic, msg):
        if msg is None:
            _log.warn("delta too large for this device: ignored")
            return
        try:
            doc = json.loads(msg)
            state = doc["state"]
            if not isinstance(state, dict):
                raise ValueError("state is not an object")
        except Exception as e:  # ValueError, KeyError, TypeError, UnicodeError
            _log.warn("ignoring bad delta: %r", e)
            return
        if self.on_delta is not None:
            self.on_delta(state, doc.get("version"))

    def _request(self, op, body, attempts=2):
        """Publish a request and wait for its reply; an unanswered request is sent once
        more with the same clientToken (get is idempotent; a repeated conditional
        update ends in 409, which update() handles)."""
        token = self._token()
        body["clientToken"] = token
        payload = json.dumps(body).encode()
        self._waiting, self._reply = token, None
        try:
            for _ in range(attempts):
                self.client.publish(self.base + op, payload, False, 1)
                t0 = time.ticks_ms()
                while self._reply is None:
                    left = self.timeout_ms - time.ticks_diff(time.ticks_ms(), t0)
                    if left <= 0:
                        break
                    self.client.poll(min(left, 1000))
                if self._reply is not None:
                    r, self._reply = self._reply, None  # not kept for the session
                    return r
                _log.warn("no reply to %s in %d ms", op.decode(), self.timeout_ms)
            raise ShadowTimeout("no reply to %s" % op.decode())
        finally:
            self._waiting = None

    def report(self, reported):
        """Publish an update of reported state without waiting for the answer (periodic
        reports must not stall the loop); a rejection is logged when it comes."""
        body = {"state": {"reported": reported}, "clientToken": self._token()}
        self.client.publish(self.base + b"update", json.dumps(body).encode(), False, 1)

    def get(self):
        """Return the full shadow document, or None when the shadow does not exist."""
        suffix, doc = self._request(b"get", {})
        if doc is None:
            raise ShadowTooLarge("shadow document larger than this device takes")
        if suffix == b"get/accepted":
            return doc
        if doc.get("code") == 404:
            return None
        raise ShadowRejected(doc.get("code"), doc.get("message"))

    def update(self, reported=None, desired=None, version=None, retries=3):
        """Send an update; return the update/accepted document.

        With ``version`` the update is conditional; on 409 the shadow is read again and
        the update resent with the new version, up to ``retries`` times.
        """
        state = {}
        if reported is not None:
            state["reported"] = reported
        if desired is not None:
            state["desired"] = desired
        while True:
            body = {"state": state}
            if version is not None:
                body["version"] = version
            suffix, doc = self._request(b"update", body)
            if suffix == b"update/accepted":
                return doc or {}
            if doc is None:
                raise ShadowTooLarge("update reply larger than this device takes")
            code = doc.get("code")
            if code == 409 and version is not None and retries > 0:
                retries -= 1
                _log.info("version conflict at %s, reading the shadow again", version)
                cur = self.get()
                version = cur["version"] if cur else None
                continue
            raise ShadowRejected(code, doc.get("message"))
