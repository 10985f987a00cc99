"""What commands print: a JSON document or text on stdout, progress on stderr.

Progress goes to stderr so that stdout stays the command's result (``--json`` output can be
piped). On a terminal it is drawn by ``rich`` (which honours ``NO_COLOR``); otherwise, or
with ``THINGKIT_PLAIN=1``, each step is one plain ``thingkit: <step>…`` line (ending in
"…": work under way, never an error), so logs and CI show what a long command did.
``--json`` silences progress.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from types import TracebackType
from typing import Any, Self


def emit(args: argparse.Namespace, doc: Any, text: str) -> None:
    """Print ``doc`` as JSON when the command was given ``--json``, else ``text``."""
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=1, default=str))
    elif text:
        print(text)


def _rich_wanted() -> bool:
    return sys.stderr.isatty() and os.environ.get("THINGKIT_PLAIN", "") in ("", "0")


class Progress:
    """Progress of one long command: named steps, and counted phases (``advance``).

    Use as a context manager; ``step`` says a step starts, ``advance(phase, done, total)``
    moves a bar (plain mode prints a line at each tenth and at the end), ``done(line)``
    closes with the command's summary line (on stderr in plain mode, as the result is on
    stdout). Quiet (``--json`` or ``quiet=True``) prints nothing.
    """

    def __init__(self, args: argparse.Namespace | None = None, quiet: bool = False) -> None:
        self.quiet = quiet or bool(getattr(args, "json", False))
        self.t0 = time.monotonic()
        self._rich: Any = None
        self._tasks: dict[str, Any] = {}
        self._shown: dict[str, int] = {}
        self._status: Any = None

    def __enter__(self) -> Self:
        if not self.quiet and _rich_wanted():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._rich.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._rich is not None:
            self._finish_step()
            self._rich.stop()
            self._rich = None

    def _plain(self, line: str) -> None:
        if not self.quiet:
            print(f"thingkit: {line}", file=sys.stderr, flush=True)

    def _finish_step(self) -> None:
        if self._rich is not None and self._status is not None:
            self._rich.update(self._status, total=1, completed=1)
            self._status = None

    def step(self, text: str) -> None:
        """A step of the command starts (the previous one, if any, has ended)."""
        if self.quiet:
            return
        if self._rich is None:
            self._plain(f"{text}…")
            return
        self._finish_step()
        self._status = self._rich.add_task(text, total=None)

    def advance(self, phase: str, done: int, total: int) -> None:
        """``done`` of ``total`` items of ``phase`` are finished."""
        if self.quiet:
            return
        if self._rich is not None:
            self._finish_step()
            if phase not in self._tasks:
                self._tasks[phase] = self._rich.add_task(phase, total=total)
            self._rich.update(self._tasks[phase], completed=done, total=total)
            return
        tenth = done * 10 // total if total else 10
        if tenth > self._shown.get(phase, -1) or done >= total:
            if self._shown.get(phase) == 10:
                return
            self._shown[phase] = 10 if done >= total else tenth
            self._plain(f"{phase}: {done}/{total}…")

    def done(self, line: str) -> None:
        """The command's closing summary line, with its elapsed time."""
        self._finish_step()
        if not self.quiet:
            took = time.monotonic() - self.t0
            msg = f"{line} ({took:.1f} s)"
            if self._rich is not None:
                self._rich.console.print(msg, markup=False, highlight=False)
            else:
                self._plain(msg)
