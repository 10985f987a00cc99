"""Clock before TLS, and exponential backoff with jitter, seen from outside the kit."""

from __future__ import annotations

import time

import pytest

from hil_tests.helpers import (
    CONNECTING_RX,
    RETRY_RX,
    ConnectRecorder,
    wait_connected,
    wait_shadow_connected,
)
from host_tools.bench.observer import Observer

pytestmark = pytest.mark.slow


def _kit_connections(bench) -> int:
    return bench.broker_log().count("New connection from")


def test_no_tls_before_ntp_then_connects_once_ntp_answers(own_bench, make_kit):
    own_bench.set_ntp(blocked=True)
    kit = make_kit(own_bench)
    before = _kit_connections(own_bench)
    kit.power_on()
    kit.wait_for(
        r"time not synced \(clock never set\).*\n(.*\n)*.*time not synced \(clock never set\)", 20
    )
    assert _kit_connections(own_bench) == before, "kit opened a connection with its clock at 2000"
    assert "device: connecting" not in kit.console()
    blocked = own_bench.layout.ntp_log.read_text().count("blocked")
    assert blocked >= 2, "kit did not keep asking the NTP server"

    with Observer(own_bench) as obs:
        t_unblock = time.time()
        own_bench.set_ntp(blocked=False)
        assert wait_connected(obs, kit.thing, True, 30, since=t_unblock), kit.console()
    con = kit.console()
    assert con.index("I time: clock set from") < con.index("I device: connecting to")
    answered = [
        float(ln.split()[0])
        for ln in own_bench.layout.ntp_log.read_text().splitlines()
        if ln.endswith("answered")
    ]
    assert answered and answered[0] >= t_unblock


def test_ntp_skew_sets_device_clock(own_bench, make_kit):
    """The device takes the time NTP gives, whatever it is (here: one day ahead)."""
    own_bench.set_ntp(offset_s=86400)
    kit = make_kit(own_bench)
    kit.power_on()
    m = kit.wait_for(r"I time: clock set from \S+: (\d{4}-\d\d-\d\d)T", 20)
    assert m.group(1) == time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))


def test_retry_delays_grow_capped_and_jittered(own_bench, make_kit):
    kits = [make_kit(own_bench, backoff_base_ms=200, backoff_cap_ms=1600) for _ in range(2)]
    port = own_bench.port
    own_bench.stop_broker()
    rec = ConnectRecorder(port)  # accepts and drops: what a broker that is down looks like
    try:
        for k in kits:
            k.power_on()
        for k in kits:
            k.wait_for(r"reconnect in \d+ ms \(attempt 7,", 30)
    finally:
        rec.close()
    seqs = []
    for k in kits:
        con = k.console()
        retries = [(int(a), int(d), int(n), int(w)) for a, d, n, w in RETRY_RX.findall(con)][:7]
        windows = [w for _, _, _, w in retries]
        delays = [d for _, d, _, _ in retries]
        assert windows == [200, 400, 800, 1600, 1600, 1600, 1600], windows
        assert all(0 <= d <= w for d, w in zip(delays, windows)), (delays, windows)
        # Each retry waited the delay it announced: gap between connect attempts.
        starts = [int(x) for x in CONNECTING_RX.findall(con)]
        for (t_retry, d, _, _), nxt in zip(retries, starts[1:]):
            assert d - 5 <= nxt - t_retry <= d + 300, (t_retry, d, nxt)
        seqs.append(delays)
    assert seqs[0] != seqs[1], "two kits retried in step: no jitter"
    assert len(set(seqs[0] + seqs[1])) > 4, "delays look constant"
    # The network saw every attempt of both kits.
    assert len(rec.times) >= 2 * 7

    # Broker back: both kits reconnect by themselves (within the cap plus a handshake).
    own_bench.restart_broker()
    with Observer(own_bench) as obs:
        for k in kits:
            assert wait_shadow_connected(obs, k.thing, True, 10), k.console()


def test_person_sets_clock_when_ntp_is_down(own_bench, make_kit):
    """No NTP server answers, a person sets the RTC: after its NTP rounds the kit uses
    that clock (and says so), but it never uses a clock nobody set."""
    own_bench.set_ntp(blocked=True)
    kit = make_kit(own_bench)
    kit.power_on()
    kit.wait_for(r"time not synced \(clock never set\)", 15)
    kit.set_time(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
    kit.wait_for(r"W time: no NTP server answered; using the clock as set", 40)
    with Observer(own_bench) as obs:
        assert wait_shadow_connected(obs, kit.thing, True, 15), kit.console()
        doc = obs.shadow_get(kit.thing)
    assert doc["state"]["reported"]["boot"]["time_source"] == "manual"
