"""A/B application slots and the boot state shared with the boot selector (main.py).

Kind "app" updates go to directories ``slot_a`` / ``slot_b`` on the filesystem (relative
to the filesystem root, which is the cwd on ESP32 and on the virtual kit); "factory" is
the app that was deployed (ROMFS ``/rom`` or the filesystem). The boot state lives in
``ota/boot.json``, always replaced atomically (write a temporary file, rename):

    {"run": "factory"|"a"|"b",      the confirmed slot
     "try": null|"a"|"b",           a slot on trial (booted but not confirmed yet)
     "boots": n,                    boots of the trial slot so far (main.py counts)
     "job": id, "ver": "1.2.0",     the update that put it there
     "confirm_s": 120,              the trial's confirmation deadline (uptime)
     "result": {...}}               a rollback the agent still has to report

main.py applies the rule (a trial slot booted more than MAX_BOOTS times without being
confirmed goes back to ``run``); the running firmware applies the deadline
(:func:`overdue`) and confirms (:func:`confirm`) once its self-test passed.

Writing a slot is tk.ota_slot' job (loaded only while an update runs).
"""
import json
import os

from tk.log import uptime_ms

BOOT_FILE = "ota/boot.json"
MAX_BOOTS = 3
# Room for one app slot (kind "app"): a bundle whose payload is larger is refused.
SLOT_BYTES = 512 * 1024


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _mkdirs(path):
    cur = ""
    for part in path.split("/"):
        cur = part if not cur else cur + "/" + part
        if not _exists(cur):
            os.mkdir(cur)


def write_json(path, doc):
    """Replace ``path`` atomically: a power cut leaves the old or the new file."""
    _mkdirs(path.rpartition("/")[0])
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, path)


def read_json(path):
    try:
        with open(path) as f:
            d = json.load(f)
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def state():
    return read_json(BOOT_FILE) or {"run": "factory"}


def running():
    """The app slot this boot runs: the trial slot if there is one, else ``run``."""
    st = state()
    return st.get("try") or st.get("run") or "factory"


def inactive():
    return "b" if running() == "a" else "a"


def slot_dir(slot):
    return "slot_" + slot


def pending():
    """The boot state if this boot runs a slot on trial, else None."""
    st = state()
    return st if st.get("try") else None


def switch(slot, job, version, confirm_s):
    """Put ``slot`` on trial for the next boot: one atomic write."""
    st = state()
    st.update({"try": slot, "boots": 0, "job": job, "ver": version,
               "confirm_s": confirm_s})
    st.pop("result", None)
    write_json(BOOT_FILE, st)


def confirm():
    """The trial slot passed its self-test: it becomes the slot to run."""
    st = state()
    if st.get("try"):
        st["prev"] = st.get("run")
        st["run"] = st["try"]
        st["try"] = None
        st["boots"] = 0
        write_json(BOOT_FILE, st)
    return st


def rollback(reason):
    """Leave the trial slot; the next boot runs ``run``; the agent reports ``reason``."""
    st = state()
    if st.get("try"):
        st["result"] = {"job": st.get("job"), "ver": st.get("ver"), "reason": reason}
        st["try"] = None
        st["boots"] = 0
        write_json(BOOT_FILE, st)


def take_result():
    """A rollback not reported yet: {"job", "ver", "reason"} or None."""
    return state().get("result")


def clear_result():
    st = state()
    if st.pop("result", None) is not None:
        write_json(BOOT_FILE, st)


def uptime_s():
    # tk.log's clock: loaded at boot and never dropped (this module is, between updates)
    return uptime_ms() // 1000


def overdue():
    """The trial's deadline passed without confirmation: the reason, else None."""
    st = pending()
    if st is None:
        return None
    limit = st.get("confirm_s") or 300
    if uptime_s() > limit:
        return "version %s not confirmed within %d s" % (st.get("ver"), limit)
    return None
