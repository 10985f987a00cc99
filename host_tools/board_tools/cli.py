"""``thingkit flash``, ``thingkit deploy``, ``thingkit console``: real boards on serial ports.

Listed in ``COMMANDS`` (host_tools/cli/table.py). Each command is a thin wrapper
over a library function, returns an exit status and raises ``UserError`` for faults of
input, environment or device (printed as one line by the main CLI).

    thingkit flash   --board esp32-devkitc --port /dev/ttyUSB0 \
                     --firmware ESP32_GENERIC-20250809-v1.26.0.bin   # a micropython.org download
    thingkit deploy  --board esp32-devkitc --port /dev/ttyUSB0 --bundle out/kit-0001
    thingkit console --port /dev/ttyUSB0 --reset --until "shadow synced" --timeout 60
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from host_tools.cli.table import JSON, Command, arg, build
from host_tools.paths import state_home


def _board(name: str):
    from host_tools.boards.registry import load_board

    return load_board(name)


# -- flash -------------------------------------------------------------------------------
def cmd_flash(args: argparse.Namespace) -> int:
    from host_tools.board_tools.flash import flash, plan_flash

    board = _board(args.board)
    if args.dry_run:
        plan = plan_flash(board, args.firmware, erase=not args.no_erase, force=args.force)
        if args.json:
            print(json.dumps(_plan_json(plan, args.port), indent=1))
        else:
            print(f"thingkit flash --dry-run: would write to {args.port}:")
            print("\n".join(plan.describe()))
        return 0
    result = flash(
        args.port,
        board,
        args.firmware,
        erase=not args.no_erase,
        verify=not args.no_verify,
        baud=args.baud,
        force=args.force,
        connect_mode="no-reset" if args.no_reset else "default-reset",
    )
    if args.json:
        out = _plan_json(result.plan, args.port)
        out.update(
            chip=result.chip,
            flash_size=result.flash_size,
            bytes=result.bytes_written,
            seconds=round(result.seconds, 2),
            verified=result.verified,
        )
        print(json.dumps(out, indent=1))
    else:
        for line in result.plan.describe()[1:]:
            print(line)
        print(result.summary())
    return 0


def _plan_json(plan, port: str) -> dict:
    return {
        "port": port,
        "board": plan.board,
        "chip": plan.chip,
        "erase": plan.erase,
        "regions": [
            {"offset": f"0x{r.offset:x}", "bytes": len(r.data), "what": r.what}
            for r in plan.regions
        ],
        "checks": plan.checks,
    }


# -- deploy ------------------------------------------------------------------------------
def cmd_deploy(args: argparse.Namespace) -> int:
    from host_tools.board_tools.deploy import deploy

    ssid = args.wifi_ssid or os.environ.get("THINGKIT_WIFI_SSID")
    psk = args.wifi_psk if args.wifi_psk is not None else os.environ.get("THINGKIT_WIFI_PSK")
    wifi = {"ssid": ssid, "psk": psk or ""} if ssid else None
    result = deploy(
        args.port,
        _board(args.board),
        bundle=args.bundle,
        wifi=wifi,
        deps=args.deps,
        mip_index=args.mip_index,
        mpy=not args.source,
        check_platform=not args.any_platform,
        restart=not args.no_restart,
        baud=args.baud,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "port": result.port,
                    "written": result.written,
                    "unchanged": result.unchanged,
                    "removed": result.removed,
                    "packages": result.packages,
                    "bytes": result.bytes_written,
                    "seconds": round(result.seconds, 2),
                },
                indent=1,
            )
        )
    else:
        print(result.summary())
    return 0


# -- console -----------------------------------------------------------------------------
def default_log(port: str) -> Path:
    return state_home() / "console" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", port).strip("_") + ".log")


def cmd_console(args: argparse.Namespace) -> int:
    from host_tools.board_tools.console import monitor

    def show(data: bytes) -> None:
        sys.stdout.write(data.decode(errors="replace"))
        sys.stdout.flush()

    log_path = args.log or default_log(args.port)
    ok = monitor(
        args.port,
        log_path,
        baud=args.baud,
        reset=args.reset,
        until=args.until,
        timeout=args.timeout,
        out=None if args.quiet else show,
    )
    if args.until is not None:
        verdict = "seen" if ok else f"not seen within {args.timeout:.0f} s"
        print(f"\nthingkit console: {args.until!r} {verdict}; log {log_path}", file=sys.stderr)
    return 0 if ok else 1


COMMANDS = (
    Command(
        "flash",
        cmd_flash,
        "flash MicroPython to a board with esptool",
        (
            arg("--board", required=True, help="board id or file (thingkit boards list)"),
            arg("--port", required=True, help="serial port (pyserial URL)"),
            arg(
                "--firmware",
                required=True,
                type=Path,
                help=(
                    "the board's stock image from micropython.org (merged .bin; thingkit boards show "
                    "BOARD names it), an app .bin (with --no-erase) or an ESP-IDF build's "
                    "flasher_args.json"
                ),
            ),
            arg("--baud", type=int, default=460800, help="baud rate for writing (default 460800)"),
            arg("--no-erase", action="store_true", help="do not erase the whole flash first"),
            arg("--no-verify", action="store_true", help="skip the MD5 verify after writing"),
            arg("--no-reset", action="store_true", help="the board is in download mode already"),
            arg(
                "--force",
                action="store_true",
                help="write even if the image's partition table is not one the board accepts",
            ),
            arg("--dry-run", action="store_true", help="check and print the plan; write nothing"),
            JSON,
        ),
    ),
    Command(
        "deploy",
        cmd_deploy,
        "copy firmware, packages, identity and config (mpremote)",
        (
            arg("--board", required=True, help="board id or file"),
            arg("--port", required=True, help="serial port (pyserial URL)"),
            arg("--bundle", type=Path, help="device bundle: config.json and certs/ (identity)"),
            arg("--wifi-ssid", help="Wi-Fi network (or THINGKIT_WIFI_SSID)"),
            arg("--wifi-psk", help="Wi-Fi passphrase (or THINGKIT_WIFI_PSK)"),
            arg(
                "--deps",
                choices=["pinned", "mip", "none"],
                default="pinned",
                help="device packages: the hash-pinned files the firmware is tested with (default), "
                "mip install of the index's latest (its umqtt.simple takes another constructor: "
                "for trying a newer client), or none",
            ),
            arg("--mip-index", default=None, help="mip index URL or local mirror directory"),
            arg("--source", action="store_true", help="copy .py source instead of .mpy"),
            arg("--any-platform", action="store_true", help="skip the sys.platform check"),
            arg("--no-restart", action="store_true", help="leave the firmware stopped"),
            arg("--baud", type=int, default=115200),
            JSON,
        ),
    ),
    Command(
        "console",
        cmd_console,
        "serial monitor (with reset)",
        (
            arg("--port", required=True, help="serial port (pyserial URL)"),
            arg("--baud", type=int, default=115200),
            arg("--reset", action="store_true", help="reset the board first (RTS pulse)"),
            arg("--until", help="stop when the output matches this regular expression"),
            arg("--timeout", type=float, help="stop after this many seconds"),
            arg("--log", type=Path, help="log file (default .thingkit/console/<port>.log)"),
            arg("--quiet", action="store_true", help="only the log file and the verdict"),
        ),
    ),
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``flash``, ``deploy`` and ``console`` to a parser (for tests of this module)."""
    build(sub, COMMANDS, {})
