"""The state every LDT phase works on: the bench, the fault proxy, the kits, what is
watched, and the record of each phase (what it did, what it checked)."""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from host_tools.bench.bench import Bench
from host_tools.bench.ledger import TelemetryLedger
from host_tools.bench.observer import Observer
from host_tools.faults import FaultProxy
from host_tools.kit.sim import SimKit
from host_tools.ldt.profile import Profile
from host_tools.ldt.watch import ONLINE_RX, SESSION_END_RX, ConsoleWatch, outbox_seqs


@dataclass
class Check:
    """One pass/fail statement of a phase, with what was seen."""

    name: str
    ok: bool
    detail: str


@dataclass
class PhaseRecord:
    """One phase: its time window (host time), what it did and what it checked."""

    name: str
    budget_s: float
    t0: float = 0.0
    t1: float = 0.0
    actions: list[dict] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)

    def act(self, what: str, **details: Any) -> None:
        self.actions.append({"t": round(time.time() - self.t0, 2), "what": what, **details})

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    @property
    def deadline(self) -> float:
        return self.t0 + self.budget_s


@dataclass
class KitRun:
    """One kit of the run, and what the LDT keeps about it."""

    name: str
    kit: SimKit
    ledger: TelemetryLedger
    power_cuts: list[float] = field(default_factory=list)  # host times the LDT cut power
    on_flash: dict[str, set[int]] = field(default_factory=dict)  # boot -> seqs seen on flash

    def scan_flash(self) -> dict[str, list[int]]:
        """Record the App #2 records on the kit's flash (the kit must be off)."""
        found = outbox_seqs(self.kit.flash)
        for boot, seqs in found.items():
            self.on_flash.setdefault(boot, set()).update(seqs)
        return found


class Context:
    """Shared by the phases of one run."""

    def __init__(
        self,
        bench: Bench,
        proxy: FaultProxy,
        kits: list[KitRun],
        observer: Observer,
        watch: ConsoleWatch,
        profile: Profile,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.bench = bench
        self.proxy = proxy
        self.kits = kits
        self.observer = observer
        self.watch = watch
        self.profile = profile
        self.say = say
        self.rng = random.Random(profile.seed)
        self.phases: list[PhaseRecord] = []
        self.t_start = time.time()

    # -- waiting -------------------------------------------------------------------------
    def hold_until(self, deadline: float) -> None:
        """Steady operation until host time ``deadline``."""
        while (left := deadline - time.time()) > 0:
            time.sleep(min(left, 1.0))

    def wait_online(self, since: float, timeout: float) -> dict[str, float | None]:
        """For each kit: seconds from ``since`` to its first shadow sync after it (a new
        session), or None if none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        out: dict[str, float | None] = {}
        for k in self.kits:
            left = max(0.0, deadline - time.monotonic())
            ln = self.watch.wait(k.name, ONLINE_RX, since, left)
            out[k.name] = None if ln is None else round(max(0.0, ln.t - since), 2)
        return out

    def wait_session_end(self, since: float, timeout: float) -> dict[str, tuple[float, str] | None]:
        """For each kit: (seconds from ``since``, why) of its first session end after it."""
        deadline = time.monotonic() + timeout
        out: dict[str, tuple[float, str] | None] = {}
        for k in self.kits:
            left = max(0.0, deadline - time.monotonic())
            ln = self.watch.wait(k.name, SESSION_END_RX, since, left)
            if ln is None:
                out[k.name] = None
            else:
                m = SESSION_END_RX.search(ln.text)
                out[k.name] = (round(ln.t - since, 2), m.group(2) if m else ln.text)
        return out

    def ping(self, kit: KitRun, timeout: float = 3.0) -> float | None:
        """App #1 round trip (ping -> pong) in seconds, or None."""
        nonce = uuid.uuid4().hex
        pref = self.bench.topic_prefix
        t = self.observer.publish(f"{pref}/{kit.name}/ping", {"id": nonce})
        topic = f"{pref}/{kit.name}/pong"
        m = self.observer.wait(
            lambda m: m.topic == topic and _field(m.json(), "id") == nonce, timeout, since=t
        )
        return None if m is None else round(m.t - t, 3)

    def wait_answering(self, timeout: float) -> dict[str, float | None]:
        """For each kit: seconds until it answered an App #1 ping (tried every few
        seconds), or None. Shows the kit is online and serving now, whether or not the
        last fault made it reconnect."""
        t0 = time.monotonic()
        out: dict[str, float | None] = {}
        for k in self.kits:
            out[k.name] = None
            while time.monotonic() - t0 < timeout:
                if self.ping(k, min(3.0, max(0.5, timeout - (time.monotonic() - t0)))):
                    out[k.name] = round(time.monotonic() - t0, 2)
                    break
        return out

    def running(self) -> dict[str, bool]:
        return {k.name: k.kit.is_running() for k in self.kits}

    def tail(self, name: str) -> str:
        return self.watch.tail(name, 8)


def _field(doc: object, key: str) -> object:
    return doc.get(key) if isinstance(doc, dict) else None


def fmt_waits(waits: dict[str, Any]) -> str:
    """{"kit-1": 1.2, "kit-2": None} -> 'kit-1 1.2 s, kit-2 never'."""
    parts = []
    for k, v in waits.items():
        if isinstance(v, tuple):
            v = v[0]
        parts.append(f"{k} {'never' if v is None else f'{v:.1f} s'}")
    return ", ".join(parts)


REASON_RX = re.compile(r"PUBACK|PINGRESP", re.IGNORECASE)
