"""What the update agent does around a reboot: deadline, confirmation, rollback report.

The app slots' state is tk.slots' ``ota/boot.json``; a firmware update (kind
"firmware") keeps its state in ``ota/job.json`` (``"st": "sw"``, the target partition)
and leaves the rollback rule to the bootloader (ESP-IDF: a new image not confirmed by
the time it boots again is aborted). Both end in the same reports: SUCCEEDED after the
self-test, FAILED with the reason after a rollback.

    ota_boot.check_deadline(hal)   # every connection attempt: overdue -> roll back
    ota_boot.unreported(hal)       # {"job", "ver", "reason"} of a rollback, or None
    ota_boot.on_trial(hal)         # True while a new version must prove itself
    job, slot = ota_boot.confirm(hal)
"""
import os

from tk import slots
from tk.log import Logger

JOB_FILE = "ota/job.json"
HDR_FILE = "ota/hdr.bin"
FILES_FILE = "ota/files.json"
_log = Logger("ota")


def job():
    return slots.read_json(JOB_FILE)


def done():
    """Forget the update's files (its outcome has been reported)."""
    for p in (JOB_FILE, HDR_FILE, FILES_FILE):
        try:
            os.remove(p)
        except OSError:
            pass


def _fw_trial(hal, j):
    return bool(j and j.get("st") == "sw" and j.get("kind") == "firmware"
                and hal.running_slot() == j.get("slot"))


def on_trial(hal):
    return slots.pending() is not None or _fw_trial(hal, job())


def firmware_trial(hal):
    """The job state of a firmware update whose new image is running unconfirmed."""
    j = job()
    return j if _fw_trial(hal, j) else None


def check_deadline(hal):
    """A new version past its confirmation deadline goes back (app: the boot state;
    firmware: a reboot, after which the bootloader returns to the other partition)."""
    if slots.pending() is not None:
        why = slots.overdue()
        if why:
            _log.error("rollback: %s", why)
            slots.rollback(why)
            hal.reboot()
        return
    j = job()
    if _fw_trial(hal, j) and slots.uptime_s() > j.get("confirm_s", 300):
        _log.error("rollback: firmware %s not confirmed within %d s", j.get("ver"),
                   j.get("confirm_s", 300))
        hal.reboot()


def unreported(hal):
    """A rollback the job service has not heard of yet; resumes an unfinished switch."""
    r = slots.take_result()
    if r is not None:
        return r
    j = job()
    if not j or j.get("st") != "sw":
        return None
    if j.get("kind") == "firmware":
        if hal.running_slot() != j.get("slot"):
            prev = j.get("prev_run") or "factory"
            return {"job": j["id"], "ver": j.get("ver"), "reboot": prev != "factory",
                    "reason": "firmware %s not confirmed; the bootloader returned to %s"
                              % (j.get("ver"), hal.running_slot())}
        return None
    st = slots.state()
    if st.get("try") != j.get("slot") and st.get("job") != j.get("id"):
        # Power cut between writing the slot and switching: switch now.
        _log.info("finishing the switch to slot %s", j.get("slot"))
        slots.switch(j["slot"], j["id"], j.get("ver"), j.get("confirm_s", 300))
        hal.reboot()
    return None


def reported(hal):
    """The rollback has been reported: clear it (and restore the app slot choice a
    firmware update had reset)."""
    slots.clear_result()
    j = job()
    if j and j.get("kind") == "firmware" and j.get("prev_run"):
        st = slots.state()
        st["run"] = j["prev_run"]
        slots.write_json(slots.BOOT_FILE, st)
    done()


def installed(hal, job_id, doc):
    """True if this job's version is the one running, confirmed (report lost): the
    runtime's version for a firmware job, the app's for an app job."""
    st = slots.state()
    if st.get("job") != job_id or st.get("try"):
        return False
    if doc.get("kind") == "firmware":
        from tk import ota_image
        from tk.ota import runtime_version
        return ota_image.semver(runtime_version(hal)) == doc.get("version")
    from tk.version import VERSION
    return doc.get("version") == VERSION


def confirm(hal):
    """The self-test passed: keep the new version. Returns (job id, slot)."""
    if slots.pending() is not None:
        st = slots.confirm()
        return st.get("job"), st.get("run")
    j = job()
    P = hal.partition()
    P.mark_app_valid_cancel_rollback()
    from tk.ota_image import release
    release(P)
    st = slots.state()
    st["job"] = j.get("id")
    slots.write_json(slots.BOOT_FILE, st)
    return j.get("id"), j.get("slot")
