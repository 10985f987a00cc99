"""What the LDT concludes from what it saw: each reading's phase, loss, pending and
duplicates (from the kits' own numbering), and sessions, reconnects and resets (from
their consoles).

Loss: App #2 numbers its readings ``seq`` 1, 2, ... per boot (``boot`` id), and a
reading leaves the kit's outbox only once the broker acknowledged it. So every reading a
kit took is on the broker (seen by the LDT's persistent-session ledger) or still on the
kit's flash; a ``seq`` that is in neither is lost. Each reading is put in the phase
during which it was taken (its device timestamp, less that boot's clock offset); a lost
one where its neighbours place it.
"""

from __future__ import annotations

import statistics
import time
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

from host_tools.ldt.context import Context, KitRun
from host_tools.ldt.watch import (
    BOOT_RX,
    LAST_RESORT_RX,
    ONLINE_RX,
    SESSION_END_RX,
    TRACEBACK_RX,
    WDT_RX,
)


class Phases:
    """Which phase a host time falls in (before the first: the first; after: the last)."""

    def __init__(self, ctx: Context) -> None:
        self.names = [p.name for p in ctx.phases]
        self.starts = [p.t0 for p in ctx.phases]

    def of(self, t: float) -> str:
        i = bisect_right(self.starts, t) - 1
        return self.names[max(0, min(i, len(self.names) - 1))]


def _taken_estimate(seq: int, known: list[int], got: dict[int, float], interval_s: float) -> float:
    """When a reading that never arrived was taken: between the readings around it that
    did (in proportion to their seq), else one interval per seq from the nearest one."""
    if not known:
        return 0.0
    i = bisect_right(known, seq)
    if 0 < i < len(known):
        a, b = known[i - 1], known[i]
        return got[a] + (got[b] - got[a]) * (seq - a) / (b - a)
    near = known[i - 1] if i else known[0]
    return got[near] + (seq - near) * interval_s


def readings(
    k: KitRun, current: dict[str, int], phases: Phases, interval_s: float
) -> dict[str, Any]:
    """Per phase: sent (taken), received, lost, pending (on flash, not delivered),
    duplicated; and the lost ones."""
    led = k.ledger
    by_boot: dict[str, dict[int, float]] = {}  # boot -> seq -> taken (host time)
    offsets: dict[str, float] = {}
    msgs = [(m.t, m.json()) for m in list(led.messages)]
    for t, d in msgs:
        if isinstance(d, dict) and "seq" in d and "ts" in d:
            b = str(d["boot"])
            offsets[b] = max(offsets.get(b, -1e18), d["ts"] / 1000 - t)
    for t, d in msgs:
        if isinstance(d, dict) and "seq" in d and "ts" in d:
            b = str(d["boot"])
            by_boot.setdefault(b, {}).setdefault(int(d["seq"]), d["ts"] / 1000 - offsets[b])
    boots = set(by_boot) | set(k.on_flash) | set(current)
    fig: dict[str, dict[str, int]] = {}
    lost_list, pending_list = [], []

    def add(phase: str, key: str, n: int = 1) -> None:
        f = fig.setdefault(
            phase,
            {
                "sent": 0,
                "received": 0,
                "lost": 0,
                "pending": 0,
                "duplicated": 0,
                "intervals_missed": 0,
            },
        )
        f[key] += n

    for b in sorted(boots):
        got = by_boot.get(b, {})
        # Cadence: intervals in which the kit took no reading (its loop was held up, or
        # it had no clock), between two readings that arrived.
        for seq, t in got.items():
            if seq - 1 in got:
                gap = round((t - got[seq - 1]) / interval_s) - 1
                if gap > 0:
                    add(phases.of(t), "intervals_missed", gap)
        if b in current:  # the running boot: up to the last reading of the run
            last = max(current[b], max(got, default=0))
        else:  # an ended boot: everything it took is delivered or on its flash
            last = max([*got, *k.on_flash.get(b, ()), 0])
        counts: Mapping[int, int] = led.seen.get(b, {})
        known = sorted(got)
        for seq in range(1, last + 1):
            if seq in got:
                ph = phases.of(got[seq])
                add(ph, "sent")
                add(ph, "received")
                if counts.get(seq, 1) > 1:
                    add(ph, "duplicated", counts[seq] - 1)
                continue
            ph = phases.of(_taken_estimate(seq, known, got, interval_s))
            add(ph, "sent")
            if seq in k.on_flash.get(b, ()):
                add(ph, "pending")
                pending_list.append((k.name, b, seq))
            else:
                add(ph, "lost")
                lost_list.append((k.name, b, seq))
    return {
        "per_phase": fig,
        "lost": lost_list,
        "pending": pending_list,
        "out_of_order": out_of_order(list(led.order)),
        "boot_offsets_s": {b: round(o, 2) for b, o in offsets.items()},
    }


def out_of_order(order: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """Readings whose first copy arrived after a later reading of the same boot (the
    outbox sends oldest first): (boot, seq, the higher seq that came before it)."""
    top: dict[str, int] = {}
    seen: set[tuple[str, int]] = set()
    late = []
    for boot, seq in order:
        if (boot, seq) in seen:
            continue  # a duplicate: QoS 1 allows it, and only first copies count
        seen.add((boot, seq))
        if seq < top.get(boot, 0):
            late.append((boot, seq, top[boot]))
        top[boot] = max(top.get(boot, 0), seq)
    return late


# -- console: sessions, reconnects, resets ----------------------------------------------------
def console(ctx: Context, k: KitRun, phases: Phases, running: bool) -> dict[str, Any]:
    w = ctx.watch
    ends = [ln.t for ln, _ in w.find(k.name, SESSION_END_RX)]
    onlines = w.find(k.name, ONLINE_RX)
    boots = w.find(k.name, BOOT_RX)
    boot_times = [ln.t for ln, _ in boots]
    # A reconnect: a session synced after sessions ended (not the first of a boot). Its
    # delay is the time offline: from the first session end since the kit was last
    # online (or booted) to this sync; every failed attempt meanwhile also logs an end.
    reconnects = []
    prev = 0.0
    for ln, _ in onlines:
        start = max([prev, *(t for t in boot_times if t <= ln.t)])
        failed = [t for t in ends if start <= t <= ln.t]
        if failed:
            reconnects.append(
                {
                    "phase": phases.of(ln.t),
                    "t": ln.t,
                    "delay_s": round(ln.t - failed[0], 2),
                    "attempts": len(failed),
                }
            )
        prev = ln.t
    last_resorts = [ln.t for ln, _ in w.find(k.name, LAST_RESORT_RX)]
    resets = []
    for i, (ln, m) in enumerate(boots):
        cause = m.group(2)
        why, explained = "", False
        if i == 0:
            why, explained = "the LDT started the kit", True
        elif cause == "power_on" and any(0 <= ln.t - c < 60 for c in k.power_cuts):
            why, explained = "power cut by the LDT", True
        elif cause == "soft" and any(0 <= ln.t - c < 60 for c in last_resorts):
            why, explained = "offline reboot (no cloud session for offline.reboot_after_s)", True
        elif cause == "watchdog":
            why = "watchdog reset: the main loop stopped feeding it"
        else:
            why = f"reset ({cause}) the LDT did not cause"
        resets.append(
            {
                "kit": k.name,
                "phase": phases.of(ln.t),
                "t": ln.t,
                "cause": cause,
                "explained": explained,
                "why": why,
            }
        )
    if not running:
        resets.append(
            {
                "kit": k.name,
                "phase": phases.names[-1],
                "t": time.time(),
                "cause": "stopped",
                "explained": False,
                "why": "the kit's process ended (crash)",
            }
        )
    versions = [int(m.group(1)) for _, m in onlines]
    return {
        "sessions_ended": [{"phase": phases.of(t), "t": t} for t in ends],
        "reconnects": reconnects,
        "resets": resets,
        "watchdog_lines": w.count(k.name, WDT_RX),
        "tracebacks": w.count(k.name, TRACEBACK_RX),
        "sync_versions": versions,
    }


def delays(ds: list[float]) -> dict:
    if not ds:
        return {"count": 0}
    return {
        "count": len(ds),
        "min": min(ds),
        "median": round(statistics.median(ds), 2),
        "max": max(ds),
    }
