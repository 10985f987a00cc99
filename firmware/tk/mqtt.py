"""MQTT client: umqtt.simple plus what thingkit needs from it.

umqtt.simple (micropython-lib; 1.3.4 pinned, 1.8.x compatible through the same
``ssl=True, ssl_params`` call) does CONNECT, PUBLISH and PUBACK. This subclass adds:

- SUBSCRIBE with a correct variable-length header (1.3.4 writes the remaining length in
  one byte, so a topic over ~120 bytes breaks the connection);
- ``poll(timeout_ms)``: wait for one packet with select.poll, so the caller sleeps in
  the kernel (or lwIP) rather than spinning;
- topic routing: ``on(topic, handler)``;
- keepalive bookkeeping: when the last packet was sent and received.

It never sleeps or retries: reconnect policy lives in tk.device (as umqtt.robust keeps
it out of umqtt.simple).

    c = Client(cfg.thing_name, cfg.endpoint, cfg.port, cfg.keepalive_s, params)
    c.on(b"thingkit/kit-1/ping", handler)
    c.connect()
    c.subscribe(b"thingkit/kit-1/ping", 1)
    while True:
        c.poll(1000)
"""
import select
import struct
import time

from umqtt.simple import MQTTClient, MQTTException  # noqa: F401  (re-exported)

from tk.log import Logger

_log = Logger("mqtt")


def _put_length(buf, n):
    """Write MQTT's variable-length "remaining length" at buf[1:]; return the index
    just after it (the fixed header's size)."""
    i = 1
    while n > 0x7F:
        buf[i] = (n & 0x7F) | 0x80
        n >>= 7
        i += 1
    buf[i] = n
    return i + 1


class Client(MQTTClient):
    def __init__(self, client_id, server, port, keepalive_s, ssl_params, timeout_s=10,
                 max_payload=6144, puback_ms=5000, puback_resends=2):
        params = dict(ssl_params)
        params["timeout"] = timeout_s
        super().__init__(client_id, server, port=port, keepalive=keepalive_s,
                         ssl=True, ssl_params=params)
        self.timeout_s = timeout_s
        # Larger incoming payloads are drained, not kept: handlers get None. Parsing a
        # 9 KB shadow document would not fit a small heap.
        self.max_payload = max_payload
        self._handlers = {}
        self._poller = None
        self._rpoller = None
        self.last_tx = time.ticks_ms()
        self.last_rx = self.last_tx
        self.ping_outstanding = False
        self.ping_at = self.last_tx
        self._acked = set()  # packet ids whose PUBACK was read but not yet claimed
        # A QoS 1 PUBLISH without PUBACK for puback_ms is sent again with DUP set, up to
        # puback_resends times; then publish() raises and the session ends.
        self.puback_ms = puback_ms
        self.puback_resends = puback_resends
        self.set_callback(self._dispatch)

    def on(self, topic, handler):
        """Route PUBLISHes on ``topic`` (bytes, exact match) to ``handler(topic, msg)``;
        None stops routing it."""
        if handler is None:
            self._handlers.pop(topic, None)
        else:
            self._handlers[topic] = handler

    def _dispatch(self, topic, msg):
        # A bad message must never end the session: a handler that raises is logged
        # and the connection goes on.
        h = self._handlers.get(bytes(topic))
        if h is None:
            return
        try:
            h(topic, msg)
        except Exception as e:
            _log.warn("handler for %s failed: %r", bytes(topic), e)

    def connect(self, clean_session=True):
        self.ping_outstanding = False
        self._acked = set()
        present = super().connect(clean_session)
        self.last_tx = self.last_rx = time.ticks_ms()
        self._poller = select.poll()
        self._poller.register(self.sock, select.POLLIN)
        # Wait on the TCP socket under TLS too: MicroPython polls a TLS socket (no file
        # descriptor) in a 1 ms loop, ~1.4 % of a CPU per idle kit on the unix port.
        import ussl
        raw = ussl.take_raw() if hasattr(ussl, "take_raw") else None
        self._rpoller = None
        if raw is not None:
            self._rpoller = select.poll()
            self._rpoller.register(raw, select.POLLIN)
        return present

    def _wait(self, timeout_ms):
        """True if a packet can be read within ``timeout_ms``."""
        if self._rpoller is None:
            return bool(self._poller.poll(timeout_ms))
        if self._poller.poll(0):  # bytes TLS already decrypted: one check, no wait
            return True
        return bool(self._rpoller.poll(timeout_ms))  # the kernel (or lwIP) waits

    def close(self):
        """Drop the connection without DISCONNECT (the broker then sends the Last Will)."""
        s, self.sock = self.sock, None
        self._poller = self._rpoller = None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass

    def disconnect(self):
        """Clean DISCONNECT (no Last Will), then close."""
        try:
            self.sock.write(b"\xe0\0")
        finally:
            self.close()

    def publish(self, topic, msg, retain=False, qos=0):
        """PUBLISH; at QoS 1 wait for its PUBACK, resending with DUP when it is late.

        Re-entrant, unlike umqtt.simple's: a handler called while this waits may
        publish too, and every PUBACK read on the way is recorded, so neither wait
        loses the other's acknowledgement. Raises OSError when no PUBACK came after
        ``puback_resends`` resends (the caller keeps the message for the next session).
        """
        if qos not in (0, 1):
            raise ValueError("AWS IoT supports QoS 0 and 1")
        sz = 2 + len(topic) + len(msg) + (2 if qos else 0)
        hdr = bytearray(7 + len(topic))
        hdr[0] = 0x30 | qos << 1 | (1 if retain else 0)
        i = _put_length(hdr, sz)
        struct.pack_into("!H", hdr, i, len(topic))
        hdr[i + 2:i + 2 + len(topic)] = topic
        i += 2 + len(topic)
        pid = 0
        if qos:
            self.pid = self.pid % 65535 + 1
            pid = self.pid
            struct.pack_into("!H", hdr, i, pid)
            i += 2
        head = memoryview(hdr)[:i]
        self.sock.write(head)  # fixed header, topic, packet id: one record
        self.sock.write(msg)
        self.last_tx = time.ticks_ms()
        if not qos:
            return
        tries = 0
        while not self._await_ack(pid):
            if tries >= self.puback_resends:
                raise OSError("no PUBACK for packet %d after %d resends" % (pid, tries))
            tries += 1
            _log.warn("no PUBACK for packet %d in %d ms: sending it again (DUP, %d/%d)",
                      pid, self.puback_ms, tries, self.puback_resends)
            hdr[0] |= 0x08  # DUP: same packet id, same bytes otherwise
            self.sock.write(head)
            self.sock.write(msg)
            self.last_tx = time.ticks_ms()

    def _await_ack(self, pid):
        """Read packets until the PUBACK of ``pid`` (True) or puback_ms passed (False)."""
        t0 = time.ticks_ms()
        while pid not in self._acked:
            left = self.puback_ms - time.ticks_diff(time.ticks_ms(), t0)
            if left <= 0:
                return False
            # Without a poller (a bare socket in tests) read blocking, as umqtt does.
            if self._poller is not None and not self._wait(left):
                continue
            op = self.wait_msg()
            if op is not None:
                self._finish(op)
        self._acked.discard(pid)
        return True

    def _finish(self, op):
        """Read the rest of a packet wait_msg left to the caller (PUBACK, SUBACK, ...)."""
        n = self._recv_len()
        body = self.sock.read(n) if n else b""
        if op == 0x40 and n == 2:
            self._acked.add(body[0] << 8 | body[1])
        return body

    def ping(self):
        self.sock.write(b"\xc0\0")
        self.last_tx = self.ping_at = time.ticks_ms()
        self.ping_outstanding = True

    def subscribe(self, topic, qos=0):
        """SUBSCRIBE to one topic filter and wait for its SUBACK."""
        return self.subscribe_many((topic,), qos)[0]

    def subscribe_many(self, topics, qos=1):
        """SUBSCRIBE to several filters in one packet (AWS IoT takes up to 8) and wait
        for the SUBACK: one round trip instead of one per topic.

        Returns the granted QoS list; raises MQTTException(0x80) if any is refused.
        """
        self.pid = self.pid % 65535 + 1
        pid = self.pid
        sz = 2
        for t in topics:
            sz += 2 + len(t) + 1
        hdr = bytearray(5)
        hdr[0] = 0x82
        pkt = bytearray(hdr[:_put_length(hdr, sz)])
        pkt += struct.pack("!H", pid)
        for t in topics:
            pkt += struct.pack("!H", len(t))
            pkt += t
            pkt.append(qos)
        self.sock.write(pkt)  # one write: one TLS record, one TCP segment
        self.last_tx = time.ticks_ms()
        while True:
            op = self.wait_msg()
            if op is None:
                continue
            resp = self._finish(op)
            if op == 0x90:
                if len(resp) != 2 + len(topics) or (resp[0] << 8 | resp[1]) != pid:
                    raise MQTTException("bad SUBACK")
                granted = list(resp[2:])
                if 0x80 in granted:
                    raise MQTTException(0x80)
                return granted

    def wait_msg(self):
        """Read one packet (blocking, within the socket time-out) and process it.

        Returns the packet type byte for packets the caller must finish reading
        (PUBACK 0x40, SUBACK 0x90), else None.
        """
        res = self.sock.read(1)
        if res is None:
            return None
        if res == b"":
            raise OSError(-1)  # the broker closed the connection
        self.last_rx = time.ticks_ms()
        op = res[0]
        if op == 0xD0:  # PINGRESP
            self.sock.read(1)
            self.ping_outstanding = False
            return None
        if op & 0xF0 != 0x30:
            return op
        sz = self._recv_len()
        tl = self.sock.read(2)
        tl = tl[0] << 8 | tl[1]
        topic = self.sock.read(tl)
        sz -= tl + 2
        pid = 0
        if op & 6:
            p = self.sock.read(2)
            pid = p[0] << 8 | p[1]
            sz -= 2
        if sz > self.max_payload:
            _log.warn("%d-byte message on %s is larger than this device takes (%d): dropped",
                      sz, bytes(topic), self.max_payload)
            while sz > 0:
                sz -= len(self.sock.read(min(sz, 256)))
            msg = None
        else:
            msg = self.sock.read(sz)
        if op & 6 == 2:  # QoS 1: acknowledge before handling, as AWS expects promptly
            self.sock.write(struct.pack("!BBH", 0x40, 2, pid))
        self.cb(topic, msg)
        return None

    def poll(self, timeout_ms):
        """Wait up to ``timeout_ms`` for a packet and process it. True if one came."""
        if not self._wait(timeout_ms):
            return False
        op = self.wait_msg()
        if op is not None:
            # A packet nobody waits for here (a PUBACK for an outer publish, a late
            # SUBACK): read its body so the stream stays in step; PUBACKs are recorded.
            self._finish(op)
        return True
