"""A kit whose heap cannot hold App #2 still comes online: out of memory at boot it starts
again without App #2, and after two sessions in a row ended by MemoryError it drops App #2
(tk.device). It says why in the shadow, answers App #1 and can be reached (for an update
or a smaller configuration), where it used to fail every session and stay unreachable.

The heap figures are the 64-bit virtual kit's, code as .mpy in RAM (a stock image): 128 KiB
holds App #1 + App #2 there, 96 KiB does not."""

from __future__ import annotations

import re
import time

import pytest

from hil_tests.helpers import ping, wait_connected

pytestmark = pytest.mark.slow

# 96 KiB: App #1 alone runs steadily (4 of 4 runs), App #2 does not fit (it needs 116 KiB).
# At 72 KiB even App #1 alone lost sessions for memory at its shadow sync in one CI run.
TOO_SMALL_FOR_APP2 = "96k"


def test_kit_without_room_for_app2_comes_online_without_it(bench, make_kit, observer):
    t0 = time.time()
    kit = make_kit(bench, heap=TOO_SMALL_FOR_APP2, telemetry_interval_s=1)
    kit.power_on()
    online = wait_connected(observer, kit.thing, True, 30, since=t0)
    con = kit.console()
    assert online is not None, con
    assert re.search(r"E device: out of memory (at boot|in \d sessions in a row)", con), con
    boot = observer.shadow_get(kit.thing)["state"]["reported"]["boot"]
    assert boot["degraded"].startswith("App #2 off: out of memory"), boot
    # Then a session that holds: no further session ends, no further MemoryError.
    errors = con.count("MemoryError")
    time.sleep(3)
    con = kit.console()
    assert con.count("MemoryError") == errors, con
    assert con.count("mqtt connected") == 1 and kit.is_running(), con
    assert ping(observer, kit.thing) is not None, kit.console()


def test_kit_with_room_reports_no_degradation(bench, make_kit, observer):
    t0 = time.time()
    kit = make_kit(bench, telemetry_interval_s=1)
    kit.power_on()
    assert wait_connected(observer, kit.thing, True, 30, since=t0), kit.console()
    boot = observer.shadow_get(kit.thing)["state"]["reported"]["boot"]
    assert "degraded" not in boot, boot
    assert "out of memory" not in kit.console()
