"""esp32.Partition on the virtual kit, following the kit's partition table.

The table is the board definition's ``"partitions"`` list ($TK_SIM_BOARD, the kit's
board-full.json): a stock ESP32_GENERIC table has one ``factory`` app and no OTA
partitions; the -OTA variant has otadata, ota_0 and ota_1. Each partition is a file
beside the kit ($TK_SIM_PARTS, outside the device filesystem, as flash partitions are
outside littlefs): ``part-<label>.bin`` holds the bytes written so far (no trailing
erased flash). ``otadata.json`` is the otadata partition (``boot``, per-image
``state``: new / pending_verify / valid / aborted) plus ``running``, the partition the
emulated bootloader (host_tools/kit/bootloader.py) chose at this boot.

As on a board (ports/esp32/esp32_partition.c, ESP-IDF's esp_ota_ops):

- ``Partition(Partition.RUNNING)`` is ``factory`` on a plain table, ota_0/ota_1 on -OTA;
- ``get_next_update()`` raises ``OSError(ENOENT)`` on a table without OTA partitions
  (esp_ota_get_next_update_partition returns NULL), as does an unknown label;
- ``set_boot()`` verifies the ESP-IDF app image in the partition (magic 0xE9, segment
  headers and lengths, checksum, the appended SHA-256 when the header says so) and
  refuses anything else with ``OSError(-5379, 'ESP_ERR_OTA_VALIDATE_FAILED')``, which is
  how check_esp_err raises ESP_ERR_OTA_VALIDATE_FAILED (0x1503);
- ``mark_app_valid_cancel_rollback()`` needs an otadata partition (ESP_ERR_NOT_FOUND
  otherwise).
Only what the update agent uses is emulated: info, readblocks/writeblocks (with offset),
ioctl (4 count, 5 size, 6 erase), set_boot, get_next_update, the two class constants.
"""
import json
import os

_BLOCK = 4096
ENOENT = 2
VALIDATE_FAILED = -0x1503  # ESP_ERR_OTA_VALIDATE_FAILED, negated as check_esp_err does
NOT_FOUND = -0x105  # ESP_ERR_NOT_FOUND
_SUBTYPES = {"factory": 0x00, "test": 0x20, "ota": 0x00, "phy": 0x01, "nvs": 0x02,
             "coredump": 0x03, "nvs_keys": 0x04, "fat": 0x81, "spiffs": 0x82}
_table = None


def _dir():
    return os.getenv("TK_SIM_PARTS") or "."


def table():
    """[(label, type 0 app / 1 data, subtype, offset, size)] of the kit's board."""
    global _table
    if _table is None:
        try:
            with open(os.getenv("TK_SIM_BOARD") or "board-full.json") as f:
                rows = json.load(f).get("partitions") or []
        except (OSError, ValueError):
            rows = []
        # No table in the board definition: the stock ESP32_GENERIC one (factory app).
        rows = rows or [{"name": "factory", "type": "app", "subtype": "factory",
                         "offset": "0x10000", "size": "0x1f0000"}]
        t = []
        for r in rows:
            st = r.get("subtype", "")
            if st.startswith("ota_"):
                sub = 0x10 + int(st[4:])
            else:
                sub = _SUBTYPES.get(st)
                if sub is None:
                    sub = int(st, 0)
            t.append((r["name"], 0 if r.get("type") == "app" else 1, sub,
                      int(r["offset"], 0), int(r["size"], 0)))
        _table = t
    return _table


def _find(label):
    for row in table():
        if row[0] == label:
            return row
    return None


def ota_labels():
    return [r[0] for r in table() if r[1] == 0 and 0x10 <= r[2] < 0x20]


def default_boot():
    """What the bootloader boots with no otadata: factory, else the first OTA slot."""
    for r in table():
        if r[1] == 0 and r[2] == 0:
            return r[0]
    otas = ota_labels()
    return otas[0] if otas else None


def otadata():
    try:
        with open(_dir() + "/otadata.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def save_otadata(d):
    p = _dir() + "/otadata.json"
    with open(p + ".tmp", "w") as f:
        json.dump(d, f)
    os.rename(p + ".tmp", p)


def path(label):
    return _dir() + "/part-" + label + ".bin"


_CHUNK = 256  # bytes read at a time while verifying (this runs in the firmware's heap)


def _xor(f, n, acc, buf):
    # XOR n bytes from f into acc, a chunk at a time as one integer (folded at the end).
    mv = memoryview(buf)
    while n > 0:
        k = f.readinto(mv[: min(n, _CHUNK)])
        if not k:
            raise ValueError("truncated segment")
        n -= k
        acc ^= int.from_bytes(mv[:k], "little")
    return acc


def _fold(v):
    # The XOR of all the bytes of v (up to _CHUNK bytes wide).
    bits = _CHUNK * 8
    while bits > 8:
        bits //= 2
        v = (v >> bits) ^ (v & ((1 << bits) - 1))
    return v


def image_problem(p):
    """None if the file at ``p`` holds a valid ESP-IDF app image, else why not."""
    import hashlib
    try:
        f = open(p, "rb")
    except OSError:
        return "no image (partition empty)"
    try:
        head = f.read(24)
        if len(head) < 24 or head[0] != 0xE9:
            return "invalid magic byte %s" % (head[:1].hex() or "none")
        nseg = head[1]
        if not 0 < nseg <= 16:
            return "invalid segment count %d" % nseg
        acc = 0
        pos = 24
        buf = bytearray(_CHUNK)
        for _ in range(nseg):
            sh = f.read(8)
            if len(sh) < 8:
                return "truncated segment header"
            n = int.from_bytes(sh[4:8], "little")
            if n > 16 * 1024 * 1024:
                return "segment length %d too large" % n
            try:
                acc = _xor(f, n, acc, buf)
            except ValueError as e:
                return str(e)
            pos += 8 + n
        acc = _fold(acc) ^ 0xEF
        f.read(15 - pos % 16)  # padding up to the checksum byte
        c = f.read(1)
        if len(c) < 1 or c[0] != acc:
            return "checksum mismatch"
        if head[23]:  # hash_appended: SHA-256 of everything before it
            end = f.tell()
            digest = f.read(32)
            f.seek(0)
            h = hashlib.sha256()
            mv = memoryview(buf)
            while end > 0:
                k = f.readinto(mv[: min(end, _CHUNK)])
                if not k:
                    return "truncated"
                h.update(mv[:k])
                end -= k
            if h.digest() != digest:
                return "SHA-256 mismatch"
        return None
    finally:
        f.close()


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, which):
        if which == Partition.RUNNING:
            which = otadata().get("running") or default_boot()
        elif which == Partition.BOOT:
            which = otadata().get("boot") or default_boot()
        elif not isinstance(which, str):
            raise ValueError
        row = _find(which) if which else None
        if row is None:
            raise OSError(ENOENT)
        self.label = which
        self.row = row
        self.path = path(which)

    def info(self):
        r = self.row
        return (r[1], r[2], r[3], r[4], r[0], False)

    def get_next_update(self):
        otas = ota_labels()
        if not otas:
            raise OSError(ENOENT)
        i = otas.index(self.label) + 1 if self.label in otas else 0
        return Partition(otas[i % len(otas)])

    def _open(self):
        try:
            return open(self.path, "r+b")
        except OSError:
            return open(self.path, "w+b")

    def readblocks(self, block, buf, offset=0):
        n = 0
        try:
            with open(self.path, "rb") as f:
                f.seek(block * _BLOCK + offset)
                n = f.readinto(buf) or 0
        except OSError:
            pass
        for i in range(n, len(buf)):
            buf[i] = 0xFF  # erased flash

    def writeblocks(self, block, buf, offset=None):
        at = block * _BLOCK + (offset or 0)
        if at + len(buf) > self.row[4]:
            raise OSError(28)  # past the partition's end
        with self._open() as f:
            f.seek(at)
            f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.row[4] // _BLOCK
        if op == 5:
            return _BLOCK
        if op == 6:  # erase one block
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
        if self.row[1] != 0:
            raise OSError(-0x102, "ESP_ERR_INVALID_ARG")
        why = image_problem(self.path)
        if why is not None:
            print("E esp_image: %s: %s" % (self.label, why))
            raise OSError(VALIDATE_FAILED, "ESP_ERR_OTA_VALIDATE_FAILED")
        d = otadata()
        if self.row[2] == 0:  # factory: otadata erased, the bootloader boots factory
            d.pop("boot", None)
        elif _find("otadata") is None:
            raise OSError(NOT_FOUND, "ESP_ERR_NOT_FOUND")
        else:
            d["boot"] = self.label
            d.setdefault("state", {})[self.label] = "new"
        _save_running(d)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        if _find("otadata") is None:
            raise OSError(NOT_FOUND, "ESP_ERR_NOT_FOUND")
        d = otadata()
        label = d.get("running") or default_boot()
        d.setdefault("state", {})[label] = "valid"
        save_otadata(d)


def _save_running(d):
    d.setdefault("running", otadata().get("running") or default_boot())
    save_otadata(d)
