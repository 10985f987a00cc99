"""``thingkit``: the command line. Each command is a thin wrapper over a library function.

Errors of input, environment or device (UserError) print one line and exit 1; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from host_tools import device_deps
from host_tools.errors import UserError
from host_tools.paths import state_home

log = logging.getLogger("thingkit")

# What to say if Ctrl-C stops the running command (see on_interrupt); main() prints it.
_interrupt_notes: list[Callable[[], str]] = []


def on_interrupt(note: str | Callable[[], str]) -> None:
    """Say ``note`` (or what it returns, asked after the command has unwound) in one line
    if Ctrl-C stops the running command; the last note registered is the one said."""
    _interrupt_notes.append(note if callable(note) else (lambda: note))


def _interrupted() -> str:
    try:
        note = _interrupt_notes[-1]() if _interrupt_notes else ""
    except Exception as exc:  # noqa: BLE001 (the note must not hide the interrupt)
        note = f"(state unknown: {exc})"
    return "thingkit: interrupted" + (f"; {note}" if note else "")


def _bench(args: argparse.Namespace):
    from host_tools.bench.bench import Bench

    return Bench(args.root or state_home() / "bench")


def _kits_root(args: argparse.Namespace) -> Path:
    return (args.root or state_home() / "bench").parent / "kits"


# -- deps --------------------------------------------------------------------------
def cmd_deps_fetch(args: argparse.Namespace) -> int:
    for d in device_deps.fetch():
        log.info("device packages ready: %s", d.name)
    return 0


# -- bench -------------------------------------------------------------------------
def cmd_bench_up(args: argparse.Namespace) -> int:
    b = _bench(args)

    def note() -> str:
        rb = b.rolled_back
        stopped = f"stopped the {' and '.join(rb)} it had started" if rb else "started nothing"
        running = [p for p, why in b.health().items() if not why]
        runs = f"{' and '.join(running)} still running" if running else "no bench process runs"
        return f"bench up: {stopped}; {runs}; ports and settings kept in {b.layout.state_file}"

    on_interrupt(note)
    rep = b.start(port=args.port)
    ntp = b.ntp_settings()
    extra = ""
    if ntp.get("offset_s") or ntp.get("blocked"):
        how = "blocked" if ntp.get("blocked") else f"offset {ntp.get('offset_s', 0):+.1f} s"
        extra = f"; NTP {how} as set before (`thingkit bench ntp` resets it)"
    print(rep.line(b.layout.root) + extra)
    return 0


def cmd_bench_down(args: argparse.Namespace) -> int:
    _bench(args).down()
    print("bench down")
    return 0


def cmd_bench_status(args: argparse.Namespace) -> int:
    st = _bench(args).status()
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        print(f"bench {'up' if st['up'] else 'down'} ({st['root']})")
        print(
            f"  broker   pid {st['broker']['pid']} port {st['broker']['port']} "
            f"{'alive' if st['broker']['alive'] else 'stopped'}"
        )
        print(
            f"  services pid {st['services']['pid']} "
            f"{'alive' if st['services']['alive'] else 'stopped'}; ntp port {st['ntp_port']}"
        )
        print(f"  things   {', '.join(st['things']) or '(none)'}")
    return 0 if st["up"] else 3


def cmd_bench_ntp(args: argparse.Namespace) -> int:
    _bench(args).set_ntp(offset_s=args.offset, blocked=args.block)
    print(f"bench ntp: offset {args.offset:+.1f} s, {'blocked' if args.block else 'answering'}")
    return 0


# -- kit ---------------------------------------------------------------------------
def _kit(args: argparse.Namespace):
    from host_tools.kit.sim import SimKit

    root = _kits_root(args) / args.name
    if not root.exists():
        raise UserError(f"no kit named {args.name}", where=f"thingkit kit create {args.name}")
    return SimKit(root, heap=getattr(args, "heap", None) or _saved_heap(root))


def _saved_heap(root: Path) -> str:
    from host_tools.kit.sim import DEFAULT_HEAP

    f = root / "heap"
    return f.read_text().strip() if f.exists() else DEFAULT_HEAP


def cmd_kit_create(args: argparse.Namespace) -> int:
    from host_tools.kit.provision import create_sim_kit
    from host_tools.kit.sim import DEFAULT_HEAP, SimKit
    from provisioning.bundle import BundleError, check_thing_name

    try:
        check_thing_name(args.name)
    except BundleError as exc:
        raise UserError(str(exc)) from exc
    b = _bench(args)
    b.require_up()
    root = _kits_root(args) / args.name
    old = ""
    if root.exists():
        old_kit = SimKit(root)
        running = old_kit.is_running()
        if not args.force:
            raise UserError(
                f"kit {args.name} exists already{' and is running' if running else ''} ({root})",
                "re-creating it gives it a new identity and wipes its flash",
                f"thingkit kit create {args.name} --force",
            )
        old_kit.power_off()
        shutil.rmtree(root)
        old = f"the old kit was {'stopped and ' if running else ''}removed (--force); "
    on_interrupt(lambda: f"kit create stopped: {old}the partly made kit {args.name} was removed")
    heap = args.heap or DEFAULT_HEAP
    try:
        kit = create_sim_kit(b, _kits_root(args), args.name, heap=heap, mode=args.mode)
        (kit.root / "heap").write_text(heap)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)  # a half-made kit would need --force next
        raise
    print(
        f"kit {args.name}: {old}firmware and identity in {kit.flash}; thing registered on the bench"
    )
    return 0


def cmd_kit_start(args: argparse.Namespace) -> int:
    kit = _kit(args)
    pid = kit.power_on()
    print(f"kit {args.name} powered on (pid {pid}); console {kit.console_log}")
    return 0


def cmd_kit_stop(args: argparse.Namespace) -> int:
    _kit(args).power_off()
    print(f"kit {args.name} powered off")
    return 0


def cmd_kit_console(args: argparse.Namespace) -> int:
    kit = _kit(args)
    print(kit.console(since_boot=False), end="")
    return 0


def cmd_kit_set_time(args: argparse.Namespace) -> int:
    kit = _kit(args)
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
    print(f"kit {args.name}: RTC set to {when} UTC")
    return 0


# -- validate ----------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from host_tools.validate.report import render_json, render_text
    from host_tools.validate.sim_run import validate_sim

    if args.board != "sim":
        raise UserError(
            f"validate --board {args.board} is not available yet",
            "only the virtual kit (sim) can be validated by this command so far",
        )
    kept = f"its state is kept in {args.workdir}" if args.workdir else "its temporary files removed"
    on_interrupt(f"validate stopped before its report: its bench and kit were stopped, {kept}")
    results, meta = validate_sim(args.workdir)
    print(render_json(results, meta) if args.json else render_text(results, meta))
    return 0 if all(r.status == "met" for r in results) else 1


def tool_version() -> str:
    """thingkit's version (the installed package's, as pyproject.toml gives it), and the
    firmware version it deploys when that differs."""
    from importlib.metadata import PackageNotFoundError, version

    from host_tools.paths import FIRMWARE

    try:
        tool = version("thingkit")
    except PackageNotFoundError:
        tool = "unknown (not installed)"
    text = (FIRMWARE / "tk" / "version.py").read_text()
    fw = text.split('"')[1] if '"' in text else "?"
    return tool if fw == tool else f"{tool} (firmware {fw})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="thingkit", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--version", action="version", version=f"thingkit {tool_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    deps = sub.add_parser("deps", help="device-side packages").add_subparsers(
        dest="sub", required=True
    )
    deps.add_parser("fetch", help="download and verify pinned device packages").set_defaults(
        func=cmd_deps_fetch
    )

    bench = sub.add_parser("bench", help="the local AWS IoT stand-in").add_subparsers(
        dest="sub", required=True
    )
    for name, func, hlp in (
        ("up", cmd_bench_up, "start broker, shadow service, rules, NTP"),
        ("down", cmd_bench_down, "stop every bench process"),
        ("status", cmd_bench_status, "show what runs"),
        ("ntp", cmd_bench_ntp, "skew or block the bench NTP server"),
    ):
        sp = bench.add_parser(name, help=hlp)
        sp.add_argument("--root", type=Path, help="bench state directory (default .thingkit/bench)")
        sp.set_defaults(func=func)
        if name == "up":
            sp.add_argument(
                "--port",
                type=int,
                help="broker port (default: the one saved by the first start, else a free one)",
            )
        if name == "status":
            sp.add_argument("--json", action="store_true")
        if name == "ntp":
            sp.add_argument("--offset", type=float, default=0.0, help="seconds added to host time")
            sp.add_argument("--block", action="store_true", help="drop requests (NTP outage)")

    kit = sub.add_parser("kit", help="virtual kits (MicroPython unix port)").add_subparsers(
        dest="sub", required=True
    )
    for name, func, hlp in (
        ("create", cmd_kit_create, "flash firmware and provision a new kit"),
        ("start", cmd_kit_start, "power on"),
        ("stop", cmd_kit_stop, "power off (power cut)"),
        ("console", cmd_kit_console, "print the console log"),
        ("set-time", cmd_kit_set_time, "set the RTC as a person would"),
    ):
        sp = kit.add_parser(name, help=hlp)
        sp.add_argument("name")
        sp.add_argument("--root", type=Path, help="bench state directory (kits live beside it)")
        sp.set_defaults(func=func)
        if name == "create":
            sp.add_argument("--heap", help="GC heap size, e.g. 80k")
            sp.add_argument(
                "--force",
                action="store_true",
                help="re-create an existing kit: stop it, wipe it, new identity",
            )
            sp.add_argument(
                "--mode",
                choices=["romfs", "mpy", "source"],
                default=None,
                help="firmware as .mpy files (default: as thingkit deploy writes them to a "
                "stock board), a ROMFS image (default for a board whose image has ROMFS) "
                "or .py source",
            )
        if name == "set-time":
            sp.add_argument(
                "when", nargs="?", help="'YYYY-MM-DD hh:mm:ss' UTC or 'now' (default: now)"
            )

    from host_tools.boards.cli import register as register_boards

    register_boards(sub)

    from host_tools.provision_cli import register as register_provisioning

    register_provisioning(sub)

    from host_tools.board_tools.cli import register as register_board_tools

    register_board_tools(sub)

    from host_tools.audit.cli import register as register_audit

    register_audit(sub)

    from host_tools.ota.cli import register as register_ota

    register_ota(sub)

    from host_tools.fleet_cli import register as register_fleet

    register_fleet(sub)

    v = sub.add_parser("validate", help="run the checklist against a kit and report")
    v.add_argument("--board", default="sim")
    v.add_argument("--json", action="store_true", help="machine-readable report")
    v.add_argument("--workdir", type=Path, help="keep bench and kit state here (default: temp)")
    v.set_defaults(func=cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _interrupt_notes.clear()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="thingkit: %(message)s"
    )
    from provisioning.errors import ProvisioningError

    try:
        return args.func(args)
    except UserError as exc:
        print(f"thingkit: {exc.line()}", file=sys.stderr)
        return 1
    except ProvisioningError as exc:  # a bad bundle, CA, manifest, spec, image, store
        print(f"thingkit: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(_interrupted(), file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
