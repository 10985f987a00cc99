"""``thingkit ldt``: the long-duration test on the bench (docs/ldt.rst).

A thin wrapper over :func:`host_tools.ldt.run_ldt`, listed in ``COMMANDS`` for the CLI's
command table (``host_tools/cli/commands.py``); ``register(subparsers)`` adds it to a
parser on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from host_tools.cli.table import JSON, Command, arg
from host_tools.cli.table import register as register_table
from host_tools.ldt.profile import CI_DURATION_S, DEFAULT_DURATION_S, PHASES, parse_duration

HELP = (
    "long-duration test: kits through a broker restart, a long outage, a bad link, "
    "withheld responses and NTP trouble; summary with pass/fail per phase"
)
DESCRIPTION = (
    "Run virtual kits on a bench of their own through the phases of AWS Device Advisor's "
    "Long Duration Test (steady, broker restart, long disconnect, intermittent link, "
    "withheld responses) plus NTP trouble at boot, then write a summary (summary.json, "
    "summary.txt) of readings sent/received/lost/duplicated, reconnects, resets, heap per "
    "hour and shadow versions, with pass/fail per phase. Exit status 0 only if it passed."
)


def cmd_ldt(args: argparse.Namespace) -> int:
    """Run the LDT; print the summary (text, or JSON with ``--json``) and a verdict line.
    Exit status 0 if every phase and every run-wide check passed, 1 if not."""
    from host_tools.cli import on_interrupt
    from host_tools.cli.output import Progress
    from host_tools.ldt import LdtOptions, run_ldt
    from host_tools.ldt.summary import render, verdict_line

    opts = LdtOptions(
        duration_s=CI_DURATION_S if args.ci else parse_duration(args.duration),
        kits=args.kits,
        out=args.workdir,
        profile=args.profile or ("ci" if args.ci else None),
        phases=args.phases.split(",") if args.phases else None,
        seed=args.seed,
    )
    on_interrupt("the LDT's kits were powered off and its bench stopped; no summary written")
    with Progress(args) as prog:
        doc = run_ldt(opts, say=prog.step)
        prog.done(verdict_line(doc))
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
    else:
        print(render(doc))
        print(f"summary: {doc['files']['json']}, {doc['files']['text']}", file=sys.stderr)
    return 0 if doc["verdict"] == "pass" else 1


ARGS = (
    arg(
        "--duration",
        default=f"{int(DEFAULT_DURATION_S)}s",
        help="the phases' total time: 90s, 3m, 1h (default 1h; below 20 minutes the ci "
        "profile: readings every second, backoff cap 4 s)",
    ),
    arg("--ci", action="store_true", help=f"a CI run: --duration {CI_DURATION_S:.0f}s"),
    arg("--kits", type=int, default=1, help="virtual kits (a small fleet), default 1"),
    arg("--profile", choices=["ci", "field"], help="kit settings (default: by duration)"),
    arg("--phases", help=f"comma-separated subset, in order, of: {','.join(PHASES)}"),
    arg("--seed", type=int, default=18, help="the intermittent link's random faults"),
    arg(
        "--workdir",
        type=Path,
        help="bench, kits and summary here (default .thingkit/ldt/<UTC time>)",
    ),
    arg("--out", type=Path, dest="workdir", help=argparse.SUPPRESS),  # the name
    JSON,
)

COMMANDS: tuple[Command, ...] = (Command("ldt", cmd_ldt, HELP, ARGS, DESCRIPTION),)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``thingkit ldt`` to a parser (the CLI itself takes ``COMMANDS``)."""
    register_table(subparsers, COMMANDS)
