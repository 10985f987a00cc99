"""Figures taken outside the kits: connects at the broker (its log), memory (/proc).

- :func:`connects` reads mosquitto's log from an offset: every accepted CONNECT is a line
  ``<time>: New client connected from <addr> as <client id> (...)``; the log's timestamps
  have one-second resolution, which sets the bin of the connects-per-second figures;
- :func:`broker_started_at`: the time of mosquitto's ``running`` line after an offset;
- :func:`tree_memory`: RSS and PSS of a process and its descendants (a virtual kit is its
  reset loop plus the MicroPython process), from ``/proc/<pid>/smaps_rollup``.

    cs = connects(bench.layout.broker_log, mark, things)
    per_s = per_second([t for t, _ in cs], start, end)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

_CONNECT = re.compile(
    rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d): New client connected from \S+ as (\S+) "
)
_RUNNING = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d): mosquitto version \S+ running")


def _when(stamp: bytes) -> float:
    """A log timestamp (mosquitto formats local time) as a Unix time."""
    return time.mktime(time.strptime(stamp.decode(), "%Y-%m-%dT%H:%M:%S"))


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _lines(path: Path, offset: int) -> list[bytes]:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def connects(
    path: Path, offset: int, client_ids: set[str] | None = None
) -> list[tuple[float, str]]:
    """(time, client id) of every accepted connect logged after ``offset``."""
    out = []
    for line in _lines(path, offset):
        m = _CONNECT.match(line)
        if m:
            cid = m.group(2).decode(errors="replace")
            if client_ids is None or cid in client_ids:
                out.append((_when(m.group(1)), cid))
    return out


def broker_started_at(path: Path, offset: int) -> float | None:
    """When mosquitto logged that it runs, after ``offset`` (None: not yet)."""
    for line in _lines(path, offset):
        m = _RUNNING.match(line)
        if m:
            return _when(m.group(1))
    return None


def per_second(times: list[float], start: float, end: float) -> list[int]:
    """Counts in one-second bins from ``start`` (inclusive) to ``end`` (inclusive)."""
    n = int(end - start) + 1
    bins = [0] * max(n, 1)
    for t in times:
        i = int(t - start)
        if 0 <= i < len(bins):
            bins[i] += 1
    return bins


@dataclass(frozen=True)
class Memory:
    """Resident (RSS) and proportional (PSS: shared pages split among sharers) sizes, bytes."""

    rss: int
    pss: int
    processes: int


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return []


def tree_memory(pid: int) -> Memory:
    """RSS and PSS of ``pid`` and every descendant (0 for processes that are gone)."""
    rss = pss = n = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        n += 1
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
        todo.extend(_children(p))
    return Memory(rss, pss, n)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants so far, seconds."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        todo.extend(_children(p))
    return total / tick


def drops_logged(path: Path, offset: int, client_prefix: str = "") -> int:
    """How often mosquitto said it started dropping outgoing messages for a client whose
    id starts with ``client_prefix`` (its queue for that client was full)."""
    key = f"Outgoing messages are being dropped for client {client_prefix}".encode()
    return sum(1 for line in _lines(path, offset) if key in line)
