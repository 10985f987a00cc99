"""``thingkit audit``: the Appendix B gate over the repository, kits and fleets.

Wire it into the main parser with ``register(subparsers)``. Exit status 0 when nothing
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


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``audit`` to a parser's subcommands; returns the ``audit`` parser."""
    rules = "; ".join(f"{r} ({c})" for r, (c, _) in RULES.items())
    p = subparsers.add_parser(
        "audit",
        help="check files, kits and fleets for Appendix B violations",
        description=f"Rules: {rules}.",
    )
    p.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help=f"files or directories (default: {', '.join(DEFAULT_PATHS)} of the repository, "
        "and the whole repository for private keys)",
    )
    p.add_argument(
        "--fleet",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="device filesystems to check (kit flash dirs, provisioned bundles): "
        "credential fields and certificate reuse; repeatable",
    )
    p.add_argument("--allowlist", type=Path, help="allow-list file (default: the repository's)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument(
        "--show-excused",
        dest="verbose_excused",
        action="store_true",
        help="also print what the allow-list excuses, with its reason",
    )
    p.set_defaults(func=cmd_audit)
    return p
