"""The kit on a stock ESP32 image: what the image does differently from the unix port,
and the firmware still comes online.

A stock MicroPython image (micropython.org's ESP32_GENERIC) searches its frozen modules
before /lib and freezes a umqtt.simple whose constructor is not the one thingkit pins;
its ticks wrap at 2**30 ms; it has no ROMFS. The virtual kit plays each of these
(host_tools/kit/image, chosen by the board definition's "image"), so the firmware is
shown to handle them here, and shown to fail without its fix.
"""

from __future__ import annotations

import itertools
import re
import time

import pytest

from hil_tests.helpers import wait_connected

pytestmark = pytest.mark.capability("virtual_kit")

STAND_IN = "W umqtt: the stock image's frozen umqtt.simple is in use"


def test_kit_uses_its_pinned_mqtt_client_although_the_image_freezes_another(
    bench, make_kit, observer
):
    t0 = time.time()
    kit = make_kit(bench)
    sim = kit.kit
    assert sim.image.get("frozen", {}).get("umqtt.simple"), "the default kit is a stock image"
    assert "frozen" in sim.micropypath().split(":")[0], sim.micropypath()  # .frozen before /lib
    assert not sim.romfs_image.exists() and (sim.flash / "tk" / "device.mpy").is_file()
    kit.power_on()
    assert wait_connected(observer, kit.thing, True, 30, since=t0), kit.kit.console()
    assert STAND_IN not in kit.kit.console()


def test_without_its_own_libraries_first_the_kit_would_never_come_online(bench, make_kit, observer):
    # The control: the same kit with boot's path fix taken out of main.py imports the
    # image's frozen umqtt.simple, as a stock board would, and never connects.
    kit = make_kit(bench)
    main = kit.kit.flash / "main.py"
    src = main.read_text()
    fix = re.search(r"^_libs = .*?^del _libs\n", src, re.MULTILINE | re.DOTALL)
    assert fix, "main.py no longer has the path fix this test removes"
    main.write_text(src.replace(fix.group(0), ""))
    t0 = time.time()
    kit.power_on()
    # umqtt.simple 1.4.0's constructor has no ssl_params: every session ends there.
    kit.kit.wait_for(r"session ended: TypeError\(\"unexpected keyword argument 'ssl_params'", 20)
    assert wait_connected(observer, kit.thing, True, 3, since=t0) is None


def test_ticks_wrap_within_seconds_of_boot_and_nothing_notices(bench, make_kit, observer):
    # The kit's tick counter starts 20 s before its 30-bit wrap (image/port/time.py):
    # telemetry keeps its interval and uptime keeps counting across the wrap.
    t0 = time.time()
    kit = make_kit(bench, telemetry_interval_s=2, diag_interval_s=10)
    kit.power_on()
    assert wait_connected(observer, kit.thing, True, 30, since=t0), kit.kit.console()
    tele = f"thingkit/{kit.thing}/telemetry"
    diag = f"thingkit/{kit.thing}/diag"
    deadline = time.time() + 40
    while time.time() < deadline:
        if len([m for m in observer.messages if m.topic == diag and m.t >= t0]) >= 3:
            break
        time.sleep(0.5)
    ups = [m.json()["uptime_s"] for m in observer.messages if m.topic == diag and m.t >= t0]
    assert len(ups) >= 3 and ups == sorted(ups) and ups[-1] - ups[0] >= 15, ups
    ts = [m.json()["ts"] for m in observer.messages if m.topic == tele and m.t >= t0]
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    assert len(gaps) >= 8 and all(1500 <= g <= 2500 for g in gaps), gaps
    assert "Traceback" not in kit.kit.console()
