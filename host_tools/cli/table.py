"""The command table: every ``thingkit`` command as data, built into one argparse parser.

A command is a :class:`Command` (its words, the function that runs it, a help line and its
arguments); a feature module lists its commands in ``COMMANDS`` and
:mod:`host_tools.cli.commands` gathers every module's list in one table. The parser is
built from that table alone, so the help, the docs and the tests see the same commands.

Names shared by several commands are defined here once (``--bench-root``, ``--fleet``,
``--json``), so one concept has one name everywhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call: option strings (or a positional name) and its keywords."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(*self.flags, **self.options)


def arg(*flags: str, **options: Any) -> Arg:
    """An :class:`Arg`, written like ``parser.add_argument``."""
    return Arg(flags, options)


@dataclass(frozen=True)
class ArgGroup:
    """Arguments shown under a title in ``--help``, or of which exactly one may be given
    (``exclusive``; ``required``: one must be)."""

    args: tuple[Arg, ...]
    title: str = ""
    exclusive: bool = False
    required: bool = False

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.exclusive:
            group: Any = parser.add_mutually_exclusive_group(required=self.required)
        else:
            group = parser.add_argument_group(self.title or None)
        for a in self.args:
            a.add_to(group)


@dataclass(frozen=True)
class Command:
    """One command: ``name`` is its words after ``thingkit`` (``"bench up"``, ``"audit"``)."""

    name: str
    func: Handler
    help: str
    args: tuple[Arg | ArgGroup, ...] = ()
    description: str | None = None

    @property
    def words(self) -> list[str]:
        return self.name.split()


# -- arguments that mean the same thing in every command --------------------------------
JSON = arg("--json", action="store_true", help="print one JSON document on stdout instead of text")
BENCH_ROOT = (
    arg(
        "--bench-root",
        type=Path,
        dest="bench_root",
        help="bench state directory (default .thingkit/bench; kits live beside it)",
    ),
    # the name of earlier releases, still accepted
    arg("--root", type=Path, dest="bench_root", help=argparse.SUPPRESS),
)
FLEET_DIR = arg("--fleet", type=Path, metavar="DIR", help="fleet directory (default .thingkit/fleet)")


def build(
    sub: argparse._SubParsersAction, commands: Iterable[Command], groups: dict[str, str]
) -> None:
    """Add ``commands`` to ``sub`` (the top-level subparsers); ``groups`` gives the help of
    each first word shared by several commands (``bench``, ``kit``...)."""
    parsers: dict[tuple[str, ...], argparse._SubParsersAction] = {(): sub}
    for cmd in commands:
        words = cmd.words
        for depth in range(1, len(words)):
            key = tuple(words[:depth])
            if key not in parsers:
                grp = parsers[key[:-1]].add_parser(key[-1], help=groups.get(" ".join(key)))
                dest = "sub" if depth == 1 else f"sub{depth}"
                parsers[key] = grp.add_subparsers(dest=dest, required=True)
        p = parsers[tuple(words[:-1])].add_parser(
            words[-1], help=cmd.help, description=cmd.description or cmd.help
        )
        for a in cmd.args:
            a.add_to(p)
        p.set_defaults(func=cmd.func)


def register(sub: argparse._SubParsersAction, commands: Iterable[Command]) -> None:
    """Add a feature's own commands to a parser (for tests of one feature)."""
    build(sub, commands, {})
