"""``thingkit bench``, ``thingkit deps``: the local AWS IoT stand-in and device packages.

Each command is a thin wrapper over :class:`host_tools.bench.bench.Bench` or
:mod:`host_tools.device_deps`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from host_tools import device_deps
from host_tools.cli.interrupt import on_interrupt
from host_tools.cli.output import Progress, emit
from host_tools.cli.table import BENCH_ROOT, JSON, Command, arg
from host_tools.paths import state_home


def bench_root(args: argparse.Namespace) -> Path:
    """The bench state directory a command names (``--bench-root``), or the default."""
    return getattr(args, "bench_root", None) or state_home() / "bench"


def open_bench(args: argparse.Namespace):
    """The :class:`~host_tools.bench.bench.Bench` a command names."""
    from host_tools.bench.bench import Bench

    return Bench(bench_root(args))


def cmd_deps_fetch(args: argparse.Namespace) -> int:
    with Progress(args) as progress:
        progress.step("fetching the pinned device packages")
        dirs = device_deps.fetch()
    emit(
        args,
        {"packages": [str(d) for d in dirs]},
        "\n".join(f"device packages ready: {d.name}" for d in dirs),
    )
    return 0


def cmd_bench_up(args: argparse.Namespace) -> int:
    b = open_bench(args)

    def note() -> str:
        rb = b.rolled_back
        stopped = f"stopped the {' and '.join(rb)} it had started" if rb else "started nothing"
        running = [p for p, why in b.health().items() if not why]
        runs = f"{' and '.join(running)} still running" if running else "no bench process runs"
        return f"bench up: {stopped}; {runs}; ports and settings kept in {b.layout.state_file}"

    on_interrupt(note)
    with Progress(args) as progress:
        progress.step(f"starting the bench in {b.layout.root}")
        rep = b.start(port=args.port)
    ntp = b.ntp_settings()
    extra = ""
    if ntp.get("offset_s") or ntp.get("blocked"):
        how = "blocked" if ntp.get("blocked") else f"offset {ntp.get('offset_s', 0):+.1f} s"
        extra = f"; NTP {how} as set before (`thingkit bench ntp` resets it)"
    doc = {
        "root": str(b.layout.root),
        "broker_port": rep.state["broker_port"],
        "ntp_port": rep.state["ntp_port"],
        "started": rep.started,
        "kept": rep.kept,
        "moved": list(rep.moved) if rep.moved else None,
        "seconds": round(rep.seconds, 3),
        "ntp": ntp,
    }
    emit(args, doc, rep.line(b.layout.root) + extra)
    return 0


def cmd_bench_down(args: argparse.Namespace) -> int:
    b = open_bench(args)
    b.down()
    emit(args, {"root": str(b.layout.root), "up": False}, "bench down")
    return 0


def cmd_bench_status(args: argparse.Namespace) -> int:
    st = open_bench(args).status()
    text = "\n".join(
        (
            f"bench {'up' if st['up'] else 'down'} ({st['root']})",
            (
                f"  broker   pid {st['broker']['pid']} port {st['broker']['port']} "
                f"{'alive' if st['broker']['alive'] else 'stopped'}"
            ),
            (
                f"  services pid {st['services']['pid']} "
                f"{'alive' if st['services']['alive'] else 'stopped'}; ntp port {st['ntp_port']}"
            ),
            f"  things   {', '.join(st['things']) or '(none)'}",
        )
    )
    emit(args, st, text)
    return 0 if st["up"] else 3


def cmd_bench_ntp(args: argparse.Namespace) -> int:
    open_bench(args).set_ntp(offset_s=args.offset, blocked=args.block)
    emit(
        args,
        {"offset_s": args.offset, "blocked": args.block},
        f"bench ntp: offset {args.offset:+.1f} s, {'blocked' if args.block else 'answering'}",
    )
    return 0


GROUPS = {"bench": "the local AWS IoT stand-in", "deps": "device-side packages"}

COMMANDS = (
    Command("deps fetch", cmd_deps_fetch, "download and verify pinned device packages", (JSON,)),
    Command(
        "bench up",
        cmd_bench_up,
        "start broker, shadow service, rules, NTP",
        (
            *BENCH_ROOT,
            arg(
                "--port",
                type=int,
                help="broker port (default: the one saved by the first start, else a free one)",
            ),
            JSON,
        ),
    ),
    Command("bench down", cmd_bench_down, "stop every bench process", (*BENCH_ROOT, JSON)),
    Command("bench status", cmd_bench_status, "show what runs", (*BENCH_ROOT, JSON)),
    Command(
        "bench ntp",
        cmd_bench_ntp,
        "skew or block the bench NTP server",
        (
            *BENCH_ROOT,
            arg("--offset", type=float, default=0.0, help="seconds added to host time"),
            arg("--block", action="store_true", help="drop requests (NTP outage)"),
            JSON,
        ),
    ),
)
