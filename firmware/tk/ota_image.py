"""The ESP-IDF side of a firmware update: the partition table and the runtime's version.

A kind "firmware" update writes a MicroPython app image (an ESP-IDF ``.app-bin``, the
interpreter only) to the next OTA partition. That needs the -OTA image's partition table
(otadata, ota_0, ota_1); the stock ESP32_GENERIC table has one factory app and
``get_next_update()`` raises OSError(ENOENT) there. The version of the running
interpreter is the one in its image's app descriptor (esp_app_desc_t, right after the
image and first segment headers), read through esp32.Partition like ESP-IDF's
esp_ota_get_partition_description does: the same code on a board and on the virtual kit.

    nxt = ota_image.next_partition(hal)     # None: this table has no OTA partitions
    ota_image.running_version(hal)          # "v1.28.0" (None if no descriptor)
    ota_image.semver("v1.28.0")             # "1.28.0", the bundle manifest's form
"""
from micropython import const

_DESC_AT = const(0x20)  # image header (24 bytes) + first segment header (8 bytes)
_MAGIC = b"\x32\x54\xcd\xab"  # ESP_APP_DESC_MAGIC_WORD 0xABCD5432, little-endian


def _cstr(mv):
    b = bytes(mv)
    i = b.find(b"\0")
    return (b if i < 0 else b[:i]).decode()


def describe(part):
    """(version, project_name) from the app descriptor in ``part``, or None."""
    # magic (4), secure_version (4), reserved (8), version (32), project_name (32)
    buf = bytearray(80)
    try:
        part.readblocks(0, buf, _DESC_AT)
    except OSError:
        return None
    if bytes(buf[:4]) != _MAGIC:
        return None
    mv = memoryview(buf)
    try:
        return _cstr(mv[16:48]), _cstr(mv[48:80])
    except UnicodeError:
        return None


def release(P):
    """Drop the module that defines the board's Partition class if it was loaded from
    the filesystem for this task (on a board ``esp32`` is built in: nothing to drop)."""
    import sys
    name = getattr(P, "__module__", None)
    mods = sys.modules
    if name and name in mods:
        del mods[name]
        pkg, _, attr = name.rpartition(".")
        parent = mods.get(pkg)
        if parent is not None and attr in parent.__dict__:
            del parent.__dict__[attr]


def running_version(hal):
    """The running MicroPython image's version ("v1.28.0"), or None."""
    P = hal.partition()
    try:
        d = describe(P(P.RUNNING))
    except OSError:
        d = None
    release(P)
    return d[0] if d else None


def semver(v):
    """"v1.28.0" or "v1.25.0-preview.1.g0123" -> "1.28.0" / "1.25.0"; None if neither."""
    if not isinstance(v, str):
        return None
    s = v[1:] if v[:1] == "v" else v
    parts = []
    cur = ""
    for c in s:
        if "0" <= c <= "9":
            cur += c
        elif c == "." and cur and len(parts) < 2:
            parts.append(cur)
            cur = ""
        else:
            break
    if len(parts) != 2 or not cur:
        return None
    parts.append(cur)
    return "%d.%d.%d" % (int(parts[0]), int(parts[1]), int(parts[2]))


def next_partition(hal):
    """The partition a firmware update would write, or None on a table without OTA
    partitions (get_next_update raises OSError ENOENT there, as on a board)."""
    P = hal.partition()
    try:
        return P(P.RUNNING).get_next_update()
    except OSError:
        return None


def running_label(hal):
    P = hal.partition()
    try:
        return P(P.RUNNING).info()[4]
    except OSError:
        return "?"
    finally:
        release(P)
