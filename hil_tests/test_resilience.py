"""Outages between the kit and the broker, and what the kit does about them (issue #6).

Every kit here connects through a fault proxy (``proxied_kit``): the tests cut, stall
and blackhole its connection, restart the broker, block and skew NTP and cut the power,
and check on the broker what arrived:

- a stalled link (sockets open, nothing moves) is noticed through the missing PINGRESP
  and the kit reconnects once the link is back;
- a QoS 1 publish whose PUBACK never arrives is published again after reconnecting;
- across 20 outages of varied length, no App #2 reading the kit took is lost: for each
  boot, every ``seq`` from 1 to the last one the kit took arrives on
  ``thingkit/<thing>/telemetry`` (duplicates are allowed, and counted).
"""

from __future__ import annotations

import itertools
import random
import re
import time

import pytest

from hil_tests.helpers import RETRY_RX
from hil_tests.plugin.faults import TelemetryLedger, online_count, wait_online_again
from host_tools.bench.observer import Observer

pytestmark = [
    pytest.mark.slow,
    # The proxy listens on 127.0.0.1 of this host: only the virtual kit reaches it.
    pytest.mark.capability("virtual_kit"),
]

KEEPALIVE_S = 30  # AWS IoT's minimum, and the firmware's default
FAST_BACKOFF = {"backoff_base_ms": 200, "backoff_cap_ms": 2000}
SESSION_END_RX = re.compile(r"^\d+ W device: session ended: (.*)$", re.MULTILINE)
# A reading the kit took, as its console says it ("offline: seq 7 queued (3 waiting)").
TAKEN_RX = re.compile(r"^\d+ [DIW] (?:app2|outbox|device): .*?\bseq (\d+) queued\b", re.MULTILINE)
BOOT_RX = re.compile(rb'"boot":\s*"([0-9a-f]+)"')
SEQ_RX = re.compile(rb'"seq":\s*(\d+)')
NTP_WAIT_RX = r"I time: time not synced"
SKEW_S = 90


def sessions_ended(kit) -> list[str]:
    return SESSION_END_RX.findall(kit.console())


def wait_session_end(kit, before: int, timeout: float) -> str:
    """Wait until the kit ends a session (beyond the first ``before``); return why."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = sessions_ended(kit)
        if len(ended) > before:
            return ended[before]
        time.sleep(0.1)
    tail = "\n".join(kit.console().splitlines()[-12:])
    raise AssertionError(
        f"kit {kit.thing} kept its session for {timeout:.0f} s of outage; "
        f"console {kit.console_log}; tail:\n{tail}"
    )


def boot_consoles(kit) -> list[str]:
    """The console of each boot, oldest first (SimKit marks every power-on)."""
    parts = re.split(r"^--- power on .*---$", kit.console(since_boot=False), flags=re.MULTILINE)
    return [p for p in parts[1:]]


def last_taken(console: str) -> int:
    """The highest seq the console says the kit took (0 if it names none)."""
    return max((int(s) for s in TAKEN_RX.findall(console)), default=0)


def seqs_on_flash(kit) -> dict[str, int]:
    """The highest seq of each boot among the App #2 records in the kit's outbox files.

    Read from the flash directory while the kit is off: what the kit kept is what it
    took. Only the records are looked for (JSON text between binary frame headers), not
    the outbox's own layout.
    """
    out: dict[str, int] = {}
    d = kit.flash / "outbox"
    for f in sorted(d.iterdir()) if d.is_dir() else []:
        for chunk in re.split(rb"[^\x20-\x7e]+", f.read_bytes()):
            boot, seq = BOOT_RX.search(chunk), SEQ_RX.search(chunk)
            if boot and seq and b'"readings"' in chunk:
                b = boot.group(1).decode()
                out[b] = max(out.get(b, 0), int(seq.group(1)))
    return out


# -- a stalled link --------------------------------------------------------------------------
@pytest.mark.hil_timeout(150)
def test_stall_is_noticed_by_the_missing_pingresp_and_the_kit_reconnects(
    bench, proxied_kit, fault_proxy
):
    """Sockets stay open, nothing moves: only keepalive can tell. The kit sends PINGREQ
    within the keepalive, gives up when no PINGRESP comes (tk/device.py allows half the
    keepalive for it), and reconnects once the link is back."""
    # Nothing else to send: telemetry and diagnostics once at boot, then not for an hour.
    kit = proxied_kit(
        "online",
        keepalive_s=KEEPALIVE_S,
        telemetry_interval_s=3600,
        diag_interval_s=86400,
        **FAST_BACKOFF,
    )
    time.sleep(2)  # the boot-time telemetry and diagnostics are acknowledged
    online, ended = online_count(kit), len(sessions_ended(kit))
    fault_proxy.stall()
    t0 = time.monotonic()
    try:
        why = wait_session_end(kit, ended, KEEPALIVE_S * 1.5 + 10)
        took = time.monotonic() - t0
        held = fault_proxy.stats()
    finally:
        fault_proxy.heal()
    assert "PINGRESP" in why.upper(), f"session ended for another reason: {why}"
    # The kit sent something (its PINGREQ) into the stall and waited for the answer.
    assert held.held_up > 0, f"nothing left the kit during the stall: {held}"
    # Before the broker's own limit (1.5 x keepalive) would have dropped it.
    assert took <= KEEPALIVE_S * 1.5, f"stall noticed only after {took:.1f} s"
    wait_online_again(kit, online, 30)
    assert fault_proxy.stats().accepted >= 2


# -- a PUBACK that never comes -----------------------------------------------------------------
def broker_publishes(bench, thing: str, offset: int) -> list[tuple[int, int, str]]:
    """(dup flag, packet id, topic) of each QoS 1 PUBLISH the broker received from
    ``thing`` after byte ``offset`` of its log."""
    rx = re.compile(
        rf"Received PUBLISH from {re.escape(thing)} \(d(\d), q1, r\d, m(\d+), '([^']+)'"
    )
    with open(bench.layout.broker_log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [(int(d), int(m), t) for d, m, t in rx.findall(text)]


@pytest.mark.checklist("lens.store_forward")
@pytest.mark.hil_timeout(150)
def test_qos1_publish_without_puback_is_published_again(
    bench, proxied_kit, fault_proxy, telemetry_ledger, observer
):
    """broker -> kit blackholed: the kit's PUBLISHes reach the broker, their PUBACKs never
    reach the kit. The kit publishes them again (DUP) and, once the link is back, every
    reading it took arrives."""
    kit = proxied_kit(telemetry_interval_s=1, **FAST_BACKOFF)
    ledger: TelemetryLedger = telemetry_ledger(kit.thing)
    session = bench.layout.broker_log.stat().st_size
    kit.strategy.to("online")
    assert ledger.wait(lambda s: s.count() >= 3, 20), "no telemetry before the fault"
    online, ended = online_count(kit), len(sessions_ended(kit))
    mark = bench.layout.broker_log.stat().st_size
    fault_proxy.drop("down")
    try:
        why = wait_session_end(kit, ended, 60)
    finally:
        fault_proxy.heal()
    assert fault_proxy.stats().dropped_down > 0, "the broker sent the kit nothing to drop"
    pubs = broker_publishes(bench, kit.thing, mark)
    # A publish sent just before the drop has its PUBACK dropped: its first copy is then
    # before the mark (under load, often). Packet ids are not reused within a session.
    first = {(m, t) for d, m, t in broker_publishes(bench, kit.thing, session) if d == 0}
    again = [(m, t) for d, m, t in pubs if d == 1 and (m, t) in first]
    # Retried: in the same session with DUP set (the broker saw the same packet id on
    # the same topic twice), or after reconnecting (the ledger got a reading twice).
    wait_online_again(kit, online, 30)
    boot = ledger.boots()[0]
    top = ledger.last(boot)  # a few new readings after the reconnect (not the replayed ones)
    assert ledger.wait(lambda s: s.last(boot) >= top + 3, 30), "no readings after the reconnect"
    doc = observer.shadow_get(kit.thing, "app2") or {}
    last = int(doc.get("state", {}).get("reported", {}).get("seq", 0))
    missing = ledger.wait_complete(boot, last, 30)
    print(
        f"unacknowledged publishes resent with DUP: {again}; telemetry duplicates: "
        f"{ledger.duplicates()}; session ended: {why}; seq 1..{last}, missing {missing}"
    )
    assert pubs, f"the kit published nothing while PUBACKs were dropped ({why})"
    assert again or ledger.duplicates(), (
        f"no QoS 1 publish was sent again: broker saw {pubs} from the kit after the drop"
    )
    assert last > ledger.last(boot) - 3 and last > 3, f"app2 shadow seq {last}"
    assert not missing, f"readings lost: {missing}"


# -- 20 outages, nothing lost ---------------------------------------------------------------------
# (kind, seconds, online time before the next one). "cut": close every connection and
# refuse new ones for that long; a cut right after reconnecting hits the replay.
PLAN = [
    ("cut", 0.5, 1.0),
    ("cut", 8.0, 1.5),
    ("cut", 1.0, 0.0),
    ("stall", None, 1.0),
    ("cut", 3.0, 0.0),
    ("cut", 0.5, 1.0),
    ("restart", None, 1.0),
    ("cut", 5.0, 0.5),
    ("cut", 0.7, 0.0),
    ("cut", 0.5, 1.0),
    ("power", 2.5, 1.0),  # power cut while offline, then an NTP outage at boot: 2 outages
    ("cut", 2.0, 1.0),
    ("stall", None, 0.5),
    ("cut", 6.0, 0.0),
    ("restart", None, 1.0),
    ("cut", 1.5, 0.0),
    ("cut", 0.6, 1.0),
    ("cut", 4.0, 0.5),
    ("cut", 0.5, 1.0),
]
OUTAGES = sum(2 if kind == "power" else 1 for kind, _, _ in PLAN)


@pytest.mark.checklist("lens.store_forward", "lens.backoff_jitter")
@pytest.mark.capability("virtual_kit", "power_cut")
@pytest.mark.hil_timeout(420)
def test_no_telemetry_lost_across_20_outages(own_bench, proxied_kit, fault_proxy, telemetry_ledger):
    assert OUTAGES == 20
    kit = proxied_kit(keepalive_s=KEEPALIVE_S, telemetry_interval_s=1, **FAST_BACKOFF)
    ledger: TelemetryLedger = telemetry_ledger(kit.thing)
    t_start = time.monotonic()
    kit.strategy.to("online")
    assert ledger.wait(lambda s: s.count() >= 2, 20), "no telemetry before the outages"
    rng = random.Random(6)
    on_flash: dict[str, int] = {}
    cut_windows: list[tuple[float, float, int]] = []  # (host time, seconds, boot number)
    log: list[str] = []

    for kind, secs, gap in PLAN:
        online = online_count(kit)
        t0 = time.monotonic()
        if kind == "cut":
            cut_windows.append((time.time(), secs, len(boot_consoles(kit))))
            fault_proxy.cut(refuse_s=secs)
            time.sleep(secs)
        elif kind == "stall":
            ended = len(sessions_ended(kit))
            fault_proxy.stall()
            try:
                wait_session_end(kit, ended, KEEPALIVE_S * 1.5 + 10)
            finally:
                fault_proxy.heal()
        elif kind == "restart":
            own_bench.restart_broker()
            assert ledger.wait_subscribed(15), "telemetry ledger did not reconnect"
        elif kind == "power":
            fault_proxy.cut(refuse_s=600)  # offline: readings pile up in the outbox
            time.sleep(secs)
            kit.power_off()
            on_flash = seqs_on_flash(kit)
            own_bench.set_ntp(blocked=True)
            kit.power_on()
            online = 0
            fault_proxy.heal()
            kit.wait_for(NTP_WAIT_RX, 30)  # the kit waits for time, offline
            time.sleep(1.5)
            own_bench.set_ntp(offset_s=SKEW_S)  # NTP back, but 90 s ahead
        wait_online_again(kit, online, 60)
        log.append(f"{kind} {secs or ''}: back after {time.monotonic() - t0:.1f} s")
        time.sleep(gap + rng.uniform(0, 0.5))

    # Everything healed. The last reading the kit took in this boot: its app2 shadow
    # (reported on every reading while online) and its console, whichever is higher.
    cur = ledger.boots()[-1]
    top = ledger.last(cur)  # a few new readings after the last outage (not replayed ones)
    assert ledger.wait(lambda s: s.last(cur) >= top + 3, 30), "no readings after the outages"
    with Observer(own_bench) as obs:
        doc = obs.shadow_get(kit.thing, "app2") or {}
    shadow_seq = int(doc.get("state", {}).get("reported", {}).get("seq", 0))
    consoles = boot_consoles(kit)
    assert len(consoles) == 2, f"expected two boots (one power cut), saw {len(consoles)}"
    boots = ledger.boots()
    assert len(boots) == 2, f"telemetry of {len(boots)} boots: {boots}"
    # Before the power cut: what arrived, and what its outbox held when the power went.
    assert on_flash.get(boots[0], 0) > 0, (
        f"the outbox held no record of boot {boots[0]} when the power went, after "
        f"some seconds offline: {on_flash}"
    )
    lasts = {
        boots[0]: max(last_taken(consoles[0]), ledger.last(boots[0]), on_flash[boots[0]]),
        boots[1]: max(last_taken(consoles[1]), shadow_seq),
    }
    assert lasts[boots[1]] > 0, "no evidence of what the kit took after the power cut"

    report = []
    for boot, last in lasts.items():
        missing = ledger.wait_complete(boot, last, 60)
        report.append(f"boot {boot}: seq 1..{last}, missing {len(missing)}")
        assert not missing, (
            f"boot {boot}: {len(missing)} of {last} readings lost: {missing[:40]}; "
            f"console {kit.console_log}"
        )
    print(
        f"{OUTAGES} outages in {time.monotonic() - t_start:.0f} s; "
        f"{ledger.count()} messages, {ledger.duplicates()} duplicates; " + "; ".join(report)
    )
    print("\n".join(log))
    print(f"proxy: {fault_proxy.stats()}")

    # Taken while offline: the kit kept reading through every long cut (its clock runs
    # SKEW_S ahead in the second boot), and those readings arrived afterwards.
    for t_cut, secs, boot_no in cut_windows:
        if secs < 3:
            continue
        skew = 0 if boot_no == 1 else SKEW_S
        inside = {
            (d["boot"], d["seq"])
            for m in list(ledger.messages)
            if isinstance(d := m.json(), dict)
            and d.get("boot") == boots[boot_no - 1]
            and t_cut + 0.5 <= d.get("ts", 0) / 1000 - skew <= t_cut + secs - 0.5
        }
        assert len(inside) >= secs - 2, (
            f"during the {secs} s cut at {t_cut:.1f} the kit took {len(inside)} readings "
            f"that arrived (every 1 s expected)"
        )

    # Replayed in order: within a boot, readings first arrive in the order they were taken.
    for boot in boots:
        firsts, seen = [], set()
        for b, q in list(ledger.order):
            if b == boot and q not in seen:
                seen.add(q)
                firsts.append(q)
        late = [(a, b) for a, b in itertools.pairwise(firsts) if b < a]
        assert not late, f"boot {boot}: readings out of order, e.g. {late[:5]}"

    # The NTP skew was in force for the second boot: its live readings (the last ones
    # to arrive, published as they were taken) carry timestamps 90 s ahead.
    live = [m for m in list(ledger.messages) if (m.json() or {}).get("boot") == boots[1]][-5:]
    ahead = sorted(m.json()["ts"] / 1000 - m.t for m in live)[len(live) // 2]
    assert SKEW_S - 10 <= ahead <= SKEW_S + 10, f"second boot's clock is {ahead:.0f} s ahead"

    # Reconnects after every outage used full-jitter exponential backoff.
    retries = [(int(d), int(n), int(w)) for _, d, n, w in RETRY_RX.findall(kit.console(False))]
    # (every outage but the power cut and the NTP outage ends a session)
    assert len(retries) >= OUTAGES - 2, f"only {len(retries)} reconnect delays logged"
    assert all(0 <= d <= w <= FAST_BACKOFF["backoff_cap_ms"] for d, _, w in retries), retries
    assert any(w > FAST_BACKOFF["backoff_base_ms"] for _, _, w in retries), "no backoff growth"
    assert len({d for d, _, _ in retries}) > len(retries) // 2, "reconnect delays not jittered"


# -- a half-open link while the kit is busy ---------------------------------------------------
@pytest.mark.hil_timeout(150)
def test_withheld_broker_responses_are_noticed_while_publishing_every_second(
    bench, proxied_kit, fault_proxy
):
    """Device Advisor's keep-alive case: every broker response is withheld while the kit
    publishes every second. The kit notices within 1.5 x keepalive (a PUBACK or a
    PINGRESP that does not come), backs off and reconnects once the link is back."""
    kit = proxied_kit("online", keepalive_s=KEEPALIVE_S, telemetry_interval_s=1, **FAST_BACKOFF)
    time.sleep(2)
    online, ended = online_count(kit), len(sessions_ended(kit))
    up0 = fault_proxy.stats().bytes_up
    fault_proxy.drop("down")  # broker -> device blackholed; device -> broker still flows
    t0 = time.monotonic()
    try:
        why = wait_session_end(kit, ended, KEEPALIVE_S * 1.5 + 10)
        took = time.monotonic() - t0
        sent = fault_proxy.stats()
    finally:
        fault_proxy.heal()
    assert re.search(r"PUBACK|PINGRESP", why, re.IGNORECASE), why
    assert sent.bytes_up > up0, f"the kit sent nothing while responses were withheld: {sent}"
    assert sent.dropped_down > 0, f"no broker response was withheld: {sent}"
    assert took <= KEEPALIVE_S * 1.5, f"half-open link noticed only after {took:.1f} s"
    wait_online_again(kit, online, 30)
