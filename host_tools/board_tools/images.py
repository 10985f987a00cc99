"""ESP-IDF flash images as data: which chip an image is for, the partition table inside
a merged image, and the table a board definition describes.

Formats (ESP-IDF "App image format" and "Partition tables"):

- an image starts with magic ``0xE9``; its extended header holds the chip id at byte 12
  (little-endian u16);
- the partition table sits at flash offset 0x8000: 32-byte entries (magic ``AA 50``,
  type, subtype, offset, size, 16-byte label, flags), then an MD5 entry (``EB EB``,
  14 x ``FF``, the MD5 of the entries), then ``FF`` padding;
- a *merged* image (MicroPython's downloads for ESP32 boards) is written at the chip's
  bootloader offset and carries bootloader, table and app at their offsets from there.

    chip = image_chip(data)                       # "esp32"
    table = table_in_merged(data, chip)           # [Partition, ...] or None
    differences(table, board.partitions)          # [] when they agree
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

from host_tools.boards.partitions import TABLE_OFFSET, Partition

IMAGE_MAGIC = 0xE9
ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
TABLE_MAX = 0xC00  # ESP-IDF: the table and its MD5 entry fit in 3 KiB

CHIP_IDS = {
    0x0000: "esp32",
    0x0002: "esp32s2",
    0x0005: "esp32c3",
    0x0009: "esp32s3",
    0x000C: "esp32c2",
    0x000D: "esp32c6",
    0x0010: "esp32h2",
}
# Where the second-stage bootloader goes (and so where a merged image starts).
BOOTLOADER_OFFSET = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0}
# esptool's CHIP_NAME -> thingkit's chip name.
ESPTOOL_NAMES = {
    "ESP32": "esp32",
    "ESP32-S2": "esp32s2",
    "ESP32-S3": "esp32s3",
    "ESP32-C3": "esp32c3",
}

TYPES = {"app": 0x00, "data": 0x01}
APP_SUBTYPES = {"factory": 0x00, "test": 0x20} | {f"ota_{i}": 0x10 + i for i in range(16)}
DATA_SUBTYPES = {
    "ota": 0x00,
    "phy": 0x01,
    "nvs": 0x02,
    "coredump": 0x03,
    "nvs_keys": 0x04,
    "efuse": 0x05,
    "undefined": 0x06,
    "esphttpd": 0x80,
    "fat": 0x81,
    "spiffs": 0x82,
    "littlefs": 0x83,
}


def image_chip(data: bytes) -> str | None:
    """The chip an ESP-IDF image (bootloader or app) is built for; None if ``data`` does
    not start with an image header."""
    if len(data) < 24 or data[0] != IMAGE_MAGIC:
        return None
    chip_id = struct.unpack_from("<H", data, 12)[0]
    return CHIP_IDS.get(chip_id, f"chip id {chip_id}")


def image_header(chip: str) -> bytes:
    """A 24-byte image header for ``chip`` (DIO, 4MB, 40 MHz), as a build writes it."""
    chip_id = {v: k for k, v in CHIP_IDS.items()}[chip]
    return (
        struct.pack("<BBBBI", IMAGE_MAGIC, 1, 2, 0x20, 0x40080000)
        + struct.pack("<B3sHB13s", 0xEE, b"\0\0\0", chip_id, 0, b"\0" * 13)[:16]
    )


def _subtype_code(ptype: str, subtype: str) -> int:
    table = APP_SUBTYPES if ptype == "app" else DATA_SUBTYPES
    if subtype in table:
        return table[subtype]
    return int(subtype, 0)


def _subtype_name(ptype: int, code: int) -> str:
    table = APP_SUBTYPES if ptype == 0 else DATA_SUBTYPES
    for name, c in table.items():
        if c == code:
            return name
    return f"0x{code:02x}"


def table_bin(parts: Iterable[Partition]) -> bytes:
    """The binary partition table (entries, MD5 entry, ``FF`` padding to 3 KiB)."""
    out = bytearray()
    for p in parts:
        label = p.name.encode()[:16].ljust(16, b"\0")
        out += ENTRY_MAGIC + struct.pack(
            "<BBII16sI",
            TYPES[p.type],
            _subtype_code(p.type, p.subtype),
            p.offset,
            p.size,
            label,
            0,
        )
    out += MD5_MAGIC + b"\xff" * 14 + hashlib.md5(bytes(out)).digest()
    return bytes(out).ljust(TABLE_MAX, b"\xff")


def parse_table(data: bytes) -> list[Partition] | None:
    """The partitions of a binary table; None if ``data`` does not start with one or its
    MD5 entry does not match."""
    parts, i = [], 0
    while i + 32 <= len(data):
        entry = data[i : i + 32]
        if entry[:2] == MD5_MAGIC:
            if hashlib.md5(data[:i]).digest() != entry[16:32]:
                return None
            return parts or None
        if entry[:2] != ENTRY_MAGIC:
            return parts or None  # tables without an MD5 entry (very old IDF)
        ptype, sub, offset, size, label, _flags = struct.unpack_from("<BBII16sI", entry, 2)
        tname = {0: "app", 1: "data"}.get(ptype, f"0x{ptype:02x}")
        parts.append(
            Partition(
                label.rstrip(b"\0").decode(errors="replace"),
                tname,
                _subtype_name(ptype, sub),
                offset,
                size,
            )
        )
        i += 32
    return None


def table_in_merged(data: bytes, chip: str) -> list[Partition] | None:
    """The partition table inside a merged image for ``chip``, or None (an app image)."""
    at = TABLE_OFFSET - BOOTLOADER_OFFSET[chip]
    if at < 0 or len(data) < at + 32:
        return None
    return parse_table(data[at : at + TABLE_MAX])


def differences(image: list[Partition], board: Iterable[Partition]) -> list[str]:
    """How an image's partition table differs from a board's; [] when they agree."""
    want = {p.name: p for p in board}
    have = {p.name: p for p in image}
    out = []
    for name, b in want.items():
        i = have.get(name)
        if i is None:
            out.append(f"'{name}' ({b.type}/{b.subtype} at 0x{b.offset:x}) missing in the image")
        elif (i.type, i.subtype, i.offset, i.size) != (b.type, b.subtype, b.offset, b.size):
            out.append(
                f"'{name}': image {i.type}/{i.subtype} 0x{i.offset:x}+0x{i.size:x}, "
                f"board {b.type}/{b.subtype} 0x{b.offset:x}+0x{b.size:x}"
            )
    for name in have.keys() - want.keys():
        i = have[name]
        out.append(f"'{name}' ({i.type}/{i.subtype} at 0x{i.offset:x}) not in the board")
    return out


def merge(base: int, regions: list[tuple[int, bytes]]) -> bytes:
    """One image starting at flash offset ``base`` holding each (offset, data), gaps
    filled with ``FF`` (what ``esptool merge-bin`` makes)."""
    end = max(off + len(d) for off, d in regions)
    out = bytearray(b"\xff" * (end - base))
    for off, d in regions:
        out[off - base : off - base + len(d)] = d
    return bytes(out)
