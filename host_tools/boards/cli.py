"""``thingkit boards``: list, show and check board definitions (boards/*.json).

The commands are listed in ``COMMANDS`` (host_tools/cli/table.py); each returns an exit
status and raises ``UserError`` for faults of input.
"""

from __future__ import annotations

import argparse
import json

from host_tools.boards import stock
from host_tools.boards.registry import Board, check_boards, list_boards, load_board
from host_tools.cli.table import JSON, Command, arg, build


def _kib(n: int) -> str:
    return f"{n // 1024} KiB" if n < 1024 * 1024 or n % (1024 * 1024) else f"{n >> 20} MiB"


def cmd_list(args: argparse.Namespace) -> int:
    rows = list_boards()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max([len(r["id"]) for r in rows] + [2])
    print(f"{'id':<{width}}  {'chip':<8} {'flash':<11} components")
    for r in rows:
        if not r["ok"]:
            print(f"{r['id']:<{width}}  (unreadable: {r['error']}; run thingkit boards check)")
            continue
        flash = r["flash_size"] + ("+PSRAM" if r["psram"] else "")
        print(f"{r['id']:<{width}}  {r['chip']:<8} {flash:<11} {', '.join(r['components'])}")
    return 0


def _reading_text(name: str, r: dict) -> str:
    rng = r.get("range")
    return f"{name} {r.get('unit')}" + (f" [{rng[0]}, {rng[1]}]" if rng else "")


def cmd_show(args: argparse.Namespace) -> int:
    b = load_board(args.id)
    if args.json:
        print(json.dumps(b.data, indent=1))
        return 0
    print(f"{b.id}: {b.name}")
    print(f"  chip {b.chip}, flash {b.flash_size}, {'PSRAM' if b.psram else 'no PSRAM'}")
    if b.data.get("notes"):
        print(f"  notes: {b.data['notes']}")
    _show_image(b)
    table = stock.expected_table(b.data)
    what = f" ({table.csv}{'' if table.custom else ', ' + stock.newest()})" if table else ""
    print(f"  partitions{what}:")
    for p in b.partitions:
        print(
            f"    {p.name:<9} {p.type:<4} {p.subtype:<7} 0x{p.offset:<8x} "
            f"0x{p.size:<8x} {_kib(p.size)}"
        )
    fs = b.data["filesystem"]
    made = ""
    if b.filesystem_at_runtime() and table is not None:
        made = f", created at boot after '{table.runtime_vfs_after}' to the end of flash"
    print(
        f"  filesystem: {fs['type']} on {fs['partition']} at 0x{b.filesystem_offset():x} "
        f"({_kib(b.filesystem_size())}{made})"
    )
    for name, bus in b.buses.items():
        pins = ", ".join(f"{k} GPIO{v}" for k, v in bus.items() if k not in ("kind", "id", "freq"))
        freq = f", {bus['freq'] // 1000} kHz" if "freq" in bus else ""
        print(f"  bus {name}: {bus['kind']} {bus['id']}: {pins}{freq}")
    print("  components:")
    for c in b.components:
        at = f"GPIO{c['pin']}" if "pin" in c else ""
        if "pins" in c:
            at = ", ".join(f"{k} GPIO{v}" for k, v in c["pins"].items())
        if "bus" in c:
            addr = c["address"] if isinstance(c["address"], int) else int(c["address"], 0)
            at = f"{c['bus']} 0x{addr:02x}"
        readings = "; ".join(_reading_text(n, r) for n, r in c["readings"].items())
        opt = " (optional)" if c.get("optional") else ""
        what = f"{c['kind']}/{c['driver']}"
        print(f"    {c['id']:<12} {what:<24} {at:<13} {readings}{opt}")
    return 0


def _show_image(b: Board) -> None:
    """The image lines of ``boards show``: what to download, which tables flash accepts."""
    img = b.image
    if not img:
        print('  image: not described (no "image" object); thingkit flash checks nothing')
        return
    if img.get("romfs"):
        print(f"  image: {img['micropython_board']} built with ROMFS; {stock.file_pattern(b.data)}")
    else:
        print(
            f"  image: {img['micropython_board']} (stock, variant {img['variant']}); "
            f"download {stock.file_pattern(b.data)} from micropython.org"
        )
    tables = stock.tables()
    accepted = "; ".join(
        f"{tables[k].csv} ({', '.join(rels)})" for k, rels in stock.accepted(b.data).items()
    )
    print(f"  flash accepts: {accepted}")
    feats = stock.features(b.data)
    print(
        "  features: "
        + ", ".join(
            f"{f} {'yes' if ok else 'no (needs the -OTA image)'}" for f, ok in feats.items()
        )
    )
    if img.get("frozen"):
        frozen = ", ".join(f"{m} {v}" for m, v in img["frozen"].items())
        print(f"  frozen in the image (found before /lib): {frozen}")


def cmd_check(args: argparse.Namespace) -> int:
    reports = check_boards(args.files or None)
    errors = sum(len(r.errors) for r in reports)
    warnings = sum(len(r.warnings) for r in reports)
    summary = f"{len(reports)} boards checked: {errors} errors, {warnings} warnings"
    if args.json:
        doc = {
            "boards": [
                {
                    "file": r.file,
                    "ok": not r.errors,
                    "errors": [str(i) for i in r.errors],
                    "warnings": [str(i) for i in r.warnings],
                }
                for r in reports
            ],
            "summary": {"boards": len(reports), "errors": errors, "warnings": warnings},
            "ok": errors == 0,
        }
        print(json.dumps(doc, indent=1))
    else:
        for r in reports:
            if not r:
                print(f"{r.file}: ok")
            for issue in r:
                print(f"{issue.level}: {issue}")
        print(summary)
    return 0 if errors == 0 else 1


GROUPS = {"boards": "board definitions (boards/*.json)"}

COMMANDS = (
    Command("boards list", cmd_list, "every board: id, chip, flash, components", (JSON,)),
    Command(
        "boards show",
        cmd_show,
        "one board in full",
        (
            arg("id", help="board id (e.g. esp32-devkitc) or path to a board file"),
            arg("--json", action="store_true", help="print the board file as JSON"),
        ),
    ),
    Command(
        "boards check",
        cmd_check,
        "validate board files against the chip rules",
        (arg("files", nargs="*", help="board files or ids (default: every board)"), JSON),
    ),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``boards list|show|check`` to a parser (for tests of this module alone)."""
    build(subparsers, COMMANDS, GROUPS)
