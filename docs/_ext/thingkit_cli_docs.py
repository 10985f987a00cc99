"""Sphinx extension: the command reference, generated from the CLI's own command table.

The ``thingkit-cli`` directive builds ``host_tools.cli.build_parser()`` (the same parser
``thingkit --help`` prints) and writes one section per command: its help line and its
full ``--help`` text. The reference cannot drift from the commands.
"""

from __future__ import annotations

import argparse
import os

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def leaves(p: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """Every runnable command of a parser as (words, parser, help line), in table order."""
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield words, p
        return
    for name, sp in subs[0].choices.items():
        yield from leaves(sp, (*words, name))


def _help_text(p: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"  # the same line width in every build
    try:
        return p.format_help()
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


class CommandReference(SphinxDirective):
    """``.. thingkit-cli::``: every command, from the parser."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from host_tools.cli import build_parser

        parser = build_parser()
        parser.prog = "thingkit"
        lines = ["The whole command::", ""]
        lines += ["   " + ln for ln in _help_text(parser).splitlines()]
        lines.append("")
        for words, p in leaves(parser):
            name = "thingkit " + " ".join(words)
            lines += [name, "-" * len(name), ""]
            if p.description:
                lines += [p.description.replace("`", "``").replace("````", "``"), ""]
            lines += ["::", ""]
            lines += ["   " + ln for ln in _help_text(p).splitlines()]
            lines.append("")
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, "<thingkit-cli>"), node)
        return node.children


def _always_outdated(app, env, added, changed, removed) -> list[str]:
    """The pages with the reference: read again on every build, since the commands live
    in code Sphinx does not watch."""
    return [doc for doc in env.found_docs if doc == "cli"]


def setup(app: Sphinx) -> dict:
    app.add_directive("thingkit-cli", CommandReference)
    app.connect("env-get-outdated", _always_outdated)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
