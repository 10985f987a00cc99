# The virtual kit's stand-in for what MicroPython's C runtime does on an ESP32 before
# main.py: mount the ROMFS partition at /rom and put /rom and /rom/lib on sys.path.
# Runs on the MicroPython unix port; argv: ROMFS image, flash directory[, script].
#
# On a board the ROMFS partition is memory-mapped flash and costs no heap. Here the
# image is read into the process first, as one block; the kit runner raises the heap
# cap by exactly that block, so the firmware sees the heap it would have on a board.
import sys
import vfs


_img_path, _flash = sys.argv[1], sys.argv[2]


def _pick_image(ota0):
    # The bootloader's OTA step (ESP-IDF with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE), on
    # files beside the kit (host_tools/kit/image/sim_board/partitions.py): a "new" image is booted
    # once as "pending_verify"; found still pending at the next boot (the app did not
    # call mark_app_valid_cancel_rollback), it is "aborted" and the other slot boots.
    import json
    import os

    root = ota0.rpartition("/")[0] or "."
    files = {"ota_0": ota0, "ota_1": root + "/ota_1.img"}
    try:
        with open(root + "/otadata.json") as f:
            d = json.load(f)
    except (OSError, ValueError):
        return ota0
    boot = d.get("boot") or "ota_0"
    states = d.setdefault("state", {})
    other = "ota_1" if boot == "ota_0" else "ota_0"
    if states.get(boot) == "new":
        states[boot] = "pending_verify"
    elif states.get(boot) in ("pending_verify", "aborted"):
        if states[boot] == "pending_verify":
            print("E bootloader: " + boot + " not confirmed; rolling back to " + other)
        states[boot] = "aborted"
        boot = d["boot"] = other
    try:
        os.stat(files[boot])
    except OSError:
        boot = d["boot"] = "ota_0"
    d["running"] = boot
    with open(root + "/otadata.json.tmp", "w") as f:
        json.dump(d, f)
    os.rename(root + "/otadata.json.tmp", root + "/otadata.json")
    return files[boot]


_img_path = _pick_image(_img_path)
with open(_img_path, "rb") as _f:
    _img = _f.read()
vfs.mount(vfs.VfsRom(_img), "/rom")
sys.path[:0] = ["/rom", "/rom/lib"]
del _f, _img_path, _pick_image
_script = sys.argv[3] if len(sys.argv) > 3 else "main.py"
sys.argv[:] = [_script]
with open(_script) as _f:
    _src = _f.read()
del _f
exec(compile(_src, _script, "exec"), {"__name__": "__main__"})
