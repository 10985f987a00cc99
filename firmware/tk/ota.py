"""The update agent: AWS IoT Jobs in, a signed bundle over MQTT streams, A/B slots out.

    agent = Agent(hal, cfg, client, thing, app1, topics)
    filters = agent.subscriptions()    # into the session's one SUBSCRIBE
    agent.start()                      # after shadow sync and the online message
    agent.service()                    # from the main loop, never inside a callback
    agent.close()                      # the session ended

A job whose document says ``"operation": "thingkit.ota"`` is taken with start-next;
the bundle is fetched in 1 KiB blocks (tk.streams), the offset persisted in
``ota/job.json`` after every window, so a cut link or a power cut resumes where it
stopped. The header comes first: its signature and manifest are checked
(tk.ota_bundle) before any payload is written. Kind "app" (thingkit's .mpy files) goes
to the inactive app slot on the filesystem (tk.slots), on any partition table. Kind
"firmware" (a MicroPython app image, the interpreter) goes to the next OTA partition:
it needs the -OTA image's table, checked before any download (tk.ota_image), and its
version is the runtime's (the image's app descriptor), not the app's. The payload is
read back and hashed, then the boot slot is switched and the device reboots. The new version confirms itself
only after a self-test (connected, shadow synced, its own ping answered by App #1); see
tk.ota_boot. Any refusal ends the job FAILED or REJECTED with a reason; the running
slot is untouched.

RAM: this module is all that stays loaded while no update runs (the subscriptions,
start-next, a handler that keeps the Jobs messages). The working part (tk.ota_job,
tk.jobs, tk.ota_boot, tk.slots and the download modules) is imported when a message
arrives or an update's state is on flash, and dropped again once it is idle.
"""
import os

from tk import forget
from tk.log import Logger

_log = Logger("ota")
_STATE = ("ota/boot.json", "ota/job.json")
# Everything the working part loads: forgotten together when it goes idle.
_WORK = ("ota_job", "jobs", "ota_boot", "slots", "ota_write", "ota_bundle", "p256",
         "ota_slot", "streams", "ota_image")
_runtime = None  # the running MicroPython image's version, read once per boot


class Agent:
    def __init__(self, hal, cfg, client, thing, app1, topics):
        self.hal = hal
        self.cfg = cfg
        self.client = client
        self.thing = thing
        self.app1 = app1
        self.ping_topic = topics.ping
        self.base = b"$aws/things/" + thing.encode() + b"/jobs/"
        self.inbox = []  # (topic, payload) of Jobs messages not handled yet
        self.work = None  # tk.ota_job.Worker while there is something to do
        self.enabled = _exists(cfg.ota_pubkey)
        self._tok = "%06x" % int.from_bytes(os.urandom(3), "big")
        self._n = 0

    def subscriptions(self):
        """Route the Jobs messages to the inbox; return the two filters for the
        session SUBSCRIBE."""
        b = self.base
        for t in (b"notify-next", b"start-next/accepted", b"start-next/rejected"):
            self.client.on(b + t, self._keep)
        return [b + b"notify-next", b + b"start-next/+"]

    def _keep(self, topic, msg):
        # A reply without an execution means "no job": nothing to do unless a job is
        # under way (then the worker is loaded and sees it).
        if self.work is None and msg is not None and b'"execution"' not in msg \
                and not topic.endswith(b"rejected"):
            return
        if len(self.inbox) < 8:
            self.inbox.append((bytes(topic), None if msg is None else bytes(msg)))

    def start_next(self):
        self._n += 1
        self.client.publish(self.base + b"start-next",
                            ('{"clientToken": "%s-s%d"}' % (self._tok, self._n)).encode(),
                            False, 1)

    def start(self):
        """Session is up: report a rollback, test a new version, or ask for a job."""
        if not self.enabled:
            _log.warn("OTA off: no signing key %s", self.cfg.ota_pubkey)
        if not (_exists(_STATE[0]) or _exists(_STATE[1])):
            if self.enabled:  # never updated: nothing to report or to test
                self.start_next()
            return
        self._guarded(True)

    def service(self):
        if self.work is None and not self.inbox:
            return
        self._guarded(False)

    def _guarded(self, start):
        try:
            w = self._worker()
            w.start() if start else w.service()
        except MemoryError as e:
            _log.error("update out of memory: %r", e)
            try:
                if self.work is not None:
                    self.work.out_of_memory()
            except MemoryError:
                pass  # the state stays on flash: a later session tries again
            self.close()
            return
        self._idle()

    def close(self):
        """The session ends: drop the working part (an update's state is on flash)."""
        if self.work is not None:
            self.work.close()
            self.work = None
        forget(_WORK)
        self.inbox = []

    def _worker(self):
        if self.work is None:
            from tk.ota_job import Worker
            self.work = Worker(self)
        return self.work

    def _idle(self):
        w = self.work
        if w is not None and not self.inbox and w.idle():
            self.close()


def check_deadline(hal):
    """Every connection attempt: a new version past its deadline rolls back. Cheap when
    no update is under way (no state in ota/)."""
    if _exists(_STATE[0]) or _exists(_STATE[1]):
        from tk import ota_boot
        ota_boot.check_deadline(hal)
        _forget_if_idle()


def app_slot():
    """The app slot this boot runs (tk.slots.running), without keeping tk.slots."""
    if not _exists(_STATE[0]):
        return "factory"
    from tk import slots
    r = slots.running()
    _forget_if_idle()
    return r


def runtime_version(hal):
    """The running MicroPython image's version ("v1.28.0"): its app descriptor, read
    once per boot through esp32.Partition (tk.ota_image). "unknown" without one."""
    global _runtime
    if _runtime is None:
        from tk import ota_image
        _runtime = ota_image.running_version(hal) or "unknown"
        _forget_if_idle()
    return _runtime


def _forget_if_idle():
    import sys
    if "tk.ota_job" not in sys.modules:  # no worker holds them
        forget(_WORK)


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
