"""How long each phase of a long-duration test runs, and the kit settings it runs with.

Two profiles:

- ``ci``: a few minutes. Readings every second, diagnostics every 10 s, reconnect
  backoff 200 ms .. 4 s, so that every phase shows its fault and the recovery in seconds.
- ``field``: the firmware's own defaults where they matter (backoff 1 s .. 120 s,
  keepalive 30 s, diagnostics every 60 s), readings every 2 s; for runs of 20 minutes and
  more (one hour by default, as AWS Device Advisor's Long Duration Test).

Each phase has a typical time (its fault, noticed and recovered from) and a weight
that shares out what the duration leaves beyond the sum of the typical times::

    prof = make_profile(duration_s=3600)
    prof.budgets()  # {"steady": ..., "broker_restart": ..., ...}
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from host_tools.errors import UserError

PHASES = ("steady", "broker_restart", "long_disconnect", "intermittent", "withheld", "ntp_skew")
DEFAULT_DURATION_S = 3600.0
CI_DURATION_S = 150.0
FIELD_FROM_S = 1200.0  # runs this long and longer use the field profile by default


@dataclass
class Profile:
    """Durations (seconds) and kit settings of one LDT run."""

    name: str
    duration_s: float
    telemetry_interval_s: int
    diag_interval_s: int
    keepalive_s: int = 30
    backoff_base_ms: int = 1000
    backoff_cap_ms: int = 120000
    skew_s: int = 90  # NTP skew of the ntp_skew phase
    settle_s: float = 5.0  # steady operation after each fault, before the phase ends
    phases: tuple[str, ...] = PHASES
    # Extra provisioning fields for every kit (DeviceConfig names: outbox_max_records=16).
    kit_config: dict[str, Any] = field(default_factory=dict)
    # Per-phase overrides of the computed budget (seconds).
    budget_overrides: dict[str, float] = field(default_factory=dict)
    seed: int = 18
    long_outage_s: float | None = None  # the long disconnect (default: see outage_s)

    @property
    def cap_s(self) -> float:
        return self.backoff_cap_ms / 1000

    @property
    def outage_s(self) -> float:
        """The long disconnect: longer than the backoff cap, so the kit's retry window
        reaches the cap and stays there for a while."""
        if self.long_outage_s is not None:
            return float(self.long_outage_s)
        return max(2.5 * self.cap_s, self.cap_s + 6)

    @property
    def reconnect_deadline_s(self) -> float:
        """How long a kit may take to be online again once the link or broker is back:
        one full backoff window plus a TLS connection and a shadow sync."""
        return self.cap_s * 1.1 + 15

    @property
    def withheld_limit_s(self) -> float:
        """The kit must notice withheld responses within 1.5 x keepalive."""
        return 1.5 * self.keepalive_s

    def typical(self) -> dict[str, float]:
        """About what each phase's fault takes, noticed and recovered from, plus
        ``settle_s`` of steady operation after it. A phase that needs longer takes
        longer (each wait has its own deadline); one that needs less spends the rest of
        its budget in steady operation."""
        return {
            "steady": max(10.0, 4 * self.telemetry_interval_s),
            "broker_restart": 5 + self.settle_s,
            "long_disconnect": self.outage_s + self.cap_s / 2 + 3 + self.settle_s,
            "intermittent": 20.0 + self.settle_s,
            "withheld": 0.7 * self.keepalive_s + 3 + self.settle_s,
            "ntp_skew": 15 + self.settle_s,
        }

    def budgets(self) -> dict[str, float]:
        """Seconds per phase: its typical time plus its share of what is left.

        Raises:
            UserError: the duration is shorter than the phases need.
        """
        typical = self.typical()
        mins = {p: typical.get(p, 10.0) for p in self.phases}  # a phase of a test's own: 10 s
        weights = {
            "steady": 0.35,
            "intermittent": 0.35,
            "broker_restart": 0.1,
            "long_disconnect": 0.1,
            "withheld": 0.05,
            "ntp_skew": 0.05,
        }
        need = sum(self.budget_overrides.get(p, m) for p, m in mins.items())
        spare = self.duration_s - need
        if spare < 0:
            raise UserError(
                f"an LDT of {fmt_s(self.duration_s)} is too short for the {self.name} profile",
                f"its phases need about {fmt_s(need)}",
                "thingkit ldt --help (--duration, --profile)",
            )
        spare = max(0.0, spare)
        wsum = sum(weights.get(p, 0.0) for p in mins) or 1.0
        out = {}
        for p, m in mins.items():
            if p in self.budget_overrides:
                out[p] = float(self.budget_overrides[p])
            else:
                out[p] = m + spare * weights.get(p, 0.0) / wsum
        return out

    def to_json(self) -> dict:
        d = asdict(self)
        d["phases"] = list(self.phases)
        d["budgets_s"] = {p: round(s, 1) for p, s in self.budgets().items()}
        return d

    def device_config(self) -> dict[str, Any]:
        """Provisioning fields for the kits (host_tools.kit.provision.create_sim_kit)."""
        cfg: dict[str, Any] = {
            "telemetry_interval_s": self.telemetry_interval_s,
            "diag_interval_s": self.diag_interval_s,
            "keepalive_s": self.keepalive_s,
            "backoff_base_ms": self.backoff_base_ms,
            "backoff_cap_ms": self.backoff_cap_ms,
        }
        cfg.update(self.kit_config)
        return cfg


def make_profile(
    duration_s: float = DEFAULT_DURATION_S, name: str | None = None, **overrides: Any
) -> Profile:
    """The profile for a run of ``duration_s``: ``ci`` below 20 minutes, else ``field``."""
    name = name or ("field" if duration_s >= FIELD_FROM_S else "ci")
    base: dict[str, Any]
    if name == "ci":
        base = {
            "telemetry_interval_s": 1,
            "diag_interval_s": 10,
            "backoff_base_ms": 200,
            "backoff_cap_ms": 4000,
            "settle_s": 5.0,
        }
    elif name == "field":
        base = {
            "telemetry_interval_s": 2,
            "diag_interval_s": 60,
            "backoff_base_ms": 1000,
            "backoff_cap_ms": 120000,
            "settle_s": 20.0,
        }
    else:
        raise UserError(f"unknown LDT profile {name!r}", "use ci or field")
    base.update(overrides)
    return Profile(name=name, duration_s=float(duration_s), **base)


_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """'3m', '90s', '1h', '1h30m', '150' (seconds) -> seconds.

    Raises:
        UserError: not a duration.
    """
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|min|m|s)", t)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(h|min|m|s)", "", t).strip():
        raise UserError(f"not a duration: {text!r}", "write it as 90s, 3m, 1h or 1h30m")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def fmt_s(seconds: float) -> str:
    """Seconds as a short human duration: 95 -> '1m35s'."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s % 60 else f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
