"""``thingkit validate``: run the checklist against a kit and print the report."""

from __future__ import annotations

import argparse
from pathlib import Path

from host_tools.cli.interrupt import on_interrupt
from host_tools.cli.table import JSON, Command, arg
from host_tools.errors import UserError


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


COMMANDS = (
    Command(
        "validate",
        cmd_validate,
        "run the checklist against a kit and report",
        (
            arg("--board", default="sim"),
            JSON,
            arg("--workdir", type=Path, help="keep bench and kit state here (default: temp)"),
        ),
    ),
)
