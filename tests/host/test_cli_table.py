"""The command table: one parser built from data, one name per concept, ``--json`` on
every command that reports."""

from __future__ import annotations

import argparse
import inspect

from host_tools import cli
from host_tools.cli import commands

# Commands that stream rather than report: a serial monitor's output is the board's.
NO_JSON = {
    "console": "streams the board's serial output as it comes",
    "view": "serves a page until Ctrl-C; its one line says where",
}


def leaves(p: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """Every runnable command of the parser, as (words, parser)."""
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield words, p
        return
    for name, sp in subs[0].choices.items():
        yield from leaves(sp, (*words, name))


def options(p: argparse.ArgumentParser) -> set[str]:
    return {s for a in p._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


def test_every_reporting_command_takes_json() -> None:
    missing = [
        " ".join(w)
        for w, p in leaves(cli.build_parser())
        if "--json" not in options(p) and " ".join(w) not in NO_JSON
    ]
    assert missing == []


def test_one_name_per_concept() -> None:
    """The bench directory is --bench-root and a fleet directory --fleet in every command
    (``--root`` is still accepted, hidden, where the bench directory was called that)."""
    for words, p in leaves(cli.build_parser()):
        opts = options(p)
        assert "--out" not in opts, words
        if words[0] != "fleet":  # the fleet simulator's own state directory
            assert "--root" not in opts, words
    up = {" ".join(w): p for w, p in leaves(cli.build_parser())}["bench up"]
    assert "--root" not in up.format_help()
    assert up.parse_args(["--root", "/b"]).bench_root.as_posix() == "/b"


def test_table_commands_are_unique_and_documented() -> None:
    names = [c.name for c in commands.COMMANDS]
    assert len(names) == len(set(names))
    for c in commands.COMMANDS:
        assert c.help and c.func.__name__.startswith("cmd_"), c.name
        # thin wrappers: the work is in library functions
        assert len(inspect.getsource(c.func).splitlines()) <= 60, c.name


def test_help_lists_exit_codes() -> None:
    text = cli.build_parser().format_help()
    assert "130" in text and "exit status" in text
