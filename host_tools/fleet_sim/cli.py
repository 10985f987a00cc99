"""``thingkit fleet up|status|down``: the fleet simulator on the bench.

Thin wrappers over :class:`host_tools.fleet_sim.fleet.Fleet`, listed in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from host_tools.cli.interrupt import on_interrupt
from host_tools.cli.output import Progress
from host_tools.cli.table import BENCH_ROOT, JSON, Command, arg
from host_tools.errors import UserError


def _fleet(args: argparse.Namespace):
    from host_tools.fleet_sim.fleet import Fleet

    return Fleet(args.root, getattr(args, "bench_root", None))


def render(st: dict) -> str:
    """One paragraph: kits, online, rates, loss."""
    tele, msgs = st.get("telemetry") or {}, st.get("messages") or {}
    lines = [
        (
            f"fleet {st['root']}: {st['running']}/{st['count']} kits running, "
            f"{st['online']} online; bench {'up' if st['bench']['up'] else 'down'} "
            f"({st['bench']['root']})"
        ),
        (
            f"  telemetry {tele.get('rate_per_s', 0):g} msg/s (expected "
            f"{tele.get('expected_per_s', 0):g}), {tele.get('total', 0)} received, "
            f"lost {tele.get('lost', 0)}, duplicates {tele.get('duplicates', 0)}; "
            f"all device messages {msgs.get('rate_per_s', 0):g} msg/s"
        ),
    ]
    if st.get("silent"):
        lines.append(f"  silent for 3 intervals: {st['silent']} ({', '.join(st['silent_things'])})")
    if tele.get("lost_by_thing"):
        lines.append(f"  loss by kit: {tele['lost_by_thing']}")
    if not st.get("observer"):
        lines.append("  observer not running: figures are the last it wrote")
    return "\n".join(lines)


def cmd_fleet_up(args: argparse.Namespace) -> int:
    import time

    from host_tools.kit.sim import DEFAULT_HEAP

    f = _fleet(args)
    t0 = time.monotonic()

    on_interrupt(
        lambda: (
            f"fleet up stopped: its kits were powered off ({len(f.running())} still "
            f"running), bench {'up' if f.bench.is_up() else 'down'}; state kept in {f.root}"
        )
    )
    with Progress(args) as progress:
        try:
            st = f.up(
                args.count,
                interval_s=args.interval,
                boot_rate=args.boot_rate,
                heap=args.heap or DEFAULT_HEAP,
                timeout=args.timeout,
                progress=progress.step,
            )
        except BaseException:
            f.down()  # leave no process behind a failed start
            raise
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        print(render(st))
        print(
            f"fleet up: {st['online']}/{st['count']} online in "
            f"{time.monotonic() - t0:.1f} s; `thingkit fleet status`, `thingkit fleet down`"
        )
    return 0 if st["online"] == st["count"] else 2


def cmd_fleet_status(args: argparse.Namespace) -> int:
    f = _fleet(args)
    if not f.state:
        raise UserError(f"no fleet in {f.root}", where="thingkit fleet up --count N")
    st = f.status()
    print(json.dumps(st, indent=1) if args.json else render(st))
    return 0 if st["running"] and st["online"] == st["count"] else 3


def cmd_fleet_down(args: argparse.Namespace) -> int:
    f = _fleet(args)
    if not f.state:
        raise UserError(f"no fleet in {f.root}", where="thingkit fleet up --count N")
    count = len(f.state.get("things", []))
    on_interrupt(
        lambda: (
            f"fleet down stopped: {len(f.running())} of {count} kits still running; "
            "run `thingkit fleet down` again"
        )
    )
    with Progress(args) as progress:
        st = f.down(progress=progress.advance)
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        print(render(st))
        print(f"fleet down: {st['count']} kits powered off, {len(f.running())} left running")
    return 0


ROOT = arg("--root", type=Path, help="fleet simulator state directory (default .thingkit/fleetsim)")
GROUPS = {"fleet": "a fleet of virtual kits on the bench"}

COMMANDS = (
    Command(
        "fleet up",
        cmd_fleet_up,
        "boot N virtual kits (starts the bench if needed)",
        (
            ROOT,
            JSON,
            arg("--count", type=int, required=True, help="how many kits"),
            BENCH_ROOT[0],
            arg("--interval", type=int, default=10, help="App #2 telemetry interval, s (10)"),
            arg("--boot-rate", type=float, default=20.0, help="kits powered on per second (20)"),
            arg("--timeout", type=float, help="wait this long for all online"),
            arg("--heap", help="each kit's GC heap, e.g. 128k (default: the virtual kit's, 224k)"),
        ),
    ),
    Command("fleet status", cmd_fleet_status, "online count, message rates, loss", (ROOT, JSON)),
    Command(
        "fleet down",
        cmd_fleet_down,
        "stop every kit, and the bench if `up` started it",
        (ROOT, JSON),
    ),
)
