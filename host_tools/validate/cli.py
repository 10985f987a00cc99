"""``thingkit validate``: run the checklist on a kit and report.

    thingkit validate                                   # virtual kit, local bench
    thingkit validate --target serial --port URL --board ID [--env-file F]
    thingkit validate --cloud remote --endpoint HOST [--endpoint-port 8883] \\
        --operator-cert F --operator-key F [--ca F] --bundle DIR
    ... --json | --markdown F | --html F

``--port`` is the board's serial port (a pyserial URL), as in ``thingkit deploy`` and the
HIL suite; the remote broker's port is ``--endpoint-port`` (or ``--endpoint HOST:PORT``).
Progress goes to stderr: each check as it starts and ends (plain lines without a
terminal, ``rich`` on one). Exit status 0 when no item is not met.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from host_tools.errors import UserError
from host_tools.validate import checklist as cl

try:  # the lead's command table (host_tools/cli/table.py), when present
    from host_tools.cli.table import Command, arg
except ImportError:  # pragma: no cover - older CLI layout
    Command = arg = None  # type: ignore[assignment,misc]


class LineProgress:
    """Each check as it starts and ends, as plain lines on stderr."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr

    def _say(self, text: str) -> None:
        print(f"thingkit: validate {text}", file=self.stream, flush=True)

    def started(self, check: Any, index: int, total: int) -> None:
        self._say(f"[{index}/{total}] {check.name} ...")

    def ended(self, check: Any, results: list[cl.Result], seconds: float) -> None:
        got = ", ".join(f"{r.id} {r.status.replace('_', ' ')}" for r in results) or "done"
        self._say(f"{check.name}: {got} ({seconds:.1f} s)")


_STYLE = {cl.MET: "green", cl.NOT_MET: "bold red", cl.NOT_RUN: "yellow"}


class RichProgress(LineProgress):
    """The same on a terminal: a spinner while a check runs, a coloured line when it ends."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self._status: Any = None

    def started(self, check: Any, index: int, total: int) -> None:
        self._status = self.console.status(f"[{index}/{total}] {check.name} ...")
        self._status.start()

    def ended(self, check: Any, results: list[cl.Result], seconds: float) -> None:
        if self._status is not None:
            self._status.stop()
        from rich.text import Text

        line = Text(f"{check.name}: ")
        for i, r in enumerate(results):
            line.append(("" if i == 0 else ", ") + r.id + " ")
            line.append(r.status.replace("_", " "), style=_STYLE.get(r.status, ""))
        line.append(f" ({seconds:.1f} s)", style="dim")
        self.console.print(line)


def progress_for(stream: Any = None) -> LineProgress:
    """Rich progress on a terminal (unless THINGKIT_PLAIN=1), plain lines otherwise."""
    import os

    s = stream or sys.stderr
    if s.isatty() and os.environ.get("THINGKIT_PLAIN", "") in ("", "0"):
        return RichProgress()
    return LineProgress(s)


def _cloud(args: argparse.Namespace):
    from host_tools.validate.sim_run import CloudSpec

    endpoint, port = args.endpoint, args.endpoint_port
    if endpoint and ":" in endpoint:
        endpoint, _, p = endpoint.rpartition(":")
        try:
            port = int(p)
        except ValueError:
            raise UserError(f"bad --endpoint {args.endpoint!r}", "give HOST or HOST:PORT") from None
    if args.cloud == "bench" and (endpoint or args.operator_cert or args.bundle):
        raise UserError("--endpoint, --operator-cert and --bundle go with --cloud remote")
    return CloudSpec(
        args.cloud, endpoint, port, args.operator_cert, args.operator_key, args.ca, args.bundle
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from host_tools.cli import on_interrupt, tool_version
    from host_tools.validate import report, sim_run
    from host_tools.validate.update_checks import running_version

    spec = _cloud(args)
    kept = f"its state is kept in {args.workdir}" if args.workdir else "its temporary files removed"
    on_interrupt(f"validate stopped before its report: its bench and kit were stopped, {kept}")
    progress = progress_for()
    t0 = time.time()
    target = args.target or ("serial" if args.env_file else "sim")
    if (target, args.board, spec.kind, args.port) == ("sim", "sim", "bench", None):
        results, meta = sim_run.validate_sim(args.workdir, progress)
    else:
        results, meta = sim_run.validate(
            target, args.board, args.port, args.env_file, spec, args.workdir, progress
        )
    meta.setdefault("duration_s", round(time.time() - t0, 2))
    meta["verdict"] = report.verdict(results)
    meta["firmware"] = meta.get("kit", {}).pop("fw", None) or running_version()
    meta["tool_version"] = tool_version()
    for path, render in ((args.markdown, report.render_markdown), (args.html, report.render_html)):
        if path is not None:
            Path(path).write_text(render(results, meta))
    print(report.render_json(results, meta) if args.json else report.render_text(results, meta))
    return 0 if report.ok(results) else 1


def arguments() -> list[tuple[tuple[str, ...], dict]]:
    """The command's arguments, as (flags, add_argument keywords)."""
    return [
        (("--target",), {"choices": ["sim", "serial"], "default": None,
                         "help": "sim: a virtual kit (default); serial: a board on --port or "
                         "in --env-file (the default with --env-file)"}),
        (("--board",), {"default": "sim", "help": "board definition id (default sim)"}),
        (("--port",), {"help": "the board's serial port, a pyserial URL (serial target)"}),
        (("--env-file",), {"type": Path, "help": "a bench of boards (TOML, as the HIL suite "
                           "takes): ports, reset and power switches (implies serial)"}),
        (("--cloud",), {"choices": ["bench", "remote"], "default": "bench",
                        "help": "bench: a local bench of its own (default); remote: a broker "
                        "such as AWS IoT Core"}),
        (("--endpoint",), {"help": "remote broker host (or HOST:PORT): AWS IoT Core's "
                           "iot:Data-ATS endpoint (thingkit validate-operator create prints it)"}),
        (("--endpoint-port",), {"type": int, "default": 8883, "help": "remote broker port "
                                "(default 8883)"}),
        (("--operator-cert",), {"type": Path, "help": "PEM certificate of the operator "
                                "identity that observes the kit (remote)"}),
        (("--operator-key",), {"type": Path, "help": "its private key (PEM)"}),
        (("--ca",), {"type": Path, "help": "CA file the remote broker's certificate chains to "
                     "(default: the system's)"}),
        (("--bundle",), {"type": Path, "help": "the kit's device bundle for the remote cloud "
                         "(config.json, certs/ from thingkit provision)"}),
        (("--json",), {"action": "store_true", "help": "print one JSON document on stdout"}),
        (("--markdown",), {"type": Path, "metavar": "FILE", "help": "also write the report "
                           "as Markdown"}),
        (("--html",), {"type": Path, "metavar": "FILE", "help": "also write the report as one "
                       "self-contained HTML file"}),
        (("--workdir",), {"type": Path, "help": "keep bench and kit state here (default: temp)"}),
    ]  # fmt: skip


HELP = "run the checklist against a kit and report"

COMMANDS: tuple = (
    (Command("validate", cmd_validate, HELP, tuple(arg(*f, **o) for f, o in arguments())),)
    if Command is not None
    else ()
)


# -- the operator identity on AWS IoT Core ---------------------------------------------
def _iot(region: str):
    import boto3

    return boto3.client("iot", region_name=region)


def cmd_operator_create(args: argparse.Namespace) -> int:
    """Plan (``--dry-run``: print only) and make the validator's operator identity."""
    import json

    import boto3

    from host_tools.validate import aws_operator

    account = args.account_id
    if not account:
        if args.dry_run:
            account = "<account>"
        else:
            account = boto3.client("sts", region_name=args.region).get_caller_identity()["Account"]
    plan = aws_operator.operator_plan(args.region, account, args.thing, args.topic_prefix)
    if args.dry_run:
        print(json.dumps({"steps": plan.steps(), "policy": plan.policy}, indent=1)
              if args.json else plan.text())  # fmt: skip
        return 0
    out = _operator_dir(args)
    made = aws_operator.create(_iot(args.region), plan, out)
    if args.json:
        print(json.dumps(made, indent=1))
    else:
        print(
            f"operator identity for {args.thing} in {out} (policy {made['policyName']}); "
            f"validate with --cloud remote --endpoint {made['endpoint']} --operator-cert "
            f"{out / 'operator.crt'} --operator-key {out / 'operator.key'}; delete it "
            f"after with: thingkit validate-operator delete --dir {out}"
        )
    return 0


def cmd_operator_delete(args: argparse.Namespace) -> int:
    import json

    from host_tools.validate import aws_operator

    out = _operator_dir(args)
    state = out / aws_operator.STATE
    if not state.exists():
        raise UserError(f"no operator identity recorded in {out}")
    region = args.region or json.loads(state.read_text())["region"]
    done = aws_operator.teardown(_iot(region), out)
    print(json.dumps({"done": done}) if args.json else "; ".join(done) or "nothing to delete")
    return 0


DIR_HELP = (
    "directory of the operator's certificate, key and record (default .thingkit/validate-operator)"
)


def _operator_dir(args: argparse.Namespace) -> Path:
    from host_tools.paths import state_home

    return args.dir or state_home() / "validate-operator"


def operator_arguments(create: bool) -> list[tuple[tuple[str, ...], dict]]:
    out: list[tuple[tuple[str, ...], dict]] = [
        (("--dir",), {"type": Path, "default": None, "help": DIR_HELP}),
        (("--region",), {"required": create, "help": "AWS region"}),
        (("--json",), {"action": "store_true", "help": "print one JSON document on stdout"}),
    ]
    if create:
        out += [
            (("--thing",), {"required": True, "help": "the thing the validator observes"}),
            (("--account-id",), {"help": "AWS account id (default: from STS)"}),
            (("--topic-prefix",), {"default": "thingkit"}),
            (("--dry-run",), {"action": "store_true", "help": "print the plan, change nothing"}),
        ]
    return out


OPERATOR_GROUP = {"validate-operator": "the validator's operator identity on AWS IoT Core"}
_OPERATOR = (
    ("validate-operator create", cmd_operator_create,
     "make the operator identity validate --cloud remote uses (--dry-run first)", True),
    ("validate-operator delete", cmd_operator_delete,
     "delete the operator identity (certificate and policy)", False),
)  # fmt: skip
if Command is not None:
    COMMANDS = COMMANDS + tuple(
        Command(name, func, hlp, tuple(arg(*f, **o) for f, o in operator_arguments(create)))
        for name, func, hlp, create in _OPERATOR
    )


def register_operator(subparsers: argparse._SubParsersAction) -> None:
    """Add ``validate-operator create|delete`` to a ``thingkit`` parser."""
    grp = subparsers.add_parser("validate-operator", help=OPERATOR_GROUP["validate-operator"])
    sub = grp.add_subparsers(dest="sub", required=True)
    for name, func, hlp, create in _OPERATOR:
        p = sub.add_parser(name.split()[1], help=hlp, description=hlp)
        for flags, options in operator_arguments(create):
            p.add_argument(*flags, **options)
        p.set_defaults(func=func)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``validate`` and ``validate-operator create|delete`` to a ``thingkit`` parser."""
    p = subparsers.add_parser("validate", help=HELP, description=HELP)
    for flags, options in arguments():
        p.add_argument(*flags, **options)
    p.set_defaults(func=cmd_validate)
    register_operator(subparsers)
