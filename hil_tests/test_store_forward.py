"""Store and forward (IoT Lens BP 11.2) and connection behaviour, seen from outside the kit.

The kit reads App #2 every second; the broker is stopped for several intervals, or the
kit loses power while offline. Every (boot, seq) the kit took must reach a subscriber,
in order, with no gap: what the kit queued (its console says ``offline: seq N queued``
once each record is on flash) is replayed at QoS 1 once the broker is back. The
subscriber is the telemetry ledger (hil_tests/plugin/faults.py): a persistent session
that loses nothing across the broker restart either.

A duplicate client id (the operator connects with the kit's identity, as a second
device with the same certificate would) closes the kit's connection; each such kick
must lengthen the kit's backoff instead of starting a reconnect fight.
"""

from __future__ import annotations

import re
import threading
import time

import pytest

from hil_tests.helpers import RETRY_RX
from hil_tests.plugin.faults import online_count, wait_online_again
from host_tools.bench import clients
from host_tools.bench.observer import Observer

pytestmark = pytest.mark.slow

QUEUED_RX = re.compile(r"^\d+ I device: offline: seq (\d+) queued", re.MULTILINE)
FAST = {"telemetry_interval_s": 1, "backoff_base_ms": 500, "backoff_cap_ms": 2000}


def _first_order(ledger, boot: str) -> list[int]:
    """Seqs of ``boot`` in the order they first arrived (duplicates left out)."""
    seen: set[int] = set()
    out = []
    for b, s in list(ledger.order):
        if b == boot and s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _boot_online(kit, ledger, n_live: int = 2) -> str:
    kit.power_on()
    wait_online_again(kit, 0, 40)
    assert ledger.wait(lambda led: led.count() >= n_live, 15), kit.console()
    return ledger.boots()[0]


def _wait_queued(kit, n: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = [int(x) for x in QUEUED_RX.findall(kit.console())]
        if len(q) >= n:
            return q
        time.sleep(0.2)
    raise AssertionError(f"kit queued fewer than {n} readings offline:\n{kit.console()[-1500:]}")


@pytest.mark.checklist("lens.store_forward")
@pytest.mark.capability("virtual_kit")
@pytest.mark.hil_timeout(120)
def test_broker_outage_every_reading_arrives_in_order(own_bench, make_kit, telemetry_ledger):
    kit = make_kit(own_bench, **FAST)
    ledger = telemetry_ledger(kit.thing)
    boot = _boot_online(kit, ledger)
    live_before = ledger.last(boot)

    t_stop = time.time()
    own_bench.stop_broker()
    queued = _wait_queued(kit, 5, 20)  # five intervals and more without a broker
    sessions = online_count(kit)
    t_start = time.time()
    own_bench.restart_broker()
    wait_online_again(kit, sessions, 30)

    last = max(queued) + 2  # and live readings after the backlog
    missing = ledger.wait_complete(boot, last, 30)
    assert missing == [], f"never arrived: {missing}\n{kit.console()[-2000:]}"
    order = _first_order(ledger, boot)
    assert order[:last] == list(range(1, last + 1)), order
    # The queued ones were taken during the outage (device time), not made up later.
    ts = {
        m.json()["seq"]: m.json()["ts"] / 1000
        for m in ledger.messages
        if (m.json() or {}).get("boot") == boot
    }
    for s in queued:
        assert t_stop - 1.5 <= ts[s] <= t_start + 1.5, (s, ts[s], t_stop, t_start)
    assert min(queued) <= live_before + 2
    counters = ledger.messages[-1].json()["outbox"]
    assert counters == {"dropped": 0, "downsampled": 0}


@pytest.mark.checklist("lens.store_forward")
@pytest.mark.capability("virtual_kit", "power_cut")
@pytest.mark.hil_timeout(120)
def test_power_cut_while_offline_replays_the_previous_boot(own_bench, make_kit, telemetry_ledger):
    kit = make_kit(own_bench, **FAST)
    ledger = telemetry_ledger(kit.thing)
    boot_a = _boot_online(kit, ledger)

    own_bench.stop_broker()
    queued_a = _wait_queued(kit, 3, 20)
    kit.power_off()  # SIGKILL, perhaps in the middle of a write
    # The console may lag the flash by the record being written: one more may be there.
    durable_a = max(int(x) for x in QUEUED_RX.findall(kit.console()))
    assert durable_a >= max(queued_a)

    kit.power_on()  # RTC at 2000-01-01 again; NTP answers, the broker does not
    m = kit.wait_for(r"I outbox: (\d+) records queued", 30)
    assert int(m.group(1)) >= durable_a - ledger.last(boot_a)
    queued_b = _wait_queued(kit, 2, 20)
    own_bench.restart_broker()
    wait_online_again(kit, 0, 30)

    missing_a = ledger.wait_complete(boot_a, durable_a, 30)
    assert missing_a == [], f"boot A never arrived: {missing_a}\n{kit.console()[-2000:]}"
    ledger.wait(lambda s: len(s.boots()) >= 2, 20)  # boot B's queue follows A's backlog
    boots = ledger.boots()
    assert len(boots) == 2 and boots[0] == boot_a, boots
    boot_b = boots[1]
    missing_b = ledger.wait_complete(boot_b, max(queued_b) + 1, 20)
    assert missing_b == [], missing_b
    order_a = _first_order(ledger, boot_a)
    assert order_a[:durable_a] == list(range(1, durable_a + 1)), order_a
    assert _first_order(ledger, boot_b)[: max(queued_b)] == list(range(1, max(queued_b) + 1))
    # Boot A's backlog went out before anything of boot B: one ordered stream.
    first_b = ledger.order.index((boot_b, 1))
    last_a = max(i for i, (b, s) in enumerate(ledger.order) if b == boot_a and s <= durable_a)
    assert last_a < first_b


@pytest.mark.checklist("lens.store_forward")
@pytest.mark.capability("virtual_kit")
@pytest.mark.hil_timeout(150)
def test_full_outbox_downsamples_and_says_so(own_bench, make_kit, telemetry_ledger):
    """An outage longer than the outbox holds (16 records): segments are thinned,
    oldest first; every missing seq is accounted for by the counters the messages carry
    (dropping the oldest, which needs a longer outage, is shown by test_outbox.py)."""
    kit = make_kit(own_bench, outbox_max_records=16, diag_interval_s=10, **FAST)
    ledger = telemetry_ledger(kit.thing)
    boot = _boot_online(kit, ledger)
    own_bench.stop_broker()
    queued = _wait_queued(kit, 18, 40)
    sessions = online_count(kit)
    own_bench.restart_broker()
    wait_online_again(kit, sessions, 30)
    # A few live readings after the backlog: taken once the outbox was no longer full,
    # so their counters are final.
    last = max(queued) + 3
    assert ledger.wait(lambda led: led.last(boot) >= last, 30), kit.console()[-2000:]
    last = ledger.last(boot)

    order = _first_order(ledger, boot)
    assert order == sorted(order), order
    msgs = {
        d["seq"]: d
        for d in (m.json() for m in ledger.messages)
        if isinstance(d, dict) and d.get("boot") == boot
    }
    counters = msgs[last]["outbox"]
    assert counters["downsampled"] > 0, counters
    missing = [s for s in range(1, last + 1) if s not in msgs]
    assert len(missing) == counters["dropped"] + counters["downsampled"], (missing, counters)
    # The segment being written is never thinned: the newest readings are consecutive.
    assert order[-2:] == [last - 1, last], order
    # Diagnostics say the same (a diag message after the backlog went out).
    with Observer(own_bench) as obs:
        t0 = time.time()
        diag = obs.wait(lambda m: m.topic == f"thingkit/{kit.thing}/diag", 20, since=t0)
    assert diag is not None, kit.console()[-2000:]
    ob = diag.json()["outbox"]
    assert (ob["dropped"], ob["downsampled"]) == (counters["dropped"], counters["downsampled"])
    assert ob["queued"] <= 2 and ob["corrupt"] == 0


@pytest.mark.checklist("lens.backoff_jitter")
@pytest.mark.capability("virtual_kit")
@pytest.mark.hil_timeout(120)
def test_duplicate_client_id_kicks_back_off(own_bench, make_kit, tmp_path):
    """Another client connects with the kit's id three times, each time after the kit's
    connection has been up longer than backoff.reset_after_s: the kit's retry windows
    still double (500, 1000, 2000 ms) instead of resetting after every kick."""
    kit = make_kit(own_bench, backoff_base_ms=500, backoff_cap_ms=4000, backoff_reset_s=1)
    kit.power_on()
    wait_online_again(kit, 0, 40)
    cert = (kit.flash / "certs/device.crt.der").read_bytes()
    key = (kit.flash / "certs/device.key.der").read_bytes()
    for kick in range(3):
        sessions = online_count(kit)
        time.sleep(1.5)  # stable by reset_after_s
        c = clients.device_client(own_bench.layout, cert, key, kit.thing, tmp_path)
        ok = threading.Event()
        c.on_connect = lambda *a, ev=ok: ev.set()
        c.connect("127.0.0.1", own_bench.port)
        c.loop_start()
        try:
            assert ok.wait(10)
            deadline = time.monotonic() + 10
            while len(RETRY_RX.findall(kit.console())) <= kick:
                assert time.monotonic() < deadline, kit.console()[-2000:]
                time.sleep(0.1)
        finally:
            c.disconnect()
            c.loop_stop()
        wait_online_again(kit, sessions, 30)
    windows = [int(w) for *_, w in RETRY_RX.findall(kit.console())]
    assert windows == [500, 1000, 2000], kit.console()[-2000:]
    assert kit.console().count("(closed by the broker)") == 3
    assert "backoff reset" not in kit.console()


# -- the last resort: no cloud for too long ---------------------------------------------------
@pytest.mark.capability("virtual_kit")
@pytest.mark.hil_timeout(150)
def test_no_cloud_for_longer_than_the_limit_reboots_once_and_loses_nothing(
    own_bench, make_kit, telemetry_ledger
):
    """offline.reboot_after_s: a device without a cloud session for that long reboots
    (a radio or network stack that never recovers is in the device), keeping its outbox;
    the next boot says why. A broker down for more than the limit and less than twice it
    leads to exactly one reboot, and every reading of both boots arrives."""
    limit = 15
    kit = make_kit(own_bench, offline_reboot_s=limit, **FAST)
    ledger = telemetry_ledger(kit.thing)
    boot_a = _boot_online(kit, ledger)
    own_bench.stop_broker()
    t_stop = time.monotonic()
    kit.wait_for(r"E device: no cloud session for 15 s: rebooting", limit + 15)
    took = time.monotonic() - t_stop
    kit.wait_for(r"I main: thingkit .* \(reset: soft\)", 20)
    # The new boot reads into its outbox too (its own console lines, after the reboot).
    deadline = time.monotonic() + 20
    while True:
        after = kit.console().split("rebooting (readings stay on flash)", 1)[1]
        queued_b = [int(x) for x in QUEUED_RX.findall(after)]
        if len(queued_b) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(queued_b) >= 2, kit.console()[-1500:]
    time.sleep(max(0.0, limit + 8 - (time.monotonic() - t_stop)))  # < 2 x limit offline
    own_bench.restart_broker()
    wait_online_again(kit, 0, 30)
    # Boot A's readings (the queued ones among them) and boot B's: all there.
    con = kit.console(since_boot=False)
    assert con.count("rebooting (readings stay on flash)") == 1, con[-2000:]
    assert limit <= took <= limit + 10, took
    assert ledger.wait(lambda led: len(led.boots()) >= 2, 30), kit.console()[-1500:]
    boots = ledger.boots()
    assert len(boots) == 2 and boots[0] == boot_a, boots
    queued_a = [int(x) for x in QUEUED_RX.findall(con.split("rebooting")[0])]
    assert queued_a, "the kit queued nothing before its reboot"
    missing_a = ledger.wait_complete(boot_a, max(queued_a), 30)
    assert missing_a == [], f"boot A never arrived: {missing_a}\n{con[-2000:]}"
    missing_b = ledger.wait_complete(boots[1], max(queued_b), 20)
    assert missing_b == [], missing_b
    # The new boot says why it started.
    with Observer(own_bench) as obs:
        boot = obs.shadow_get(kit.thing)["state"]["reported"]["boot"]
    assert boot["after"] == f"no cloud session for {limit} s", boot
