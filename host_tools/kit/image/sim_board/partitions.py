"""esp32.Partition on the virtual kit: two OTA app partitions and otadata, as files.

The sim's "firmware image" is its ROMFS image (everything but main.py). The kit runner
(host_tools/kit/rom_boot.py) is the bootloader: it reads ``otadata.json``, applies
ESP-IDF's rollback rule and mounts the chosen image. The files live beside the kit
(``TK_SIM_PARTS``), outside the device filesystem, like partitions on a board:

    ota_0  -> romfs.img   (what ``kit install`` wrote)
    ota_1  -> ota_1.img
    otadata.json  {"boot": "ota_1", "running": "ota_0",
                   "state": {"ota_1": "new"|"pending_verify"|"valid"|"aborted"}}

Only what the update agent uses is emulated: RUNNING, get_next_update, info,
readblocks/writeblocks (with offset), ioctl (4 count, 5 size, 6 erase), set_boot,
mark_app_valid_cancel_rollback. An image file holds the bytes written so far (no
trailing erased flash), so the boot step reads no more than the image.
"""
import json
import os

_SIZE = 1024 * 1024  # each OTA app partition
_BLOCK = 4096
_FILES = {"ota_0": "romfs.img", "ota_1": "ota_1.img"}


def _dir():
    return os.getenv("TK_SIM_PARTS") or ""


def _otadata():
    try:
        with open(_dir() + "/otadata.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _save(d):
    p = _dir() + "/otadata.json"
    with open(p + ".tmp", "w") as f:
        json.dump(d, f)
    os.rename(p + ".tmp", p)


def running_label():
    return _otadata().get("running") or "ota_0"


def ota_state(label):
    """The emulated esp_ota_get_state_partition(): 'new', 'pending_verify', ... or None."""
    return _otadata().get("state", {}).get(label)


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0

    def __init__(self, which):
        if which == Partition.RUNNING:
            which = running_label()
        elif which == Partition.BOOT:
            which = _otadata().get("boot") or "ota_0"
        if which not in _FILES:
            raise ValueError("no partition %r" % which)
        self.label = which
        self.path = _dir() + "/" + _FILES[which]

    def info(self):
        n = 0 if self.label == "ota_0" else 1
        return (0, 0x10 + n, 0x10000 + n * _SIZE, _SIZE, self.label, False)

    def get_next_update(self):
        return Partition("ota_1" if self.label == "ota_0" else "ota_0")

    def _open(self):
        try:
            return open(self.path, "r+b")
        except OSError:
            return open(self.path, "w+b")

    def readblocks(self, block, buf, offset=0):
        with open(self.path, "rb") as f:
            f.seek(block * _BLOCK + offset)
            n = f.readinto(buf) or 0
        for i in range(n, len(buf)):
            buf[i] = 0xFF  # erased flash

    def writeblocks(self, block, buf, offset=None):
        at = block * _BLOCK + (offset or 0)
        if at + len(buf) > _SIZE:
            raise OSError(28)  # ENOSPC: past the partition's end
        with self._open() as f:
            f.seek(at)
            f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return _SIZE // _BLOCK
        if op == 5:
            return _BLOCK
        if op == 6:  # erase one block: drop what was written from there on
            self._erase_from(arg * _BLOCK)
            return 0
        return None

    def _erase_from(self, at):
        # Erasing block 0 starts a new image: the file goes (it holds only what was
        # written). Any other block reads back as 0xFF, as erased flash does.
        if at == 0:
            try:
                os.remove(self.path)
            except OSError:
                pass
            return
        try:
            size = os.stat(self.path)[6]
        except OSError:
            return
        if at < size:
            with open(self.path, "r+b") as f:
                f.seek(at)
                f.write(b"\xff" * min(_BLOCK, size - at))

    def set_boot(self):
        d = _otadata()
        d["boot"] = self.label
        d.setdefault("state", {})[self.label] = "new"
        d.setdefault("running", running_label())
        _save(d)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        d = _otadata()
        label = d.get("running") or "ota_0"
        d.setdefault("state", {})[label] = "valid"
        _save(d)
