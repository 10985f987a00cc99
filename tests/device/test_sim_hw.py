"""sim_board.hw and its emulators (sim_board.state, i2c_bus, bme280, sht31,
mpu6886, axp192), register by register, on the unix port."""

from __future__ import annotations

import json

import pytest

from .test_drivers import BOARD

PRELUDE = """
import json, os, time
from sim_board import hw, state as sim_state
from tkfakes import out, err, hx

BOARD = json.load(open("board.json"))
COMPS = {c["id"]: c for c in BOARD["components"]}
BUS = hw.i2c(BOARD["buses"]["i2c0"])

def set_state(d, reload=True):
    with open("hw.json.tmp", "w") as f:
        json.dump(d, f)
    os.rename("hw.json.tmp", "hw.json")
    if reload:
        hw.reload()

def attempt(f):
    try:
        return {"ok": f()}
    except Exception as e:
        return {"error": err(e)}

def rd(addr, reg, n):
    return hx(BUS.readfrom_mem(addr, reg, n))
"""


@pytest.fixture
def sim(mpy):
    mpy.write("board.json", json.dumps(BOARD))

    def run(code: str, state: dict | None = None, env: dict | None = None, **kw):
        if state is not None:
            mpy.write("hw.json", json.dumps(state))
        e = {"TK_SIM_HW": str(mpy.cwd / "hw.json"), "TK_SIM_BOARD": "board.json"}
        e.update(env or {})
        return mpy.one(code, prelude=PRELUDE, env=e, **kw)

    return run


# -- the bus --------------------------------------------------------------------------------
def test_scan_lists_the_boards_i2c_parts_and_drops_unplugged_ones(sim):
    r = sim(
        """
        a = BUS.scan()
        set_state({"unplugged": ["env", "battery"]})
        out([a, BUS.scan(), hw.i2c(BOARD["buses"]["i2c0"]) is BUS])
    """,
        {},
    )
    assert r == [[0x34, 0x44, 0x68, 0x76], [0x44, 0x68], True]


def test_absent_address_nacks_with_enodev_on_every_kind_of_transfer(sim):
    r = sim(
        """
        buf = bytearray(2)
        out([attempt(lambda: BUS.readfrom_mem(0x50, 0, 1)),
             attempt(lambda: BUS.writeto(0x50, b"\\x00")),
             attempt(lambda: BUS.readfrom_into(0x50, buf)),
             attempt(lambda: BUS.writeto_mem(0x50, 0, b"\\x00")),
             attempt(lambda: BUS.readfrom_mem_into(0x50, 0, buf))])
    """,
        {},
    )
    assert r == [{"error": ["OSError", 19]}] * 5


def test_write_log_records_wire_bytes(sim):
    r = sim(
        """
        BUS.log = []
        BUS.writeto_mem(0x76, 0xF5, b"\\x00")
        BUS.writeto(0x44, b"\\x24\\x00")
        BUS.writeto_mem(0x68, 0x1C, bytearray(b"\\x10\\x08"))
        out([[a, hx(b)] for a, b in BUS.log])
    """,
        {},
    )
    assert r == [[0x76, "f500"], [0x44, "2400"], [0x68, "1c1008"]]


def test_without_a_state_file_every_part_is_present_with_defaults(mpy):
    mpy.write("board.json", json.dumps(BOARD))
    r = mpy.one(
        """
        from sim_board import hw
        from tkfakes import out
        bus = hw.i2c({"id": 0})
        out([bus.scan(), hw.mcu_temperature(), hw.pin_in(0).value(), hw.adc(34).read_uv()])
    """,
        env={"TK_SIM_BOARD": "board.json"},
    )
    assert r == [[0x34, 0x44, 0x68, 0x76], 40.0, 1, 1000000]


def test_without_a_board_the_bus_is_empty(mpy):
    r = mpy.one("""
        from sim_board import hw
        from tkfakes import out
        out([hw.i2c({"id": 0}).scan(), hw.pin_in(0).value(), hw.pin_in(0, False).value()])
    """)
    assert r == [[], 1, 0]


# -- the state file -------------------------------------------------------------------------
def test_state_polling_interval_and_reload(sim):
    r = sim(
        """
        c = COMPS["mcu_temp"]
        a = hw.mcu_temperature()
        set_state({"mcu_temp": {"temperature": 50.0}}, reload=False)
        b = hw.mcu_temperature()        # within the poll interval: not seen yet
        time.sleep_ms(600)
        c = hw.mcu_temperature()        # after it: seen
        set_state({"mcu_temp": {"temperature": 60.0}}, reload=False)
        hw.reload()
        out([a, b, c, hw.mcu_temperature()])
    """,
        {"mcu_temp": {"temperature": 45.0}},
    )
    assert r == [45.0, 45.0, 50.0, 60.0]


def test_state_poll_interval_zero_sees_every_change(sim):
    r = sim(
        """
        res = []
        for t in (1.0, 2.0, 3.0):
            set_state({"mcu_temp": {"temperature": t}}, reload=False)
            res.append(hw.mcu_temperature())
        out(res)
    """,
        {},
        env={"TK_SIM_HW_POLL_MS": "0"},
    )
    assert r == [1.0, 2.0, 3.0]


def test_half_written_state_keeps_the_old_one_and_a_missing_file_means_defaults(sim):
    r = sim(
        """
        a = hw.mcu_temperature()
        with open("hw.json", "w") as f:
            f.write('{"mcu_temp": {"temp')
        hw.reload()
        b = hw.mcu_temperature()
        os.remove("hw.json")
        hw.reload()
        out([a, b, hw.mcu_temperature(), BUS.scan()])
    """,
        {"mcu_temp": {"temperature": 45.0}, "unplugged": ["env"]},
    )
    assert r == [45.0, 45.0, 40.0, [0x34, 0x44, 0x68, 0x76]]


def test_default_outside_the_declared_range_moves_to_its_middle(sim):
    r = sim(
        """
        c = {"id": "x", "readings": {"temperature": {"range": [100, 200]}}}
        out([sim_state.value(c, "temperature", 22.0), sim_state.value(COMPS["env"], "temperature", 22.0)])
    """,
        {},
    )
    assert r == [150.0, 22.0]


def test_reading_state_allocates_nothing_between_polls(sim):
    r = sim(
        """
        import gc
        def main():
            p = hw.pin_in(0)
            a = hw.adc(34)
            p.value()
            gc.collect()
            gc.disable()
            m = gc.mem_alloc()
            for _ in range(100):
                p.value()
                hw.mcu_temperature()
            d = gc.mem_alloc() - m
            gc.enable()
            return d
        out(main())
    """,
        {"boot_button": {"pressed": True}, "mcu_temp": {"temperature": 45.0}},
    )
    assert r < 400  # at most a stat or two (about 160 bytes each)


# -- pins, ADC, touch, NeoPixel ---------------------------------------------------------------
def test_input_pins_follow_buttons_and_pulls(sim):
    r = sim(
        """
        res = [hw.pin_in(0).value(), hw.pin_in(5, False).value(), hw.pin_in(7).value(),
               hw.pin_in(7, False).value()]
        set_state({"boot_button": {"pressed": True}, "hi_button": {"pressed": True}})
        res += [hw.pin_in(0).value(), hw.pin_in(5, False).value()]
        set_state({"boot_button": {"pressed": True}, "unplugged": ["boot_button"]})
        res.append(hw.pin_in(0).value())   # a button that is not there: the pull-up
        out(res)
    """,
        {},
    )
    assert r == [1, 0, 1, 0, 0, 1, 1]


def test_outputs_are_kept_in_memory(sim):
    r = sim(
        """
        res = [hw.output(2)]
        p = hw.pin_out(2)
        p.value(1)
        res += [hw.output(2), p.value(), hw.pin_out(2) is p]
        np = hw.neopixel(27, 3)
        np[1] = (1, 2, 3)
        res += [np.shown, np.writes]
        np.write()
        res += [np.shown, np.writes, len(np), list(np[1]), hw.pixels(27) is np]
        out(res)
    """,
        {},
    )
    assert r == [
        None,
        1,
        1,
        True,
        [[0, 0, 0]] * 3,
        0,
        [[0, 0, 0], [1, 2, 3], [0, 0, 0]],
        1,
        3,
        [1, 2, 3],
        True,
    ]


def test_adc_and_touch_values(sim):
    r = sim(
        """
        out([hw.adc(34, "11dB").read_uv(), hw.touch(4).read(), hw.adc(35).read_uv()])
    """,
        {"adc0": {"voltage": 1.234567}, "touch0": {"value": 77}},
    )
    assert r == [1234567, 77, 1000000]


# -- BME280 emulator ------------------------------------------------------------------------
def test_bme280_registers_after_power_up(sim):
    r = sim(
        """
        out([rd(0x76, 0xD0, 1), rd(0x76, 0x88, 26), rd(0x76, 0xE1, 7), rd(0x76, 0xF2, 4),
             rd(0x76, 0xF7, 8)])
    """,
        {},
    )
    chip, tp, h, ctrl, data = r
    assert chip == "60"
    # dig_T1 27504 = 0x6B70 little-endian, dig_T2 26435 = 0x6743, dig_T3 -1000 = 0xFC18 ...
    assert tp.startswith("706b436718fc7d8e")
    assert tp[-2:] == "4b"  # dig_H1 = 75 at 0xA1
    # dig_H2 370 = 0x0172; H3 0; H4 313 = 0x139 -> E4=0x13, E5[3:0]=9; H5 50 = 0x032 ->
    # E5[7:4]=2, E6=0x03; H6 30.
    assert h == "7201001329031e"
    assert ctrl == "00000000"
    assert data == "8000008000008000"  # reset values: nothing measured yet


def test_bme280_forced_measurement_status_and_sleep(sim):
    r = sim(
        """
        BUS.writeto_mem(0x76, 0xF2, b"\\x01")
        BUS.writeto_mem(0x76, 0xF4, b"\\x25")
        busy = rd(0x76, 0xF3, 1)
        mode = rd(0x76, 0xF4, 1)
        time.sleep_ms(12)
        out([busy, mode, rd(0x76, 0xF3, 1), rd(0x76, 0xF7, 8)])
    """,
        {},
    )
    busy, mode, idle, data = r
    assert busy == "08" and idle == "00"
    assert mode == "24"  # back to sleep mode after the forced measurement
    assert data[:6] != "800000" and data[12:] != "8000"
    # x1 oversampling: 16-bit temperature and pressure, so the low nibbles are 0.
    assert data[5] == "0" and data[11] == "0"


def test_bme280_skipped_measurements_and_soft_reset(sim):
    r = sim(
        """
        BUS.writeto_mem(0x76, 0xF4, b"\\x01")   # forced, all oversampling 0: all skipped
        a = rd(0x76, 0xF7, 8)
        BUS.writeto_mem(0x76, 0xF2, b"\\x01")
        BUS.writeto_mem(0x76, 0xF4, b"\\x25")
        BUS.writeto_mem(0x76, 0xE0, b"\\xb6")
        out([a, rd(0x76, 0xF2, 4)])
    """,
        {},
    )
    assert r == ["8000008000008000", "00000000"]


def test_bme280_chip_id_fault_applies_while_plugged(sim):
    r = sim(
        """
        a = rd(0x76, 0xD0, 1)
        set_state({"env": {"chip_id": 0x58}})
        b = rd(0x76, 0xD0, 1)
        set_state({})
        out([a, b, rd(0x76, 0xD0, 1)])
    """,
        {},
    )
    assert r == ["60", "58", "60"]


def test_bme280_emulator_solver_hits_targets_in_double_precision(sim):
    r = sim(
        """
        from sim_board import bme280 as e
        res = []
        for t in (-40.0, 0.0, 21.5, 85.0):
            a = e.solve(lambda x: e.comp_t(x)[0], t, 20, 20)
            res.append(abs(e.comp_t(a)[0] - t))
        tf = e.comp_t(e.solve(lambda x: e.comp_t(x)[0], 21.5, 20, 20))[1]
        for p in (30000.0, 101325.0, 110000.0):
            a = e.solve(lambda x: e.comp_p(x, tf), p, 20, 20)
            res.append(abs(e.comp_p(a, tf) - p))
        for h in (0.0, 45.0, 100.0):
            a = e.solve(lambda x: e.comp_h(x, tf), h, 16, 16)
            res.append(abs(e.comp_h(a, tf) - h))
        out(res)
    """,
        {},
    )
    assert all(d < 0.001 for d in r[:4])  # C: one 20-bit LSB is ~0.0003 C
    assert all(d < 0.2 for d in r[4:7])  # Pa
    assert all(d < 0.01 for d in r[7:])  # %RH


# -- SHT31 emulator -------------------------------------------------------------------------
def test_sht31_emulator_protocol(sim):
    r = sim(
        """
        from sim_board import sht31 as sim_sht31
        buf = bytearray(6)
        res = [sim_sht31.crc8(b"\\xbe\\xef")]
        res.append(attempt(lambda: BUS.readfrom_into(0x44, buf)))   # nothing measured
        BUS.writeto(0x44, b"\\x24\\x00")
        res.append(attempt(lambda: BUS.readfrom_into(0x44, buf)))   # too early
        time.sleep_ms(16)
        BUS.readfrom_into(0x44, buf)
        res.append(hx(buf))
        res.append(attempt(lambda: BUS.readfrom_into(0x44, buf)))   # read only once
        BUS.writeto(0x44, b"\\xf3\\x2d")
        res.append(hx(BUS.readfrom(0x44, 3)))
        out(res)
    """,
        {"sht": {"temperature": 20.0, "humidity": 50.0}},
    )
    crc, none_yet, early, data, again, status = r
    assert crc == 0x92
    assert none_yet == early == again == {"error": ["OSError", 19]}
    st, srh = int(data[0:4], 16), int(data[6:10], 16)
    assert abs(-45 + 175 * st / 65535 - 20.0) <= 0.003 and abs(100 * srh / 65535 - 50.0) <= 0.002
    assert status[:4] == "0010"


def test_sht31_bad_crc_fault(sim):
    r = sim(
        """
        from sim_board import sht31 as sim_sht31
        BUS.writeto(0x44, b"\\x24\\x00")
        time.sleep_ms(16)
        b = BUS.readfrom(0x44, 6)
        out([b[2] == sim_sht31.crc8(b[0:2]), b[5] == sim_sht31.crc8(b[3:5])])
    """,
        {"sht": {"bad_crc": True}},
    )
    assert r == [False, True]


# -- MPU6886 emulator -----------------------------------------------------------------------
def test_mpu6886_asleep_after_power_up_then_scaled_by_config(sim):
    r = sim(
        """
        res = [rd(0x68, 0x75, 1), rd(0x68, 0x6B, 1), rd(0x68, 0x3B, 14)]
        BUS.writeto_mem(0x68, 0x6B, b"\\x01")
        res.append(rd(0x68, 0x3B, 14))
        BUS.writeto_mem(0x68, 0x1C, b"\\x18")     # +-16 g
        res.append(rd(0x68, 0x3F, 2))
        BUS.writeto_mem(0x68, 0x6B, b"\\x80")     # reset: asleep, defaults
        res.append(rd(0x68, 0x1C, 1) + rd(0x68, 0x6B, 1))
        out(res)
    """,
        {"imu": {"accel_z": 1.0, "gyro_x": -1.0, "temperature": 25.0}},
    )
    who, pwr, asleep, awake, z16, after_reset = r
    assert who == "19" and pwr == "41"
    assert asleep == "00" * 14
    # +-2 g: 1 g = 16384 = 0x4000; temperature 25 C = 0; gyro +-250: -1 dps = -131 = 0xFF7D
    assert awake == "0000000040000000ff7d00000000"
    assert z16 == "0800"  # 2048 LSB/g
    assert after_reset == "0041"


# -- AXP192 emulator ------------------------------------------------------------------------
def test_axp192_adc_off_until_enabled(sim):
    r = sim(
        """
        res = [rd(0x34, 0x03, 1), rd(0x34, 0x01, 1), rd(0x34, 0x78, 2)]
        BUS.writeto_mem(0x34, 0x82, b"\\x80")
        res.append(rd(0x34, 0x78, 2))
        out(res)
    """,
        {"battery": {"voltage": 4.2, "charging": True}},
    )
    # 4.2 V / 1.1 mV = 3818 = 0xEEA -> 0x78 = 0xEE, 0x79 = 0x0A
    assert r == ["03", "60", "0000", "ee0a"]
