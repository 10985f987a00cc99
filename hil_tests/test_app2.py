"""App #2 on the virtual kit: every component's readings, driven by the simulated
hardware, seen on the broker and in the named shadows."""

from __future__ import annotations

import itertools
import time

import pytest

from hil_tests.helpers import wait_connected

pytestmark = pytest.mark.slow


def _telemetry(observer, thing, pred, timeout, since):
    topic = f"thingkit/{thing}/telemetry"
    return observer.wait(lambda m: m.topic == topic and pred(m.json() or {}), timeout, since=since)


def _boot(bench, make_kit, observer, **config):
    kit = make_kit(bench, telemetry_interval_s=1, **config)
    t0 = time.time()
    kit.power_on()
    assert wait_connected(observer, kit.thing, True, 30, since=t0), kit.console()
    return kit


def test_readings_follow_the_hardware(bench, make_kit, observer):
    kit = _boot(bench, make_kit, observer)
    t1 = time.time()
    kit.set_hw("env", temperature=30.5, humidity=61.0, pressure=990.0)
    kit.set_hw("boot_button", pressed=True)
    kit.set_hw("adc0", voltage=2.5)
    m = _telemetry(
        observer,
        kit.thing,
        lambda d: abs(d.get("readings", {}).get("env", {}).get("temperature", 0) - 30.5) < 0.05,
        5,
        t1,
    )
    assert m is not None, kit.console()
    r = m.json()["readings"]
    assert abs(r["env"]["humidity"] - 61.0) < 0.5
    assert abs(r["env"]["pressure"] - 990.0) < 0.2
    assert r["boot_button"] == {"pressed": True}
    assert abs(r["adc0"]["voltage"] - 2.5) < 0.01
    assert set(r) == {"mcu_temp", "boot_button", "led", "env", "adc0", "imu"}
    assert "errors" not in m.json()


def test_unplugged_sensor_is_an_error_while_others_go_on(bench, make_kit, observer):
    kit = _boot(bench, make_kit, observer)
    t1 = time.time()
    kit.unplug("env")
    m = _telemetry(observer, kit.thing, lambda d: "env" in d.get("errors", {}), 5, t1)
    assert m is not None, kit.console()
    d = m.json()
    assert "env" not in d["readings"]
    assert {"mcu_temp", "imu", "adc0"} <= set(d["readings"])
    assert kit.is_running()

    t2 = time.time()
    kit.unplug("env", unplugged=False)
    back = _telemetry(observer, kit.thing, lambda d: "env" in d.get("readings", {}), 5, t2)
    assert back is not None, kit.console()
    # The named shadow clears the error once the sensor is back.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        doc = observer.shadow_get(kit.thing, shadow="app2")
        if (
            doc
            and "env" in doc["state"]["reported"]["values"]
            and not doc["state"]["reported"].get("errors", {}).get("env")
        ):
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"app2 shadow still shows the env error: {doc}")


def test_interval_and_components_through_the_shadow(bench, make_kit, observer):
    kit = _boot(bench, make_kit, observer)
    observer.shadow_request(
        kit.thing,
        "update",
        {
            "state": {
                "desired": {"settings": {"telemetry_interval_s": 2, "components": ["env", "imu"]}}
            }
        },
    )
    t1 = time.time()
    first = _telemetry(observer, kit.thing, lambda d: d.get("interval_s") == 2, 5, t1)
    assert first is not None, kit.console()
    msgs = []
    deadline = time.monotonic() + 9
    while len(msgs) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
        msgs = [
            m.json()
            for m in observer.messages
            if m.t >= first.t and m.topic == f"thingkit/{kit.thing}/telemetry"
        ]
    assert len(msgs) >= 4
    assert all(set(d["readings"]) == {"env", "imu"} for d in msgs)
    gaps = [(b["ts"] - a["ts"]) / 1000 for a, b in itertools.pairwise(msgs)]
    assert all(1.9 <= g <= 2.1 for g in gaps), gaps
    seqs = [d["seq"] for d in msgs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    doc = observer.shadow_get(kit.thing)
    assert doc["state"]["reported"]["settings"]["components"] == ["env", "imu"]


def test_diagnostics_published_and_kept_in_named_shadow(bench, make_kit, observer):
    kit = make_kit(bench, diag_interval_s=10)
    t0 = time.time()
    kit.power_on()
    m = observer.wait(lambda m: m.topic == f"thingkit/{kit.thing}/diag", 30, since=t0)
    assert m is not None, kit.console()
    d = m.json()
    # The running app partition of the board's stock table: the factory app on a plain
    # image, ota_0 on an -OTA image, before any update.
    apps = [p.name for p in kit.board.partitions if p.type == "app"]
    first = "factory" if "factory" in apps else "ota_0"
    assert d["fw"] == "0.1.0" and d["slot"] == first and d["reset_cause"] == "power_on"
    assert d["reconnects"] == 0 and isinstance(d["rssi"], int)
    assert 0 < d["heap_min_free"] <= d["heap_free"] or d["heap_min_free"] <= d["heap_free"]
    assert 0 < d["heap_alloc"] < kit.heap_bytes()
    time.sleep(0.5)
    doc = observer.shadow_get(kit.thing, shadow="diag")
    assert doc["state"]["reported"]["fw"] == "0.1.0"


def test_app2_survives_many_intervals_in_its_heap(bench, make_kit, observer):
    """30 intervals of App #1 + App #2 in 128 KiB (what the apps need on this 64-bit kit
    with code in RAM; the default kit has room for an update on top): no MemoryError, no
    reconnect, and the lowest free heap stays above zero."""
    kit = _boot(bench, make_kit, observer, diag_interval_s=10, heap="128k")
    t1 = time.time()
    seen = _telemetry(observer, kit.thing, lambda d: d.get("seq", 0) >= 30, 40, t1)
    assert seen is not None, kit.console()
    assert "MemoryError" not in kit.console()
    assert "session ended" not in kit.console()
