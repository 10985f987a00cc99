"""MicroPython's stock ESP32 images as data: their partition tables, per release.

``boards/micropython/stock_tables.json`` lists the tables MicroPython ships (``partitions-4MiB.csv``,
``partitions-4MiBplus.csv``, ``partitions-4MiB-ota.csv``, ...) and which table each stock
download (``ESP32_GENERIC``, its ``-OTA`` variant, ``ESP32_GENERIC_S3``, ...) carries at
each supported release. A board definition names its image::

    "image": {"micropython_board": "ESP32_GENERIC", "variant": "ota", "romfs": false,
              "frozen": {"umqtt.simple": "1.7.0"}}

and this module answers what follows from it::

    accepted(board)            # {"4MiB-ota-v1.24": ["v1.24.1", "v1.25.0"], "4MiB-ota": [...]}
    identify(table)            # [Usage("4MiB", "ESP32_GENERIC", "plain", "v1.24.1"), ...]
    filesystem(board)          # Partition("vfs", ..., 0x310000, 0xF0000): from v1.26 the
                               # table has no vfs; MicroPython makes it at boot
    download_name(board)       # "ESP32_GENERIC-OTA"

From v1.26.0 the ``vfs`` partition is no longer in the table: at boot MicroPython creates
it from the end of the app partition (``factory``, or ``ota_1`` on the -OTA image) to the
end of the flash it detects. ``filesystem`` computes it for the board's flash size.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from host_tools.boards.issues import Issues
from host_tools.boards.partitions import Partition, flash_bytes, parse_int
from host_tools.paths import BOARDS

STOCK_FILE = BOARDS / "micropython" / "stock_tables.json"
VARIANTS = ("plain", "ota")
IMAGE_KEYS = ("micropython_board", "variant", "romfs", "frozen")


@dataclass(frozen=True)
class StockTable:
    """One partition table: MicroPython's (``csv`` is its file name) or thingkit's custom one.

    Attributes:
        key: the name in stock_tables.json (``4MiBplus``).
        csv: the CSV file it was read from.
        partitions: its rows.
        runtime_vfs_after: the app partition after which MicroPython creates ``vfs`` at
            boot, or None when the table holds the vfs itself.
        custom: thingkit's own table (a custom image), not a micropython.org download.
    """

    key: str
    csv: str
    partitions: tuple[Partition, ...]
    runtime_vfs_after: str | None = None
    custom: bool = False

    def runtime_vfs(self, flash: int) -> Partition | None:
        """The ``vfs`` MicroPython creates at boot on a flash of ``flash`` bytes, or None."""
        if self.runtime_vfs_after is None:
            return None
        app = next(p for p in self.partitions if p.name == self.runtime_vfs_after)
        return Partition("vfs", "data", "fat", app.end, flash - app.end)


@dataclass(frozen=True)
class Usage:
    """A stock image that carries a table: table key, MicroPython board, variant, release."""

    table: str
    micropython_board: str
    variant: str
    release: str

    def label(self) -> str:
        suffix = "-OTA" if self.variant == "ota" else ""
        return f"{self.release} {self.micropython_board}{suffix}"


def _parts(rows: list[dict]) -> tuple[Partition, ...]:
    return tuple(
        Partition(
            r["name"], r["type"], str(r["subtype"]), parse_int(r["offset"]), parse_int(r["size"])
        )
        for r in rows
    )


@functools.cache
def data() -> dict:
    """stock_tables.json, parsed."""
    return json.loads(STOCK_FILE.read_text(encoding="utf-8"))


@functools.cache
def tables() -> dict[str, StockTable]:
    """Every known table by key."""
    out = {}
    for key, t in data()["tables"].items():
        after = (t.get("runtime_vfs") or {}).get("after")
        out[key] = StockTable(key, t["csv"], _parts(t["partitions"]), after, bool(t.get("custom")))
    return out


def releases() -> list[str]:
    return list(data()["releases"])


def newest() -> str:
    return data()["newest"]


def images() -> dict[str, dict]:
    """MicroPython board name -> its entry (chip, flash_offset, download names, tables)."""
    return data()["images"]


def usages() -> list[Usage]:
    """Every (table, image, variant, release) the data lists."""
    return [
        Usage(key, mpb, variant, rel)
        for mpb, img in images().items()
        for variant, by_rel in img["tables"].items()
        for rel, key in by_rel.items()
    ]


def _same(a: list[Partition] | tuple[Partition, ...], b: tuple[Partition, ...]) -> bool:
    key = lambda p: (p.name, p.type, p.subtype, p.offset, p.size)
    return sorted(map(key, a)) == sorted(map(key, b))


def table_key(parts: list[Partition] | tuple[Partition, ...]) -> str | None:
    """The key of the known table equal to ``parts`` (order ignored), or None."""
    for key, t in tables().items():
        if _same(parts, t.partitions):
            return key
    return None


def identify(parts: list[Partition] | tuple[Partition, ...]) -> list[Usage]:
    """The stock images whose table is ``parts``; [] for an unknown or custom table."""
    key = table_key(parts)
    return [u for u in usages() if u.table == key]


def image_of(board_data: dict) -> dict | None:
    """A board's ``image`` object, or None."""
    img = board_data.get("image")
    return img if isinstance(img, dict) else None


def accepted(board_data: dict) -> dict[str, list[str]]:
    """Table key -> releases, for every table the board's image may carry.

    A ROMFS image is thingkit's custom image: only the custom ROMFS table. A stock image:
    the table its MicroPython board and variant have at each supported release.
    """
    img = image_of(board_data)
    if img is None:
        return {}
    if img.get("romfs") is True:
        return {data()["romfs_table"]: ["custom"]}
    entry = images().get(img.get("micropython_board"), {})
    out: dict[str, list[str]] = {}
    for rel, key in entry.get("tables", {}).get(img.get("variant"), {}).items():
        out.setdefault(key, []).append(rel)
    return out


def expected_table(board_data: dict) -> StockTable | None:
    """The table the board's image has at the newest release (its ``partitions``)."""
    img = image_of(board_data)
    if img is None:
        return None
    if img.get("romfs") is True:
        return tables()[data()["romfs_table"]]
    entry = images().get(img.get("micropython_board"), {})
    key = entry.get("tables", {}).get(img.get("variant"), {}).get(newest())
    return tables().get(key) if key else None


def filesystem(board_data: dict, parts: tuple[Partition, ...]) -> Partition | None:
    """The board's filesystem partition: the table's row, else the run-time ``vfs``."""
    name = (board_data.get("filesystem") or {}).get("partition")
    for p in parts:
        if p.name == name:
            return p
    table = expected_table(board_data)
    flash = flash_bytes(board_data.get("flash_size"))
    if table is None or flash is None or name != "vfs":
        return None
    return table.runtime_vfs(flash)


def download_name(board_data: dict) -> str:
    """The micropython.org download for the board (``ESP32_GENERIC-OTA``), or a pointer to
    the custom image."""
    img = image_of(board_data) or {}
    if img.get("romfs") is True:
        return "thingkit's custom image with ROMFS (build it: docs/custom_image.rst)"
    entry = images().get(img.get("micropython_board"), {})
    names = entry.get("download", {})
    if img.get("variant") == "ota":
        return names.get("ota", f"{img.get('micropython_board')}-OTA")
    if board_data.get("psram") is True:
        if board_data.get("octal_spi") is True and "octal_psram" in names:
            return names["octal_psram"]
        return names.get("psram", names.get("plain", str(img.get("micropython_board"))))
    return names.get("plain", str(img.get("micropython_board")))


def file_pattern(board_data: dict) -> str:
    """The file to download: ``ESP32_GENERIC-OTA-<date>-v1.28.0.bin``."""
    name = download_name(board_data)
    if " " in name:
        return name
    return f"{name}-<date>-{newest()}.bin"


def features(board_data: dict) -> dict[str, bool]:
    """Feature -> whether the board's table supports it (``ota-firmware``, ``ota-app``)."""
    table = expected_table(board_data)
    names = {p.name for p in table.partitions} if table else set()
    return {f: set(spec["needs"]) <= names for f, spec in data()["features"].items()}


def _first_difference(have: list[Partition], want: tuple[Partition, ...]) -> str:
    by_name = {p.name: p for p in have}
    for w in want:
        h = by_name.pop(w.name, None)
        if h is None:
            return f"no '{w.name}' ({w.type}/{w.subtype} 0x{w.offset:x}+0x{w.size:x})"
        if (h.type, h.subtype, h.offset, h.size) != (w.type, w.subtype, w.offset, w.size):
            return (
                f"'{w.name}' is {h.type}/{h.subtype} 0x{h.offset:x}+0x{h.size:x}, "
                f"the image has {w.type}/{w.subtype} 0x{w.offset:x}+0x{w.size:x}"
            )
    extra = next(iter(by_name.values()), None)
    return f"'{extra.name}' is not in the image's table" if extra else "same rows"


def check_image(board_data: dict, parts: list[Partition], issues: Issues) -> Partition | None:
    """Check a board's ``image`` object and that ``partitions`` is that image's table at
    the newest release; returns the run-time ``vfs`` the image creates, if any."""
    img = board_data.get("image")
    where = "image"
    if not isinstance(img, dict):
        issues.error(where, 'must be an object: {"micropython_board": ..., "variant": ...}')
        return None
    for key in IMAGE_KEYS:
        if key not in img:
            issues.error(where, f"missing field '{key}'")
    for key in img:
        if key not in IMAGE_KEYS:
            issues.warning(where, f"unknown field '{key}' (ignored)")
    if any(i.level == "error" and i.where == where for i in issues):
        return None
    mpb, variant, romfs, frozen = (img[k] for k in IMAGE_KEYS)
    known = images()
    if not isinstance(mpb, str) or mpb not in known:
        issues.error(where, f"micropython_board {mpb!r} must be one of {', '.join(known)}")
        return None
    if variant not in VARIANTS:
        issues.error(where, f"variant {variant!r} must be plain or ota")
        return None
    if not isinstance(romfs, bool):
        issues.error(where, "romfs must be true or false")
        return None
    if not (isinstance(frozen, dict) and all(isinstance(v, str) for v in frozen.values())):
        issues.error(where, 'frozen must be an object of module -> version ("1.7.0")')
        return None
    chip = board_data.get("chip")
    image_chip = known[mpb]["chip"]
    if (
        isinstance(chip, str)
        and chip != image_chip
        and not (chip == "sim" and image_chip == "esp32")
    ):
        issues.error(where, f"{mpb} is an image for {image_chip}, the board is {chip}")
    if romfs and variant == "ota":
        issues.error(where, "the ROMFS table has no OTA slots; use variant plain with romfs")
        return None
    if not romfs and variant not in known[mpb]["tables"]:
        issues.error(where, f"MicroPython publishes no -OTA image of {mpb}")
        return None
    if not romfs and frozen != known[mpb].get("frozen", {}):
        issues.error(
            where,
            f"frozen must be {json.dumps(known[mpb].get('frozen', {}))}: what {mpb} {newest()} "
            "freezes that thingkit also ships",
        )
    table = expected_table(board_data)
    if table is None:
        return None
    if parts and not _same(parts, table.partitions):
        what = "thingkit's ROMFS image" if romfs else f"{download_name(board_data)} {newest()}"
        issues.error(
            "partitions",
            f"must be the table of {what} ({table.csv}): {_first_difference(parts, table.partitions)}",
        )
    flash = flash_bytes(board_data.get("flash_size"))
    return table.runtime_vfs(flash) if flash else None
