"""``thingkit audit``: the Appendix B gate over the repository, kits and fleets.

Listed in ``COMMANDS`` (host_tools/cli/table.py). Exit status 0 when nothing
is found, 1 with findings (one ``path:line: rule: message`` line each).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from host_tools.audit.rules import RULES
from host_tools.audit.scan import DEFAULT_PATHS, audit
from host_tools.cli.table import JSON, Command, arg, build


def cmd_audit(args: argparse.Namespace) -> int:
    report = audit(args.paths or None, fleets=args.fleet, allow_file=args.allowlist)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
        return 0 if report.ok else 1
    for f in report.findings:
        print(f.line_str())
    if args.verbose_excused:
        for f, a in report.excused:
            print(f"excused: {f.line_str()} ({a.reason})")
    for a in report.stale:
        print(f"thingkit: audit: allow-list entry excuses nothing: {a.describe()}", file=sys.stderr)
    by_rule = Counter(f.rule for f in report.findings)
    rules = ", ".join(f"{n} {r}" for r, n in sorted(by_rule.items()))
    print(
        f"audit: {report.files} files, {report.configs} device configs, "
        f"{len(report.findings)} findings{f' ({rules})' if rules else ''}, "
        f"{len(report.excused)} excused by the allow-list, in {report.seconds:.1f} s"
    )
    return 0 if report.ok else 1


def _description() -> str:
    return "Rules: " + "; ".join(f"{r} ({c})" for r, (c, _) in RULES.items()) + "."


COMMANDS = (
    Command(
        "audit",
        cmd_audit,
        "check files, kits and fleets for Appendix B violations",
        (
            arg(
                "paths",
                nargs="*",
                type=Path,
                help=f"files or directories (default: {', '.join(DEFAULT_PATHS)} of the "
                "repository, and the whole repository for private keys)",
            ),
            arg(
                "--fleet",
                action="append",
                type=Path,
                default=[],
                metavar="DIR",
                help="device filesystems to check (kit flash dirs, provisioned bundles): "
                "credential fields and certificate reuse; repeatable",
            ),
            arg("--allowlist", type=Path, help="allow-list file (default: the repository's)"),
            JSON,
            arg(
                "--show-excused",
                dest="verbose_excused",
                action="store_true",
                help="also print what the allow-list excuses, with its reason",
            ),
        ),
        description=_description(),
    ),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``audit`` to a parser (for tests of this module alone)."""
    build(subparsers, COMMANDS, {})
