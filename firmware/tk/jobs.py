"""AWS IoT Jobs over MQTT: the device side (shared/AWS_IOT_PROTOCOLS.md, "Jobs").

Loaded with the agent's working part (tk.ota_job) only. The resident agent (tk.ota)
keeps the raw notify-next and start-next replies; :meth:`Jobs.handle` parses and
queues them from the main loop (no I/O inside an MQTT callback), the agent takes the
events with :meth:`Jobs.pop`.

    j = Jobs(client, b"$aws/things/kit-1/jobs/", start_next)
    j.handle(topic, msg)           # a stored notify-next / start-next reply
    ev = j.pop()                   # ("next"|"start", execution or None) or
                                   # ("rejected"|"accepted", job_id, doc)
    client.subscribe_many(j.job_topics(job_id), 1)
    j.update(job_id, "IN_PROGRESS", {"step": "download", "pct": "10"})
    j.forget()                     # late update replies are dropped
"""
import json
import os

from tk.log import Logger

_log = Logger("jobs")


class Jobs:
    def __init__(self, client, base, start_next):
        self.client = client
        self.base = base
        self.start_next = start_next  # the resident agent's (tk.ota.Agent.start_next)
        self.events = []
        self._seq = 0
        self._prefix = "%06x" % int.from_bytes(os.urandom(3), "big")
        self._routed = []

    def handle(self, topic, msg):
        """One message the resident agent stored (notify-next, start-next/+)."""
        t = topic[len(self.base):]
        if t == b"notify-next":
            self._on_next(topic, msg)
        elif t == b"start-next/accepted":
            self._on_start(topic, msg)
        elif t == b"start-next/rejected":
            self._on_start_rejected(topic, msg)

    def job_topics(self, job_id):
        """The replies to one job's updates (subscribed when the job is taken)."""
        b = self.base + job_id.encode() + b"/update/"
        t = [b + b"accepted", b + b"rejected"]
        for x in t:
            self.client.on(x, self._on_update)
        self._routed += t
        return t

    def forget(self):
        """Stop routing update replies here (the agent drops this module)."""
        for t in self._routed:
            self.client.on(t, None)
        self._routed = []

    def _token(self):
        self._seq += 1
        return "%s-%d" % (self._prefix, self._seq)

    def _queue(self, ev):
        if len(self.events) < 8:
            self.events.append(ev)

    def _parse(self, msg):
        if msg is None:
            _log.warn("job message too large for this device: ignored")
            return None
        try:
            d = json.loads(msg)
            return d if isinstance(d, dict) else None
        except Exception:
            return None

    def _on_next(self, topic, msg):
        d = self._parse(msg)
        if d is not None:
            self._queue(("next", d.get("execution")))

    def _on_start(self, topic, msg):
        d = self._parse(msg)
        if d is not None:
            self._queue(("start", d.get("execution")))

    def _on_start_rejected(self, topic, msg):
        d = self._parse(msg) or {}
        _log.warn("start-next refused: %s %s", d.get("code"), d.get("message"))

    def _on_update(self, topic, msg):
        d = self._parse(msg)
        if d is None:
            return
        t = bytes(topic)
        job_id = t[len(self.base):t.rfind(b"/update/")].decode()
        self._queue(("accepted" if t.endswith(b"accepted") else "rejected", job_id, d))

    def pop(self):
        return self.events.pop(0) if self.events else None

    def update(self, job_id, status, details=None):
        """Report a job execution's status; statusDetails values are strings (AWS)."""
        body = {"status": status, "clientToken": self._token()}
        if details:
            body["statusDetails"] = dict((k, str(v)) for k, v in details.items())
        self.client.publish(self.base + job_id.encode() + b"/update",
                            json.dumps(body).encode(), False, 1)
