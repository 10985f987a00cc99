# Runs at boot on the board and on the virtual kit: the boot selector.
#
# It picks the app slot (tk/slots.py explains the boot state), puts it first on
# sys.path and starts the app. The rule: a slot on trial is booted at most _MAX times
# without being confirmed; then, or if its code cannot even be imported, the boot
# state goes back to the confirmed slot, with the reason recorded for the update agent.
# It imports nothing from tk/ before the choice (the package would stick to the wrong
# slot), is never part of an app bundle, and must stay this small.
import json
import os
import sys

# A stock ESP32 image searches its frozen modules before /lib (sys.path is
# ['', '.frozen', '/lib']) and freezes a umqtt.simple whose constructor differs from the
# release thingkit pins and is tested with (1.4.0 in v1.24, 1.6.0-1.7.0 later). The
# libraries deployed with the firmware come first, before anything imports them.
_libs = [p for p in sys.path if p == "/lib" or p.endswith("/lib")]
sys.path[:] = [p for p in sys.path if p == ""] + _libs + [
    p for p in sys.path if p != "" and p not in _libs]
del _libs

_BOOT = "ota/boot.json"
_MAX = 3  # tk.slots.MAX_BOOTS


def _save(st):
    with open(_BOOT + ".tmp", "w") as f:
        json.dump(st, f)
    os.rename(_BOOT + ".tmp", _BOOT)  # atomic: the old or the new state survives


def _back(st, why):
    st["result"] = {"job": st.get("job"), "ver": st.get("ver"), "reason": why}
    st["try"] = None
    st["boots"] = 0
    _save(st)
    print("E boot: slot %s rolled back: %s" % (st.get("run"), why))


def _reboot():
    if sys.platform == "esp32":
        import machine
        machine.reset()
    sys.exit(75)  # the virtual kit's reset circuit starts the process again


def _select():
    try:
        with open(_BOOT) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return None, None
    t = st.get("try")
    if t:
        n = st.get("boots", 0) + 1
        if n > _MAX:
            _back(st, "version %s not confirmed after %d boots" % (st.get("ver"), _MAX))
        else:
            st["boots"] = n
            _save(st)
            return t, st
    return st.get("run"), st


_slot, _st = _select()
if _slot in ("a", "b"):
    sys.path[:0] = ["slot_" + _slot, "slot_" + _slot + "/lib"]
    print("I boot: app slot %s" % _slot)
try:
    import tk.main
except Exception as e:  # the slot's code does not even load
    if _st is None or not _st.get("try"):
        raise
    _back(_st, "version %s does not start: %r" % (_st.get("ver"), e))
    _reboot()

tk.main.start()
