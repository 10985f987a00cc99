"""The update agent's working part (tk.ota loads it when there is work, drops it after).

It takes the job (start-next), fetches and checks the bundle (tk.ota_write), switches
the slot and reboots; after a reboot it tests the new version and confirms it
(tk.ota_boot), or reports a rollback. All its state that must outlive a session or a
reboot is on flash (``ota/``), so dropping it between jobs loses nothing.
"""
import gc
import time

from tk import forget, slots
from tk.jobs import Jobs
from tk.ota import _log

_OPERATION = "thingkit.ota"
_CANCELLED = ("TerminalStateReached", "InvalidStateTransition", "ResourceNotFound")


class Worker:
    def __init__(self, agent):
        self.agent = agent
        self.hal = agent.hal
        self.cfg = agent.cfg
        self.client = agent.client
        self.thing = agent.thing
        self.app1 = agent.app1
        self.ping_topic = agent.ping_topic
        self.enabled = agent.enabled
        self.jobs = Jobs(agent.client, agent.base, agent.start_next)
        self.dl = None  # the download in progress (tk.ota_write.Download)
        self.taking = None  # the job id while a download is being set up
        self.selftest = None  # (pings before, when sent, tries) while a new version tests

    def idle(self):
        """Nothing under way: the agent may unload this module."""
        return self.dl is None and self.selftest is None and not self.jobs.events

    def close(self):
        self.jobs.forget()

    def start(self):
        """Session is up with an update's state on flash: report a rollback, test a new
        version, or ask for a job."""
        from tk import ota_boot
        res = ota_boot.unreported(self.hal)
        if res is not None:
            _log.warn("update %s rolled back: %s", res.get("job"), res.get("reason"))
            self.jobs.update(res["job"], "FAILED", {"reason": res["reason"],
                                                   "version": res.get("ver")})
            ota_boot.reported(self.hal)
            if res.get("reboot"):
                self.hal.reboot()
        if ota_boot.on_trial(self.hal):
            self._ping_self()
        elif self.enabled:
            self.jobs.start_next()

    # -- self-test and confirmation of a new version ---------------------------------
    def _ping_self(self):
        n = self.selftest[2] + 1 if self.selftest else 1
        self.selftest = (self.app1.pings, time.ticks_ms(), n)
        self.client.publish(self.ping_topic, b'{"id":"ota-selftest"}', False, 1)

    def _check_selftest(self):
        before, at, tries = self.selftest
        if self.app1.pings > before:
            self.selftest = None
            from tk import ota_boot
            fw = ota_boot.firmware_trial(self.hal)
            if fw is not None and self._wrong_runtime(fw):
                return
            job, slot = ota_boot.confirm(self.hal)
            det = self._details(fw is not None, slot)
            _log.info("self-test passed: version %s confirmed in slot %s", det["version"], slot)
            if job:
                self.jobs.update(job, "SUCCEEDED", det)
            ota_boot.done()
            self.jobs.start_next()
        elif time.ticks_diff(time.ticks_ms(), at) > 10000 and tries < 3:
            self._ping_self()

    def _details(self, firmware, slot):
        """The job's statusDetails on success: "version" is what the update changed (the
        runtime's for a firmware update, the app's for an app update); both are there."""
        from tk import ota_image
        from tk.ota import runtime_version
        rt = runtime_version(self.hal)
        return {"version": (ota_image.semver(rt) or rt) if firmware else _version(),
                "runtime": rt, "app": _version(), "slot": slot}

    def _wrong_runtime(self, j):
        """A firmware update booted, but the image's descriptor is not the version the
        job installs: FAILED, not confirmed (the bootloader returns to the previous
        partition at the reboot)."""
        from tk import ota_boot, ota_image
        from tk.ota import runtime_version
        rt = runtime_version(self.hal)
        if ota_image.semver(rt) == j.get("ver"):
            return False
        why = "runtime_mismatch: %s runs MicroPython %s, the job installs %s" % (
            j.get("slot"), rt, j.get("ver"))
        _log.error("update %s: %s", j.get("id"), why)
        self.jobs.update(j.get("id"), "FAILED", {"reason": why})
        ota_boot.reported(self.hal)
        self.hal.reboot()
        return True

    # -- jobs --------------------------------------------------------------------------
    def service(self):
        inbox = self.agent.inbox
        while inbox:
            self.jobs.handle(*inbox.pop(0))
        while True:
            ev = self.jobs.pop()
            if ev is None:
                break
            self._event(ev)
        if self.selftest is not None and self.app1 is not None:
            self._check_selftest()
        if self.dl is not None:
            from tk.ota_write import Refused
            try:
                done = self.dl.step()
            except Refused as e:
                self._refuse(e.status, e.reason)
                return
            if done:
                self._activate()
            elif self.dl is not None and self.dl.pct // 25 > self.dl.sent // 25:
                self.jobs.update(self.dl.job_id, "IN_PROGRESS", self.dl.progress())

    def _event(self, ev):
        kind = ev[0]
        cur = self.dl.job_id if self.dl else None
        if kind == "start":
            if ev[1]:
                self._take(ev[1])
        elif kind == "next":
            ex = ev[1]
            nxt = ex.get("jobId") if isinstance(ex, dict) else None
            if cur is not None and nxt != cur:
                self._abandon("job %s is no longer next (cancelled?)" % cur)
            if self.dl is None and self.selftest is None and nxt and self.enabled:
                self.jobs.start_next()
        elif kind == "rejected" and ev[1] == cur:
            code = ev[2].get("code")
            if code in _CANCELLED:
                self._abandon("update refused by the service: %s" % code)

    def _take(self, ex):
        job_id = ex.get("jobId")
        doc = ex.get("jobDocument") or {}
        if self.dl is not None and self.dl.job_id == job_id:
            return
        if self.dl is not None:
            self._abandon("another job came first")
        if not isinstance(doc, dict) or doc.get("operation") != _OPERATION:
            self.jobs.update(job_id, "REJECTED", {"reason": "unknown operation %r"
                                                  % (doc.get("operation") if
                                                     isinstance(doc, dict) else None)})
            self.jobs.start_next()
            return
        from tk import ota_boot
        if ota_boot.installed(self.hal, job_id, doc):
            # Confirmed before a power cut took the report with it.
            fw = doc.get("kind") == "firmware"
            self.jobs.update(job_id, "SUCCEEDED", self._details(
                fw, self.hal.running_slot() if fw else slots.running()))
            self.jobs.start_next()
            return
        gc.collect()
        self.taking = job_id  # for out_of_memory() until the download exists
        from tk.ota_write import Download, Refused
        try:
            self.dl = Download(self.hal, self.cfg, self.client, self.thing, job_id, doc)
        except Refused as e:
            self.taking = None
            self._refuse(e.status, e.reason, job_id)
            return
        self.taking = None
        self.client.subscribe_many(self.jobs.job_topics(job_id) + self.dl.topics(), 1)
        self.jobs.update(job_id, "IN_PROGRESS", self.dl.progress())
        _log.info("job %s: version %s (%s), %d bytes from offset %d", job_id,
                  doc.get("version"), doc.get("kind"), self.dl.size, self.dl.off)

    def out_of_memory(self):
        """A MemoryError while updating: free the download's buffers and end the job
        FAILED (its state and partial slot go), so the next session does not meet it
        again; the device carries on with the version it runs."""
        dl, job_id = self.dl, self.taking
        if dl is not None:
            dl.stream.blocks = {}
            job_id = dl.job_id
        if job_id is None:
            return
        self.taking = None
        self.dl = None
        if dl is not None:
            dl.discard()
        else:
            from tk import ota_boot
            ota_boot.done()
        dl = None
        forget(("ota_write", "ota_bundle", "p256", "ota_slot", "streams"))
        gc.collect()
        free, total = gc.mem_free(), gc.mem_free() + gc.mem_alloc()
        budget = total - self.hal.heap_reserved()
        _log.warn("job %s FAILED: out of memory", job_id)
        self.jobs.update(job_id, "FAILED", {"reason": "out_of_memory: the update needs "
                                            "more heap than is free (%d of %d bytes)"
                                            % (free, budget)})
        self.jobs.start_next()

    def _refuse(self, status, reason, job_id=None):
        job_id = job_id or self.dl.job_id
        _log.warn("job %s %s: %s", job_id, status, reason)
        self.jobs.update(job_id, status, {"reason": reason})
        self._drop()
        self.jobs.start_next()

    def _abandon(self, why):
        _log.warn("job %s abandoned: %s", self.dl.job_id, why)
        self._drop()

    def _drop(self):
        if self.dl is not None:
            self.dl.discard()
        self.dl = None
        _unload()
        gc.collect()

    def _activate(self):
        from tk.ota_write import Refused
        try:
            self.dl.switch()
        except Refused as e:  # a firmware image set_boot() refuses
            self._refuse(e.status, e.reason)
            return
        dl, self.dl = self.dl, None
        self.jobs.update(dl.job_id, "IN_PROGRESS", {"step": "reboot", "version": dl.version})
        _log.info("job %s: version %s written to %s; rebooting", dl.job_id, dl.version,
                  dl.target)
        used, before, budget = dl.heap_report()
        _log.info("update heap: peak %d of %d bytes (%d before the job); signature check "
                  "%s ms", used, budget, before, dl.verify_ms)
        self.client.close()
        self.hal.reboot()


def _unload():
    """Forget the update-time modules (verifier, writer): their RAM comes back."""
    forget(("ota_write", "ota_bundle", "p256", "ota_slot", "streams"))


def _version():
    from tk.version import VERSION
    return VERSION

