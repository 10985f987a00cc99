"""Partition table rules: aligned, inside the flash, no overlaps, complete OTA sets.

The layout follows ESP-IDF: the partition table itself sits at 0x8000 (one 4 KiB sector),
app partitions start on 64 KiB boundaries, other partitions on 4 KiB boundaries, and
``otadata`` is two sectors. MicroPython mounts its filesystem from the ``vfs`` partition,
which from v1.26 it creates at boot when the table has none (see host_tools.boards.stock).
A table needs otadata, ota_0 and ota_1 only for firmware-kind OTA (the -OTA image).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from host_tools.boards.issues import Issues

TABLE_OFFSET = 0x8000
FIRST_OFFSET = 0x9000
APP_ALIGN = 0x10000
SECTOR = 0x1000
OTADATA_SIZE = 0x2000
FILESYSTEMS = frozenset({"littlefs", "fat"})
_APP_SUBTYPES = {"factory", "test"} | {f"ota_{i}" for i in range(16)}


@dataclass(frozen=True)
class Partition:
    """One row of the partition table."""

    name: str
    type: str
    subtype: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        """First byte after the partition."""
        return self.offset + self.size

    def span(self) -> str:
        return f"0x{self.offset:x}-0x{self.end - 1:x}"


def parse_int(value: object) -> int | None:
    """An int from a JSON int or a ``"0x..."``/decimal string; None if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def flash_bytes(flash_size: object) -> int | None:
    """``"4MB"`` -> 4194304; None if the text is not ``<n>MB``."""
    m = re.fullmatch(r"(\d+)MB", flash_size) if isinstance(flash_size, str) else None
    return int(m.group(1)) * 1024 * 1024 if m and int(m.group(1)) > 0 else None


def read_partitions(raw: list, issues: Issues) -> list[Partition]:
    """The well-formed rows of ``raw``; each malformed row becomes an error."""
    out: list[Partition] = []
    for i, row in enumerate(raw):
        if not isinstance(row, dict):
            issues.error(f"partitions[{i}]", "must be an object")
            continue
        name = row.get("name")
        where = f"partition '{name}'" if isinstance(name, str) and name else f"partitions[{i}]"
        missing = [k for k in ("name", "type", "subtype", "offset", "size") if k not in row]
        if missing:
            issues.error(where, f"missing field '{missing[0]}'")
            continue
        if not (isinstance(name, str) and name and isinstance(row["subtype"], (str, int))):
            issues.error(where, "name and subtype must be text")
            continue
        offset, size = parse_int(row["offset"]), parse_int(row["size"])
        if offset is None or size is None or offset < 0 or size <= 0:
            issues.error(where, "offset and size must be non-negative numbers (size > 0)")
            continue
        ptype, subtype = row["type"], row["subtype"]
        if ptype not in ("app", "data"):
            issues.error(where, f"type '{ptype}' must be app or data")
            continue
        if ptype == "app" and str(subtype) not in _APP_SUBTYPES:
            issues.error(where, f"app subtype '{subtype}' must be factory, test or ota_0..ota_15")
            continue
        out.append(Partition(name, ptype, str(subtype), offset, size))
    return out


def check_partitions(
    parts: list[Partition],
    flash: int | None,
    flash_size: str,
    issues: Issues,
    require_ota: bool = False,
) -> None:
    """Layout rules for well-formed rows ``parts`` on a flash of ``flash`` bytes.

    ``require_ota``: the board needs firmware-kind OTA (otadata, ota_0, ota_1); without
    it an OTA set is checked only when the table has part of one.
    """
    seen: set[str] = set()
    for p in parts:
        where = f"partition '{p.name}'"
        if p.name in seen:
            issues.error(where, "duplicate partition name")
        seen.add(p.name)
        if p.offset < FIRST_OFFSET:
            issues.error(
                where,
                f"offset 0x{p.offset:x} is inside the bootloader or partition table "
                f"(the table is at 0x{TABLE_OFFSET:x}); partitions start at 0x{FIRST_OFFSET:x}",
            )
        if p.type == "app" and p.offset % APP_ALIGN:
            issues.error(
                where, f"app partition offset 0x{p.offset:x} is not aligned to 64 KiB (0x10000)"
            )
        elif p.offset % SECTOR:
            issues.error(where, f"offset 0x{p.offset:x} is not aligned to 4 KiB (0x1000)")
        if p.size % SECTOR:
            issues.error(where, f"size 0x{p.size:x} is not a multiple of 4 KiB (0x1000)")
        if flash is not None and p.end > flash:
            issues.error(where, f"ends at 0x{p.end:x}, beyond the {flash_size} flash (0x{flash:x})")
    ordered = sorted(parts, key=lambda p: p.offset)
    for a, b in itertools.pairwise(ordered):
        if b.offset < a.end:
            issues.error(
                f"partition '{b.name}'",
                f"{b.span()} overlaps partition '{a.name}' ({a.span()})",
            )
    _check_roles(parts, issues, require_ota)


def _check_roles(parts: list[Partition], issues: Issues, require_ota: bool) -> None:
    """OTA needs otadata + ota_0 + ota_1; Wi-Fi and MicroPython need nvs."""
    need = "OTA needs otadata, ota_0 and ota_1"
    otadata = [p for p in parts if p.type == "data" and p.subtype == "ota"]
    ota_parts = otadata or [p for p in parts if p.type == "app" and p.subtype.startswith("ota_")]
    if not (require_ota or ota_parts):
        _check_nvs(parts, issues)
        return
    if not otadata:
        issues.error("partitions", f"no otadata partition (type data, subtype ota); {need}")
    for p in otadata:
        if p.size != OTADATA_SIZE:
            issues.error(
                f"partition '{p.name}'",
                f"otadata size 0x{p.size:x} must be 0x{OTADATA_SIZE:x} (two 4 KiB sectors)",
            )
    slots = {}
    for slot in ("ota_0", "ota_1"):
        found = [p for p in parts if p.type == "app" and p.subtype == slot]
        if not found:
            issues.error("partitions", f"no {slot} app partition; {need}")
        else:
            slots[slot] = found[0]
    if len(slots) == 2 and slots["ota_0"].size != slots["ota_1"].size:
        issues.warning(
            "partitions",
            "ota_0 and ota_1 differ in size; an image that fits one may not fit the other",
        )
    _check_nvs(parts, issues)


def _check_nvs(parts: list[Partition], issues: Issues) -> None:
    if not any(p.type == "data" and p.subtype == "nvs" for p in parts):
        issues.error(
            "partitions",
            "no nvs partition (type data, subtype nvs); Wi-Fi and MicroPython need one",
        )


def check_filesystem(
    fs: object,
    parts: list[Partition],
    issues: Issues,
    runtime: Partition | None = None,
    image_failed: bool = False,
) -> None:
    """``filesystem`` names an existing data partition and a known filesystem type.

    ``runtime``: the partition MicroPython creates at boot (the v1.26+ ``vfs``), which the
    filesystem may name although the table does not hold it. ``image_failed``: the board's
    ``image`` has errors already, so whether its table makes a vfs at boot is unknown.
    """
    if not isinstance(fs, dict):
        issues.error("filesystem", 'must be an object: {"partition": "vfs", "type": "littlefs"}')
        return
    name, fstype = fs.get("partition"), fs.get("type")
    if not isinstance(fstype, str) or fstype not in FILESYSTEMS:
        issues.error(
            "filesystem", f"type {fstype!r} must be one of {', '.join(sorted(FILESYSTEMS))}"
        )
    match = [p for p in parts if p.name == name]
    if not match and (image_failed or (runtime is not None and runtime.name == name)):
        return
    if not match:
        issues.error("filesystem", f"partition {name!r} is not in partitions")
    elif match[0].type != "data":
        issues.error("filesystem", f"partition '{name}' is an app partition; it must be data")
