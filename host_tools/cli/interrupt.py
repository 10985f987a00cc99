"""What ``thingkit`` says when Ctrl-C stops a command: what was kept, in one line."""

from __future__ import annotations

from collections.abc import Callable

# What to say if Ctrl-C stops the running command (see on_interrupt); main() prints it.
_interrupt_notes: list[Callable[[], str]] = []


def on_interrupt(note: str | Callable[[], str]) -> None:
    """Say ``note`` (or what it returns, asked after the command has unwound) in one line
    if Ctrl-C stops the running command; the last note registered is the one said."""
    _interrupt_notes.append(note if callable(note) else (lambda: note))


def interrupted_line() -> str:
    """The line main() prints when Ctrl-C stopped the command."""
    try:
        note = _interrupt_notes[-1]() if _interrupt_notes else ""
    except Exception as exc:  # noqa: BLE001 (the note must not hide the interrupt)
        note = f"(state unknown: {exc})"
    return "thingkit: interrupted" + (f"; {note}" if note else "")


def reset() -> None:
    """Forget the notes of an earlier command (main() calls it before each command)."""
    _interrupt_notes.clear()
