# The virtual kit's second-stage bootloader: which app partition boots, as ESP-IDF's
# bootloader decides it with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE (on in every MicroPython
# esp32 build). Runs on the MicroPython unix port as its own short process before every
# boot of the firmware (host_tools/kit/sim.py's reset loop, for .mpy and ROMFS kits alike),
# so it costs the firmware's heap nothing. Reads and writes the files of
# host_tools/kit/image/sim_board/partitions.py ($TK_SIM_PARTS, table from $TK_SIM_BOARD):
#
# - a table without otadata (stock ESP32_GENERIC): the factory app boots;
# - with otadata (the -OTA image): the partition set_boot() chose; an image in state "new"
#   boots once as "pending_verify"; found still pending at the next boot (the app never
#   called mark_app_valid_cancel_rollback) it is "aborted" and the other slot boots;
# - an image that does not verify (magic, segments, checksum, SHA-256) is skipped.
#
# It writes the choice to otadata.json ("running"): what Partition.RUNNING reads, and the
# running image's app descriptor is the runtime version the firmware reports. The unix
# binary itself does not change: the sim shows the partition steps, not a new interpreter.
from sim_board.partitions import (
    default_boot,
    image_problem,
    ota_labels,
    otadata,
    path,
    save_otadata,
    table,
)

BAD = ("aborted", "invalid")


def _bootable(label):
    why = image_problem(path(label))
    if why is not None:
        print("E bootloader: " + label + " is not bootable: " + why)
    return why is None


def choose():
    d = otadata()
    has_otadata = any(r[0] == "otadata" for r in table())
    otas = ota_labels()
    first = default_boot()
    if not has_otadata or not otas:
        d = {"running": first}
        if first is None or not _bootable(first):
            print("E bootloader: no bootable app partition")
            d["running"] = None
        save_otadata(d)
        return d["running"]
    states = d.setdefault("state", {})
    boot = d.get("boot") or first
    st = states.get(boot)
    if st == "new":
        states[boot] = "pending_verify"
    elif st == "pending_verify":
        others = [x for x in otas if x != boot and states.get(x) not in BAD]
        back = others[0] if others else first
        print("E bootloader: " + boot + " not confirmed; rolling back to " + back)
        states[boot] = "aborted"
        boot = d["boot"] = back
    elif st in BAD:
        boot = d["boot"] = first
    if not _bootable(boot):
        if states.get(boot) == "pending_verify":
            states[boot] = "aborted"
        cands = [first] + [x for x in otas if x != first]
        boot = None
        for x in cands:
            if states.get(x) not in BAD and x != d.get("boot") and _bootable(x):
                boot = x
                break
        if boot is None:
            print("E bootloader: no bootable app partition")
    d["running"] = boot
    save_otadata(d)
    return boot


if choose() is None:
    raise SystemExit(1)  # nothing to boot: the kit stays off, as a board would hang
