"""The hardware watchdog (firmware/tk/watchdog.py): a firmware loop that hangs is reset.

The kit's I2C bus is made to hang (the state file's ``"hang": true`` on the BME280: a
transfer that never returns, and nothing else ends it). App #2 reads that sensor from
the main loop, so the loop stops feeding the watchdog; the kit's reset circuit (as
machine.WDT on an ESP32) resets it after ``watchdog.timeout_s``, and the boot after says
why in its reset cause.
"""

from __future__ import annotations

import re
import time

import pytest

from hil_tests.helpers import wait_connected

pytestmark = pytest.mark.capability("virtual_kit", "sim_hw")

WDT_S = 10
RESET = "--- watchdog reset"


def _online(bench, make_kit, observer):
    """A kit reading App #2 every second with a WDT_S watchdog, once it is online."""
    kit = make_kit(bench, telemetry_interval_s=1, watchdog_s=WDT_S)
    kit.power_on()
    t0 = time.time()
    assert wait_connected(observer, kit.thing, True, 30, since=t0), kit.kit.console()
    return kit


@pytest.mark.hil_timeout(120)
def test_a_hung_main_loop_is_reset_by_the_watchdog(bench, make_kit, observer):
    kit = _online(bench, make_kit, observer)
    time.sleep(2)  # a few intervals in which the watchdog is fed
    assert RESET not in kit.kit.console(since_boot=False)

    kit.kit.set_hw("env", hang=True)  # the next reading of the BME280 never returns
    t_hang = time.monotonic()
    kit.kit.wait_for(re.escape(RESET), WDT_S + 15, since_boot=False)
    took = time.monotonic() - t_hang
    kit.kit.set_hw("env", hang=False)  # the part answers again after the reset

    t1 = time.time()
    assert wait_connected(observer, kit.thing, True, 30, since=t1), kit.kit.console()
    boot = observer.shadow_get(kit.thing)["state"]["reported"]["boot"]
    assert boot["reason"] == "watchdog", boot
    con = kit.kit.console(since_boot=False)
    assert con.count(RESET) == 1, con[-2000:]
    # Not before the time-out, not long after it (the circuit looks once a second).
    assert WDT_S - 1 <= took <= WDT_S + 6, took
    assert "(reset: watchdog)" in con


@pytest.mark.hil_timeout(90)
def test_a_busy_but_healthy_kit_is_never_reset(bench, make_kit, observer):
    # The control: the same time-out, readings every second, a session that works:
    # 25 s (2.5 time-outs) without a reset.
    kit = _online(bench, make_kit, observer)
    time.sleep(2.5 * WDT_S)
    con = kit.kit.console(since_boot=False)
    assert RESET not in con and con.count("I main: thingkit") == 1, con[-1500:]
