"""The phases of a long-duration test, each a small function over the shared context.

A phase runs its fault, checks what it can see at once (the kit noticed, reconnected
in time, kept reading offline), and spends the rest of its budget in steady operation.
Loss, duplicates, resets and heap are judged for every phase at the end of the run
(:mod:`host_tools.ldt.summary`), once every reading had its chance to arrive.

    PHASES["withheld"](ctx, record)

Add a phase by adding a function to :data:`PHASES` (tests add fault phases of their own).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from host_tools.ldt.context import REASON_RX, Context, PhaseRecord, fmt_waits
from host_tools.ldt.watch import NTP_WAIT_RX, QUEUED_RX, RETRY_RX, SESSION_END_RX


def _back_online(ctx: Context, ph: PhaseRecord, since: float, what: str) -> None:
    """Check every kit synced a new session within the reconnect deadline after ``since``."""
    limit = ctx.profile.reconnect_deadline_s
    waits = ctx.wait_online(since, limit)
    ph.evidence.setdefault("back_online_s", []).append(waits)
    late = [k for k, v in waits.items() if v is None]
    ph.check(
        f"online again after {what}",
        not late,
        f"within {limit:.0f} s: {fmt_waits(waits)}"
        + "".join(f"; {k} console: {ctx.tail(k)!r}" for k in late),
    )


def _answering(ctx: Context, ph: PhaseRecord) -> None:
    waits = ctx.wait_answering(ctx.profile.reconnect_deadline_s)
    ph.evidence["answering_s"] = waits
    ph.check(
        "answers App #1 at the end", all(v is not None for v in waits.values()), fmt_waits(waits)
    )


def _settle(ctx: Context, ph: PhaseRecord) -> None:
    ctx.hold_until(max(ph.deadline, time.time() + ctx.profile.settle_s))


def steady(ctx: Context, ph: PhaseRecord) -> None:
    """Normal operation: no fault. Every kit keeps its session and publishes at its
    interval."""
    ctx.hold_until(ph.deadline)
    t1 = time.time()
    span = t1 - ph.t0
    ended = {k.name: ctx.watch.count(k.name, SESSION_END_RX, ph.t0, t1) for k in ctx.kits}
    ph.check("no session ended", not any(ended.values()), f"sessions ended: {ended}")
    iv = ctx.profile.telemetry_interval_s
    expected = span / iv
    got = {k.name: sum(1 for m in list(k.ledger.messages) if ph.t0 <= m.t < t1) for k in ctx.kits}
    ph.evidence["telemetry_arrived"] = got
    ph.check(
        "readings at the interval",
        all(n >= 0.8 * expected - 1 for n in got.values()),
        f"{span:.0f} s at {iv} s: expected ~{expected:.0f} per kit, arrived {got}",
    )


def broker_restart(ctx: Context, ph: PhaseRecord) -> None:
    """The broker is stopped and started again (one restart per 5 minutes of budget):
    every kit reconnects and sends what it queued meanwhile."""
    n = max(1, int(ph.budget_s // 300))
    slot = ph.budget_s / n
    for i in range(n):
        t = time.time()
        ph.act("restart broker")
        ctx.bench.restart_broker()
        took = time.time() - t
        ph.evidence.setdefault("restart_s", []).append(round(took, 2))
        for k in ctx.kits:
            k.ledger.wait_subscribed(15)
        _back_online(ctx, ph, t, f"broker restart {i + 1}")
        if i == n - 1:
            _answering(ctx, ph)
        # Steady operation until the next restart (the budget is at least settle_s more
        # than a restart takes, profile.typical).
        ctx.hold_until(ph.t0 + (i + 1) * slot)


def long_disconnect(ctx: Context, ph: PhaseRecord) -> None:
    """The link is down (every connection refused) for longer than the backoff cap: the
    kit's retry window grows to the cap and stays there, readings pile up on flash and
    are sent, in order, once it is back."""
    p = ctx.profile
    out_s = p.outage_s
    t = time.time()
    ph.act("cut and refuse", seconds=round(out_s, 1))
    ctx.proxy.cut(refuse_s=out_s)
    ctx.hold_until(t + out_s)
    healed = time.time()
    ph.act("link back")
    windows = {
        k.name: max(
            (int(m.group(4)) for _, m in ctx.watch.find(k.name, RETRY_RX, t, healed)), default=0
        )
        for k in ctx.kits
    }
    queued = {k.name: ctx.watch.count(k.name, QUEUED_RX, t, healed) for k in ctx.kits}
    ph.evidence.update(outage_s=round(out_s, 1), max_retry_window_ms=windows, queued=queued)
    ph.check(
        "backoff grew to its cap",
        all(w >= p.backoff_cap_ms for w in windows.values()),
        f"cap {p.backoff_cap_ms} ms, largest retry window seen {windows}",
    )
    want = 0.6 * out_s / p.telemetry_interval_s - 1
    ph.check(
        "kept reading while offline",
        all(n >= want for n in queued.values()),
        f"readings queued offline in {out_s:.0f} s: {queued} (at least {want:.0f} expected)",
    )
    _back_online(ctx, ph, healed, "the outage")
    _answering(ctx, ph)
    _settle(ctx, ph)


def intermittent(ctx: Context, ph: PhaseRecord) -> None:
    """A bad link: random cuts (connections reset, refused for up to 3 s) and stalls
    (nothing moves either way for 1-6 s, then everything held is delivered), a few
    seconds apart."""
    rng = ctx.rng
    p = ctx.profile
    stop = ph.deadline - p.settle_s - min(p.cap_s, 5)
    cuts = stalls = 0
    while time.time() < stop - 1:
        if rng.random() < 0.6:
            secs = round(rng.uniform(0.2, min(3.0, p.cap_s)), 2)
            ph.act("cut", refuse_s=secs)
            ctx.proxy.cut(refuse_s=secs)
            cuts += 1
            time.sleep(secs)
        else:
            secs = round(rng.uniform(1.0, 6.0), 2)
            ph.act("stall", seconds=secs)
            ctx.proxy.stall()
            stalls += 1
            time.sleep(secs)
            ctx.proxy.heal()
        time.sleep(rng.uniform(0.5, 4.0))
    ctx.proxy.heal()
    ended = {k.name: ctx.watch.count(k.name, SESSION_END_RX, ph.t0) for k in ctx.kits}
    ph.evidence.update(cuts=cuts, stalls=stalls, sessions_ended=ended)
    ph.check("faults injected", cuts + stalls >= 3, f"{cuts} cuts, {stalls} stalls")
    ph.check("every kit saw its link fail", all(ended.values()), f"sessions ended: {ended}")
    _answering(ctx, ph)
    _settle(ctx, ph)


def withheld(ctx: Context, ph: PhaseRecord) -> None:
    """Device Advisor's keep-alive case: every broker response is withheld (broker ->
    device dropped) while the kit publishes; it must notice within 1.5 x keepalive (a
    PUBACK or PINGRESP that does not come), back off and reconnect."""
    p = ctx.profile
    up0 = ctx.proxy.stats().bytes_up
    t = time.time()
    ph.act("drop broker -> device")
    ctx.proxy.drop("down")
    try:
        ends = ctx.wait_session_end(t, p.withheld_limit_s + 10)
        stats = ctx.proxy.stats()
    finally:
        ctx.proxy.heal()
        healed = time.time()
        ph.act("heal")
    ph.evidence.update(
        noticed=ends, bytes_up_while_withheld=stats.bytes_up - up0, dropped_down=stats.dropped_down
    )
    ph.check(
        "responses were withheld", stats.dropped_down > 0, f"{stats.dropped_down} bytes dropped"
    )
    ok = all(
        e is not None and e[0] <= p.withheld_limit_s and REASON_RX.search(e[1])
        for e in ends.values()
    )
    ph.check(
        f"noticed within 1.5 x keepalive ({p.withheld_limit_s:.0f} s)",
        ok,
        "; ".join(
            f"{k}: {'never' if e is None else f'{e[0]:.1f} s ({e[1]})'}" for k, e in ends.items()
        ),
    )
    _back_online(ctx, ph, healed, "responses came back")
    _answering(ctx, ph)
    _settle(ctx, ph)


def ntp_skew(ctx: Context, ph: PhaseRecord) -> None:
    """Time trouble at boot: NTP is blocked and every kit loses power (its clock back to
    2000-01-01), so it must wait for time before it connects; NTP then answers ``skew_s``
    ahead. The kit comes online, its readings carry the skewed time, and what its outbox
    held when the power went is delivered."""
    p = ctx.profile
    ctx.bench.set_ntp(blocked=True)
    ph.act("ntp blocked")
    for k in ctx.kits:
        k.kit.power_off()
        k.power_cuts.append(time.time())
        k.scan_flash()
        k.kit.power_on()
    ph.act("power cut, power on")
    t_on = time.time()
    old_boots = {k.name: set(k.ledger.boots()) for k in ctx.kits}
    waited = {k.name: ctx.watch.wait(k.name, NTP_WAIT_RX, t_on, 30) is not None for k in ctx.kits}
    ph.check("waited for time before connecting", all(waited.values()), f"{waited}")
    ctx.bench.set_ntp(offset_s=p.skew_s)
    t = time.time()
    ph.act("ntp answers", offset_s=p.skew_s)
    waits = ctx.wait_online(t, 60)
    ph.evidence["online_after_ntp_s"] = waits
    ph.check(
        "online after the clock was set",
        all(v is not None for v in waits.values()),
        fmt_waits(waits),
    )
    ctx.hold_until(max(ph.deadline, time.time() + p.settle_s))
    # The last readings of the new boot: taken and sent at once (its backlog went
    # first), so their ts - arrival is the skew.
    ahead = {}
    for k in ctx.kits:
        new = [
            (m.t, j)
            for m in list(k.ledger.messages)
            if isinstance(j := m.json(), dict)
            and "ts" in j
            and j.get("boot") not in old_boots[k.name]
        ]
        d = sorted(j["ts"] / 1000 - at for at, j in new[-10:])
        ahead[k.name] = round(d[len(d) // 2], 1) if d else None
    ph.evidence["clock_ahead_s"] = ahead
    ph.check(
        f"readings carry the skewed time ({p.skew_s} s ahead)",
        all(a is not None and abs(a - p.skew_s) <= 10 for a in ahead.values()),
        f"median ts - arrival of the last live readings: {ahead}",
    )
    ctx.bench.set_ntp(offset_s=0.0)  # for the next boot; this one keeps its clock
    ph.act("ntp back to 0 (from the next boot)")
    _answering(ctx, ph)


PhaseFn = Callable[[Context, PhaseRecord], None]
PHASES: dict[str, PhaseFn] = {
    "steady": steady,
    "broker_restart": broker_restart,
    "long_disconnect": long_disconnect,
    "intermittent": intermittent,
    "withheld": withheld,
    "ntp_skew": ntp_skew,
}
