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
    ok, line = judge_table(board, table)          # which stock table, and may the board take it
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

from host_tools.boards import stock
from host_tools.boards.partitions import TABLE_OFFSET, Partition
from host_tools.boards.registry import Board

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


def _span(p: Partition) -> str:
    return f"0x{p.offset:x}+0x{p.size:x}"


def describe_table(table: list[Partition], prefer: str | None = None) -> str:
    """``partitions-4MiB.csv (v1.24.1/v1.25.0 ESP32_GENERIC)`` for a known table, else
    ``a partition table that is none of MicroPython's (...)``."""
    key = stock.table_key(table)
    if key is None:
        rows = ", ".join(f"{p.name} {_span(p)}" for p in table)
        return f"a partition table that is none of MicroPython's stock tables ({rows})"
    t = stock.tables()[key]
    if t.custom:
        return f"thingkit's custom table {t.csv}"
    uses = stock.identify(table)
    boards = sorted({u.micropython_board for u in uses}, key=lambda b: b != prefer)
    first = [u for u in uses if u.micropython_board == boards[0]]
    rels = "/".join(u.release for u in first)
    name = first[0].label().split(" ", 1)[1]
    more = f" and {len(boards) - 1} other board(s)" if len(boards) > 1 else ""
    return f"{t.csv} ({rels} {name}{more})"


def table_filesystem(board: Board, table: list[Partition]) -> Partition | None:
    """The filesystem partition ``table`` gives the board: its row, or the ``vfs`` a v1.26+
    image creates at boot on the board's flash."""
    name = board.data["filesystem"]["partition"]
    row = next((p for p in table if p.name == name), None)
    if row is not None:
        return row
    key = stock.table_key(table)
    if key is None or not board.flash_bytes:
        return None
    return stock.tables()[key].runtime_vfs(board.flash_bytes)


def judge_table(board: Board, table: list[Partition]) -> tuple[bool, str]:
    """Whether ``board`` accepts a merged image with partition table ``table``, as one line.

    A board with an ``image`` object accepts the stock tables its MicroPython board and
    variant carry at the supported releases, provided the filesystem lands where the
    board's provisioning images go. The refusal says what to flash instead. A board file
    without ``image`` needs its own ``partitions`` exactly.
    """
    if not board.image:
        diff = differences(table, board.partitions)
        if not diff:
            return True, f"partition table matches board {board.id}"
        more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
        return False, (
            f"the image's partition table is not board {board.id}'s: {'; '.join(diff[:3])}{more}"
        )
    mpb = board.image.get("micropython_board")
    have = describe_table(table, prefer=mpb)
    instead = f"flash {stock.file_pattern(board.data)} from micropython.org"
    if board.image.get("romfs"):
        instead = f"flash {stock.download_name(board.data)}"
    key = stock.table_key(table)
    accepted = board.accepted_tables()
    if key not in accepted:
        variant = board.image.get("variant")
        has_ota = any(p.type == "data" and p.subtype == "ota" for p in table)
        need = "the -OTA image" if variant == "ota" else "its stock image"
        if variant != "ota" and has_ota:
            need = "the image without OTA slots"
        if board.image.get("romfs"):
            need = "thingkit's ROMFS image"
        return False, f"this image has {have}; board {board.id} needs {need}: {instead}"
    fs, want = table_filesystem(board, table), board.filesystem()
    if fs is None or (fs.offset, fs.size) != (want.offset, want.size):
        got = _span(fs) if fs else "missing"
        return False, (
            f"this image has {have}: its filesystem is {got}, board {board.id}'s is "
            f"{_span(want)} (where its provisioning images go); {instead}"
        )
    made = " (created at boot)" if not any(p.name == fs.name for p in table) else ""
    return True, (
        f"partition table {have} accepted for board {board.id}; "
        f"filesystem {fs.name} {_span(fs)}{made}"
    )
