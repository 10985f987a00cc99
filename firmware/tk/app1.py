"""App #1, connectivity (AWS IoT hardware-kit checklist).

1. Publish to a known topic that the device is online: ``<prefix>/<thing>/status``,
   retained, QoS 1; the Last Will on the same topic says offline.
2. Update the thing shadow to online: done by tk.device on every connect
   (reported.connected = true).
3. Subscribe to a topic and show that the subscription works: every message on
   ``<prefix>/<thing>/ping`` gets an answer on ``<prefix>/<thing>/pong`` that echoes its
   ``id`` and carries the device's timestamps.
"""
import json

from tk import clock
from tk.log import Logger

_log = Logger("app1")


def status_message(thing, state, fw, extra=None):
    d = {"thing": thing, "state": state, "fw": fw, "ts": clock.unix_ms()}
    if extra:
        d.update(extra)
    return json.dumps(d).encode()


def last_will(thing, fw):
    # No timestamp can be known in advance; the broker publishes this when the link dies.
    return json.dumps({"thing": thing, "state": "offline", "fw": fw, "reason": "connection_lost"})


class App1:
    def __init__(self, client, thing, topics, fw):
        self.client = client
        self.thing = thing
        self.topics = topics
        self.fw = fw
        self.pings = 0
        self._pending = []

    def subscriptions(self):
        """Register the ping handler; return the filters App #1 needs."""
        self.client.on(self.topics.ping, self._on_ping)
        return [self.topics.ping]

    def start(self, boot_info):
        """Announce online (call once subscribed and the shadow is synced)."""
        c = self.client
        c.publish(self.topics.status, status_message(self.thing, "online", self.fw, boot_info),
                  True, 1)
        _log.info("online message published on %s", self.topics.status.decode())

    def _on_ping(self, topic, msg):
        # Called inside the MQTT read: note the ping, answer it from the main loop
        # (no I/O in callbacks). A few unanswered pings are kept; older ones dropped.
        rx = clock.unix_ms()
        try:
            req = json.loads(msg)
            pid = req.get("id") if isinstance(req, dict) else None
        except Exception:  # ValueError, or UnicodeError for bytes that are not UTF-8
            pid = None
        if len(self._pending) < 4:
            self._pending.append((pid, rx))

    def service(self):
        """Answer the pings received since the last call (main loop)."""
        while self._pending:
            pid, rx = self._pending.pop(0)
            self.pings += 1
            body = {"thing": self.thing, "id": pid, "rx_ts": rx, "ts": clock.unix_ms(),
                    "count": self.pings}
            self.client.publish(self.topics.pong, json.dumps(body).encode(), False, 1)
            _log.info("ping %r answered", pid)

    def stop(self):
        """Say offline explicitly before a clean disconnect."""
        self.client.publish(self.topics.status,
                            status_message(self.thing, "offline", self.fw, {"reason": "shutdown"}),
                            True, 1)
