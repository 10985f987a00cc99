"""``thingkit validate`` and ``validate-operator`` as entries of the CLI's command table
(host_tools/validate/cli.py: COMMANDS, or register(subparsers)): the table's rules hold."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import pytest

from host_tools.cli import table
from host_tools.validate import cli as vcli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="thingkit")
    table.build(p.add_subparsers(dest="command", required=True), vcli.COMMANDS, vcli.OPERATOR_GROUP)
    return p


def test_commands_follow_the_table_rules() -> None:
    names = [c.name for c in vcli.COMMANDS]
    assert names == ["validate", "validate-operator create", "validate-operator delete"]
    for c in vcli.COMMANDS:
        assert c.func.__name__.startswith("cmd_") and c.help
        assert len(inspect.getsource(c.func).splitlines()) <= 60, c.name
        opts = {s for a in c.args for s in a.flags}
        assert "--json" in opts and "--out" not in opts and "--root" not in opts, c.name


def test_parse() -> None:
    a = parser().parse_args(["validate", "--json", "--workdir", "w"])
    assert (a.func, a.board, a.target, a.cloud, a.json, a.workdir) == (
        vcli.cmd_validate,
        "sim",
        None,
        "bench",
        True,
        Path("w"),
    )
    a = parser().parse_args(
        ["validate", "--target", "serial", "--port", "socket://h:1", "--board", "esp32-devkitc",
         "--cloud", "remote", "--endpoint", "h:8884", "--html", "r.html"]
    )  # fmt: skip
    assert (a.port, a.endpoint, a.endpoint_port, a.html) == (
        "socket://h:1",
        "h:8884",
        8883,
        Path("r.html"),
    )
    assert vcli._cloud(a).port == 8884 and vcli._cloud(a).endpoint == "h"
    a = parser().parse_args(["validate-operator", "delete"])
    assert a.func is vcli.cmd_operator_delete and a.dir is None
    # register() gives the same commands to a plain argparse parser
    p = argparse.ArgumentParser(prog="thingkit")
    vcli.register(p.add_subparsers(dest="command", required=True))
    assert (
        p.parse_args(["validate-operator", "create", "--region", "r", "--thing", "t"]).thing == "t"
    )


def test_bench_cloud_takes_no_remote_options() -> None:
    from host_tools.errors import UserError

    a = parser().parse_args(["validate", "--endpoint", "h"])
    with pytest.raises(UserError, match="go with --cloud remote"):
        vcli._cloud(a)


class _Tty:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.lines.append(s)
        return len(s)

    def flush(self) -> None:
        pass


def test_progress_plain_off_a_terminal_and_rich_on_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from host_tools.validate.checklist import met, not_met, not_run
    from host_tools.validate.checks import CHECKS

    check = CHECKS[2]
    results = [met("app1.subscribe"), not_met("hw.tls12"), not_run("lens.rollback", "not run")]
    plain = io.StringIO()
    p = vcli.progress_for(plain)
    assert type(p) is vcli.LineProgress
    p.started(check, 3, 11)
    p.ended(check, results, 0.25)
    assert plain.getvalue().splitlines() == [
        f"thingkit: validate [3/11] {check.name} ...",
        (
            f"thingkit: validate {check.name}: app1.subscribe met, hw.tls12 not met, "
            "lens.rollback not run (0.2 s)"
        ),
    ]
    monkeypatch.delenv("THINGKIT_PLAIN", raising=False)
    rich = vcli.progress_for(_Tty())
    assert isinstance(rich, vcli.RichProgress)
    out = io.StringIO()
    rich.console = Console(file=out, force_terminal=True, color_system="standard", width=200)
    rich.started(check, 3, 11)
    rich.ended(check, results, 0.25)
    text = out.getvalue()
    assert "app1.subscribe" in text and "\x1b[" in text  # drawn, in colour
    monkeypatch.setenv("THINGKIT_PLAIN", "1")
    assert type(vcli.progress_for(_Tty())) is vcli.LineProgress
