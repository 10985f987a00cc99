"""Flash a MicroPython firmware image to a board with esptool's scripting API.

    result = flash("/dev/ttyUSB0", load_board("esp32-devkitc"), Path("ESP32_GENERIC.bin"))

Steps: plan the writes offline (the image's chip and partition table against the board
definition), then connect (esptool detects the chip), refuse a chip or flash size that
is not the board's, load the flasher stub, erase, write each region at its offset,
verify by MD5, hard-reset. Any refusal happens before anything is erased.

What ``firmware`` may be:

- a merged image (MicroPython's ``.bin`` downloads): written at the chip's bootloader
  offset (0x1000 on ESP32, 0x0 on S3 and C3). Its partition table (at 0x8000) must be
  one of the stock tables the board's ``image`` accepts (boards/micropython/
  stock_tables.json: the table of that MicroPython board and variant at each supported
  release, e.g. partitions-4MiB.csv for v1.24.1 ESP32_GENERIC, partitions-4MiBplus.csv from
  v1.26.0), with the filesystem where the board's provisioning images go; a refusal says
  which image to download instead (``force`` to write anyway);
- an ESP-IDF build's ``flasher_args.json`` (or its build directory): each file at the
  offset the build gives, the partition table checked the same way;
- an app-only image: written at the board's first app partition with the board's
  partition table at 0x8000 and otadata cleared; the bootloader must already be on the
  board, so this needs ``erase=False``.

Serial ports are pyserial URLs: ``/dev/ttyUSB0``, ``rfc2217://bench-pi.local:4000`` (a port
shared over the network) and ``socket://localhost:5000`` (no reset lines: put the board in
download mode by hand) all work.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.board_tools import NotSupportedError
from host_tools.board_tools.images import (
    BOOTLOADER_OFFSET,
    ESPTOOL_NAMES,
    image_chip,
    judge_table,
    parse_table,
    table_bin,
    table_in_merged,
)
from host_tools.boards.partitions import TABLE_OFFSET, flash_bytes
from host_tools.boards.registry import Board
from host_tools.errors import UserError

log = logging.getLogger("thingkit.flash")
ROM_BAUD = 115200


@dataclass(frozen=True)
class Region:
    offset: int
    data: bytes
    what: str

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


@dataclass
class FlashPlan:
    """What will be written where, and what was checked to get there."""

    board: str
    chip: str
    regions: list[Region]
    erase: bool
    checks: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        lines = [f"board {self.board} (chip {self.chip}); erase: {'yes' if self.erase else 'no'}"]
        lines += [
            f"  0x{r.offset:06x}-0x{r.end - 1:06x}  {len(r.data):>8} bytes  {r.what}"
            for r in self.regions
        ]
        lines += [f"  checked: {c}" for c in self.checks]
        return lines


@dataclass
class FlashResult:
    port: str
    chip: str
    flash_size: str | None
    bytes_written: int
    seconds: float
    verified: bool
    plan: FlashPlan

    def summary(self) -> str:
        rate = self.bytes_written / self.seconds / 1024 if self.seconds else 0.0
        return (
            f"flashed {self.plan.board} on {self.port}: {self.chip}, "
            f"{len(self.plan.regions)} region(s), {self.bytes_written} bytes in "
            f"{self.seconds:.1f} s ({rate:.0f} KiB/s), "
            f"{'verified' if self.verified else 'not verified'}"
        )


# -- planning (offline) ------------------------------------------------------------------
def plan_flash(board: Board, firmware: Path, erase: bool = True, force: bool = False) -> FlashPlan:
    """Check ``firmware`` against ``board`` and say what goes where.

    Raises:
        NotSupportedError: the board is not an ESP32-class board esptool can flash.
        UserError: wrong chip, a partition table that is not the board's (unless
            ``force``), an image that does not fit, or an app-only image with ``erase``.
    """
    if board.chip not in BOOTLOADER_OFFSET:
        raise NotSupportedError(board.id, f"be flashed with esptool (chip {board.chip})")
    firmware = Path(firmware)
    if firmware.is_dir():
        firmware = firmware / "flasher_args.json"
    if not firmware.is_file():
        raise UserError(f"no firmware file {firmware}", where="thingkit flash --help")
    if firmware.suffix == ".json":
        plan = _plan_build(board, firmware, erase)
    else:
        plan = _plan_image(board, firmware, erase)
    _check_fits(board, plan)
    _check_tables(board, plan, force)
    return plan


def _plan_image(board: Board, path: Path, erase: bool) -> FlashPlan:
    data = path.read_bytes()
    chip = image_chip(data)
    if chip is None:
        raise UserError(f"{path} is not an ESP firmware image", "it does not start with 0xE9")
    if chip != board.chip:
        raise UserError(
            f"{path.name} is built for {chip}, board {board.id} is {board.chip}",
            "pick the image for the board's chip",
        )
    base = BOOTLOADER_OFFSET[chip]
    if table_in_merged(data, chip) is not None:
        region = Region(base, data, f"{path.name} (merged: bootloader, partition table, app)")
        return FlashPlan(board.id, chip, [region], erase, [f"image chip {chip}"])
    if erase:
        raise UserError(
            f"{path.name} is an app-only image: erasing the flash would leave no bootloader",
            "use a merged image or a build's flasher_args.json, or --no-erase",
        )
    app = next((p for p in board.partitions if p.type == "app"), None)
    if app is None:
        raise UserError(f"board {board.id} has no app partition", where="thingkit boards check")
    regions = [
        Region(TABLE_OFFSET, table_bin(board.partitions), "partition table (from the board)"),
        Region(app.offset, data, f"{path.name} (app) in '{app.name}'"),
    ]
    for p in board.partitions:
        if p.type == "data" and p.subtype == "ota":
            regions.append(
                Region(p.offset, b"\xff" * p.size, f"'{p.name}' cleared: boot {app.name}")
            )
    return FlashPlan(board.id, chip, regions, erase, [f"image chip {chip}"])


def _plan_build(board: Board, path: Path, erase: bool) -> FlashPlan:
    try:
        args = json.loads(path.read_text())
        files = {int(k, 0): path.parent / v for k, v in args["flash_files"].items()}
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise UserError(f"cannot read {path}", f"not an ESP-IDF flasher_args.json ({exc})") from exc
    chip = args.get("extra_esptool_args", {}).get("chip", board.chip)
    if chip != board.chip:
        raise UserError(f"{path} is a build for {chip}, board {board.id} is {board.chip}")
    regions = []
    for off, f in sorted(files.items()):
        try:
            regions.append(Region(off, f.read_bytes(), f.relative_to(path.parent).as_posix()))
        except OSError as exc:
            raise UserError(f"cannot read {f}", str(exc), str(path)) from exc
    return FlashPlan(board.id, chip, regions, erase, [f"build for {chip}"])


def _check_fits(board: Board, plan: FlashPlan) -> None:
    size = board.flash_bytes
    for r in plan.regions:
        if size and r.end > size:
            raise UserError(
                f"{r.what} ends at 0x{r.end:x}, beyond board {board.id}'s {board.flash_size} flash"
            )
    apps = [p for p in board.partitions if p.type == "app"]
    for r in plan.regions:
        for p in apps:
            if r.offset == p.offset and len(r.data) > p.size:
                raise UserError(
                    f"{r.what} ({len(r.data)} bytes) does not fit '{p.name}' (0x{p.size:x})"
                )


def _check_tables(board: Board, plan: FlashPlan, force: bool) -> None:
    for r in plan.regions:
        table = None
        if r.offset == TABLE_OFFSET:
            table = parse_table(r.data)
        elif r.offset == BOOTLOADER_OFFSET[plan.chip]:
            table = table_in_merged(r.data, plan.chip)
        if table is None:
            continue
        ok, line = judge_table(board, table)
        if ok:
            plan.checks.append(line)
        elif force:
            plan.checks.append(f"partition table refused, flashed anyway (--force): {line}")
        else:
            raise UserError(line)


# -- flashing ----------------------------------------------------------------------------
def flash(
    port: str,
    board: Board,
    firmware: Path,
    *,
    erase: bool = True,
    verify: bool = True,
    baud: int = 460800,
    force: bool = False,
    connect_mode: str = "default-reset",
) -> FlashResult:
    """Flash ``firmware`` to the board on ``port`` (see the module docstring).

    Raises:
        UserError: a refused plan, no chip on the port, the wrong chip, a flash smaller
            than the board's, or a failed write or verify (esptool's message kept).
    """
    plan = plan_flash(board, firmware, erase, force)
    from esptool import cmds
    from esptool.util import FatalError

    t0 = time.monotonic()
    with _esptool_logging():
        try:
            esp = cmds.detect_chip(port, ROM_BAUD, connect_mode)
        except (FatalError, OSError) as exc:
            raise UserError(
                f"no ESP chip answered on {port}",
                f"{_first_line(exc)}; is the board in download mode and the port free?",
                "thingkit console --port PORT",
            ) from exc
        try:
            return _flash_with(esp, cmds, FatalError, port, board, plan, verify, baud, t0)
        finally:
            try:
                esp._port.close()
            except OSError:
                pass


def _flash_with(esp, cmds, FatalError, port, board, plan, verify, baud, t0) -> FlashResult:
    chip = ESPTOOL_NAMES.get(esp.CHIP_NAME, esp.CHIP_NAME)
    if chip != board.chip:
        raise UserError(
            f"the chip on {port} is {esp.CHIP_NAME}, board {board.id} is {board.chip}",
            "wrong --board or wrong port",
            "thingkit boards list",
        )
    plan.checks.append(f"chip on the port: {esp.CHIP_NAME}")
    try:
        esp = cmds.run_stub(esp)
        if baud != ROM_BAUD and not port.startswith("socket://"):
            esp.change_baud(baud)
        cmds.attach_flash(esp)
        detected = cmds.detect_flash_size(esp)
        have = flash_bytes(detected) if detected else None
        if have is not None and board.flash_bytes and have < board.flash_bytes:
            raise UserError(
                f"the chip on {port} has {detected} of flash, board {board.id} has {board.flash_size}",
                "wrong board definition or module",
            )
        plan.checks.append(f"flash size: {detected or 'not detected'}")
        if plan.erase:
            log.info("erasing the flash of %s", port)
            cmds.erase_flash(esp)
        pairs = [(r.offset, r.data) for r in plan.regions]
        cmds.write_flash(esp, pairs, no_progress=not sys.stderr.isatty())
        if verify:
            cmds.verify_flash(esp, pairs)
        cmds.reset_chip(esp, "hard-reset")
    except FatalError as exc:
        raise UserError(f"flashing {board.id} on {port} failed", _first_line(exc)) from exc
    written = sum(len(r.data) for r in plan.regions)
    return FlashResult(port, esp.CHIP_NAME, detected, written, time.monotonic() - t0, verify, plan)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def _esptool_logging() -> Iterator[None]:
    """Route esptool's output to thingkit's logger for the duration (debug level: esptool
    narrates every step), with progress bars only on a terminal."""
    from esp_pylib.logger import EspLog
    from esptool.logger import TemplateLogger
    from esptool.logger import log as esp_log

    class _ToLogging(TemplateLogger):
        def print(self, *args, **kwargs):
            msg = " ".join(str(a) for a in args).strip()
            if msg:
                log.debug("esptool: %s", msg)

        def note(self, message: str):
            log.info("esptool: %s", message)

        def warning(self, message: str):
            log.warning("esptool: %s", message)

        def error(self, message: str):
            log.error("esptool: %s", message)

        def stage(self, finish: bool = False):
            pass

        def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
            if sys.stderr.isatty():
                done = int(bar_length * cur_iter / max(total_iters, 1))
                sys.stderr.write(f"\r{prefix}[{'#' * done}{'.' * (bar_length - done)}]{suffix}")
                if cur_iter >= total_iters:
                    sys.stderr.write("\n")

        def set_verbosity(self, verbosity: str):
            pass

    old = EspLog.instance
    esp_log.set_logger(_ToLogging())
    try:
        yield
    finally:
        EspLog.instance = old
