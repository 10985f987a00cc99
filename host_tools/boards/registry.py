"""Boards by id or path: load, list, and the component list App #2 and the validator use.

Usage::

    board = load_board("m5stack-core2")          # or a path to a .json file
    board.chip, board.filesystem_offset()         # "esp32", 0x200000 (the run-time vfs)
    [c["id"] for c in components(board)]          # ["mcu_temp", "imu", "power", "rtc"]
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.boards import stock
from host_tools.boards.issues import Issues
from host_tools.boards.partitions import Partition, flash_bytes, parse_int
from host_tools.boards.schema import check_file, shown
from host_tools.errors import UserError
from host_tools.paths import BOARDS


@dataclass(frozen=True)
class Board:
    """A checked board definition.

    Attributes:
        id: the board id (the file name without ``.json``).
        name: a human name.
        chip: ``esp32``, ``esp32s3``, ``esp32c3`` or ``sim``.
        flash_size: as written (``"4MB"``).
        psram: the module has PSRAM.
        partitions: the partition table, in file order.
        buses: bus name -> bus object.
        components: the component objects, in file order.
        data: the whole file as parsed (deployed to the device as ``board.json``).
        path: where it was loaded from.
    """

    id: str
    name: str
    chip: str
    flash_size: str
    psram: bool
    partitions: tuple[Partition, ...]
    buses: dict
    components: tuple[dict, ...]
    data: dict = field(repr=False)
    path: Path | None = None

    @property
    def flash_bytes(self) -> int:
        return flash_bytes(self.flash_size) or 0

    def partition(self, name: str) -> Partition:
        for p in self.partitions:
            if p.name == name:
                return p
        raise UserError(f"board {self.id} has no partition '{name}'", where=self._where())

    @property
    def image(self) -> dict:
        """The MicroPython image the board runs (``micropython_board``, ``variant``,
        ``romfs``, ``frozen``); {} for a board file without one."""
        return self.data.get("image") or {}

    def filesystem(self) -> Partition:
        """The filesystem partition: the table's row, or (v1.26+ stock tables) the ``vfs``
        MicroPython creates at boot from the end of the app partition to the end of flash."""
        fs = stock.filesystem(self.data, self.partitions)
        if fs is None:
            return self.partition(self.data["filesystem"]["partition"])
        return fs

    def filesystem_offset(self) -> int:
        """Flash offset of the filesystem partition (where a littlefs image is flashed)."""
        return self.filesystem().offset

    def filesystem_size(self) -> int:
        """Size of the filesystem partition in bytes (littlefs block count x 4096)."""
        return self.filesystem().size

    def filesystem_at_runtime(self) -> bool:
        """True when the filesystem partition is not in the table (MicroPython makes it)."""
        name = self.data["filesystem"]["partition"]
        return not any(p.name == name for p in self.partitions)

    def accepted_tables(self) -> dict[str, list[str]]:
        """Known table key -> releases, for every table this board's image may carry."""
        return stock.accepted(self.data)

    def supports(self, feature: str) -> bool:
        """``ota-firmware`` (needs the -OTA image) or ``ota-app`` (any table)."""
        return stock.features(self.data).get(feature, False)

    def component(self, cid: str) -> dict:
        for c in self.components:
            if c["id"] == cid:
                return c
        raise UserError(f"board {self.id} has no component '{cid}'", where=self._where())

    def _where(self) -> str:
        return shown(self.path) if self.path else ""

    def features(self) -> set[str]:
        """Component ids, kinds and drivers: what ``board_feature(...)`` markers test."""
        return {c[k] for c in self.components for k in ("id", "kind", "driver")}

    def has(self, feature: str) -> bool:
        return feature in self.features()


def board_path(id_or_path: str | Path) -> Path:
    """``boards/<id>.json`` for an id; the path itself for anything that looks like one."""
    s = str(id_or_path)
    if s.endswith(".json") or "/" in s or "\\" in s:
        return Path(s)
    return BOARDS / f"{s}.json"


def board_files() -> list[Path]:
    """Every shipped board file, sorted by id."""
    return sorted(BOARDS.glob("*.json"))


def load_board(id_or_path: str | Path, check: bool = True) -> Board:
    """Load a board by id (``esp32-devkitc``) or path.

    Args:
        id_or_path: a board id or a path to a board file.
        check: run the full checker and refuse a board with errors.

    Raises:
        UserError: no such board, unreadable JSON, or (with ``check``) a board with errors.
    """
    path = board_path(id_or_path)
    if not path.is_file():
        known = ", ".join(p.stem for p in board_files()) or "(none)"
        raise UserError(f"no board {id_or_path}", f"known boards: {known}", shown(path))
    issues = check_file(path) if check else Issues(shown(path))
    if issues.errors:
        more = f" (and {len(issues.errors) - 1} more)" if len(issues.errors) > 1 else ""
        raise UserError(f"{issues.errors[0]}{more}", where="thingkit boards check")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read board {shown(path)}", str(exc)) from exc
    try:
        return _board(data, path)
    except (KeyError, TypeError, AttributeError) as exc:
        raise UserError(
            f"board {shown(path)} is malformed ({exc!r})", where="thingkit boards check"
        ) from exc


def _board(data: dict, path: Path) -> Board:
    parts = tuple(
        Partition(
            p["name"], p["type"], str(p["subtype"]), parse_int(p["offset"]), parse_int(p["size"])
        )
        for p in data.get("partitions", [])
    )
    return Board(
        id=data["id"],
        name=data.get("name", data["id"]),
        chip=data["chip"],
        flash_size=data["flash_size"],
        psram=bool(data.get("psram")),
        partitions=parts,
        buses=data.get("buses", {}),
        components=tuple(data.get("components", [])),
        data=data,
        path=path,
    )


def all_boards() -> list[Board]:
    """Every shipped board, checked."""
    return [load_board(p) for p in board_files()]


def list_boards() -> list[dict]:
    """One summary per shipped board file (id, chip, flash, psram, component ids), read
    without checking so a broken file still shows up (``ok`` False)."""
    out = []
    for p in board_files():
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            comps = [c.get("id", "?") for c in d.get("components", []) if isinstance(c, dict)]
            out.append(
                {
                    "id": d.get("id", p.stem),
                    "chip": d.get("chip", "?"),
                    "flash_size": d.get("flash_size", "?"),
                    "psram": d.get("psram") is True,
                    "components": comps,
                    "file": shown(p),
                    "ok": True,
                }
            )
        except (OSError, ValueError, AttributeError) as exc:
            out.append({"id": p.stem, "file": shown(p), "ok": False, "error": str(exc)})
    return out


def check_boards(files: list[str | Path] | None = None) -> list[Issues]:
    """Check the given board files or ids (default: every shipped board), one result each."""
    paths = [board_path(f) for f in files] if files else board_files()
    return [check_file(p) for p in paths]


def components(board: Board | str | Path) -> list[dict]:
    """The board's components as App #2 and the validator consume them.

    Each is a copy of the component object; an I2C component's ``bus`` is replaced by the
    bus object itself (with its name under ``name``) and its ``address`` is an int.
    """
    b = board if isinstance(board, Board) else load_board(board)
    out = []
    for c in b.components:
        c = copy.deepcopy(c)
        if isinstance(c.get("bus"), str) and c["bus"] in b.buses:
            c["bus"] = {"name": c["bus"], **copy.deepcopy(b.buses[c["bus"]])}
        if "address" in c:
            c["address"] = parse_int(c["address"])
        out.append(c)
    return out
