"""``thingkit kit``: virtual kits (the firmware on the MicroPython unix port).

Each command is a thin wrapper over :class:`host_tools.kit.sim.SimKit` and
:func:`host_tools.kit.provision.create_sim_kit`.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from host_tools.cli.bench_cmds import bench_root, open_bench
from host_tools.cli.interrupt import on_interrupt
from host_tools.cli.output import Progress, emit
from host_tools.cli.table import BENCH_ROOT, JSON, Command, arg
from host_tools.errors import UserError


def kits_root(args: argparse.Namespace) -> Path:
    """Where a command's kits live: beside its bench state directory."""
    return bench_root(args).parent / "kits"


def _saved_heap(root: Path) -> str:
    from host_tools.kit.sim import DEFAULT_HEAP

    f = root / "heap"
    return f.read_text().strip() if f.exists() else DEFAULT_HEAP


def open_kit(args: argparse.Namespace):
    """The existing kit a command names, or the one-line error saying how to make it."""
    from host_tools.kit.sim import SimKit

    root = kits_root(args) / args.name
    if not root.exists():
        raise UserError(f"no kit named {args.name}", where=f"thingkit kit create {args.name}")
    return SimKit(root, heap=getattr(args, "heap", None) or _saved_heap(root))


def cmd_kit_create(args: argparse.Namespace) -> int:
    from host_tools.kit.provision import create_sim_kit
    from host_tools.kit.sim import DEFAULT_HEAP, SimKit
    from provisioning.bundle import BundleError, check_thing_name

    try:
        check_thing_name(args.name)
    except BundleError as exc:
        raise UserError(str(exc)) from exc
    b = open_bench(args)
    b.require_up()
    root = kits_root(args) / args.name
    old = ""
    with Progress(args) as progress:
        if root.exists():
            old_kit = SimKit(root)
            running = old_kit.is_running()
            if not args.force:
                raise UserError(
                    f"kit {args.name} exists already{' and is running' if running else ''} "
                    f"({root})",
                    "re-creating it gives it a new identity and wipes its flash",
                    f"thingkit kit create {args.name} --force",
                )
            progress.step(f"removing the old kit {args.name} (--force)")
            old_kit.power_off()
            shutil.rmtree(root)
            old = f"the old kit was {'stopped and ' if running else ''}removed (--force); "
        on_interrupt(
            lambda: f"kit create stopped: {old}the partly made kit {args.name} was removed"
        )
        heap = args.heap or DEFAULT_HEAP
        progress.step(f"flashing firmware and provisioning {args.name}")
        try:
            kit = create_sim_kit(b, kits_root(args), args.name, heap=heap, mode=args.mode)
            (kit.root / "heap").write_text(heap)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)  # a half-made kit would need --force next
            raise
    emit(
        args,
        {
            "kit": args.name,
            "root": str(kit.root),
            "flash": str(kit.flash),
            "heap": heap,
            "replaced": bool(old),
        },
        f"kit {args.name}: {old}firmware and identity in {kit.flash}; "
        "thing registered on the bench",
    )
    return 0


def cmd_kit_start(args: argparse.Namespace) -> int:
    kit = open_kit(args)
    pid = kit.power_on()
    emit(
        args,
        {"kit": args.name, "pid": pid, "console": str(kit.console_log)},
        f"kit {args.name} powered on (pid {pid}); console {kit.console_log}",
    )
    return 0


def cmd_kit_stop(args: argparse.Namespace) -> int:
    open_kit(args).power_off()
    emit(args, {"kit": args.name, "running": False}, f"kit {args.name} powered off")
    return 0


def cmd_kit_console(args: argparse.Namespace) -> int:
    text = open_kit(args).console(since_boot=False)
    if getattr(args, "json", False):
        emit(args, {"kit": args.name, "console": text.splitlines()}, "")
    else:
        print(text, end="")
    return 0


def cmd_kit_set_time(args: argparse.Namespace) -> int:
    kit = open_kit(args)
    when = args.when or "now"
    if when == "now":
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    try:
        time.strptime(when, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise UserError(
            f"cannot set the RTC to {when!r}",
            "give 'YYYY-MM-DD hh:mm:ss' (UTC) or 'now'",
            f"thingkit kit set-time {args.name} '2024-05-06 07:08:09'",
        ) from None
    kit.set_time(when)
    emit(args, {"kit": args.name, "rtc": when}, f"kit {args.name}: RTC set to {when} UTC")
    return 0


NAME = arg("name", help="kit name (its thing name)")
GROUPS = {"kit": "virtual kits (MicroPython unix port)"}

COMMANDS = (
    Command(
        "kit create",
        cmd_kit_create,
        "flash firmware and provision a new kit",
        (
            NAME,
            *BENCH_ROOT,
            arg("--heap", help="GC heap size, e.g. 80k"),
            arg(
                "--force",
                action="store_true",
                help="re-create an existing kit: stop it, wipe it, new identity",
            ),
            arg(
                "--mode",
                choices=["romfs", "mpy", "source"],
                default=None,
                help="firmware as .mpy files (default: as thingkit deploy writes them to a "
                "stock board), a ROMFS image (default for a board whose image has ROMFS) "
                "or .py source",
            ),
            JSON,
        ),
    ),
    Command("kit start", cmd_kit_start, "power on", (NAME, *BENCH_ROOT, JSON)),
    Command("kit stop", cmd_kit_stop, "power off (power cut)", (NAME, *BENCH_ROOT, JSON)),
    Command("kit console", cmd_kit_console, "print the console log", (NAME, *BENCH_ROOT, JSON)),
    Command(
        "kit set-time",
        cmd_kit_set_time,
        "set the RTC as a person would",
        (
            NAME,
            arg("when", nargs="?", help="'YYYY-MM-DD hh:mm:ss' UTC or 'now' (default: now)"),
            *BENCH_ROOT,
            JSON,
        ),
    ),
)
