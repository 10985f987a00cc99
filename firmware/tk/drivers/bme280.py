"""Bosch BME280 over I2C: temperature (C), humidity (%RH), pressure (hPa).

    from tk.drivers import bme280
    s = bme280.BME280(hw.i2c(bus), 0x76, "env")
    s.read()   # {"temperature": 21.5, "humidity": 40.0, "pressure": 1013.25}

Forced mode, oversampling x1 for all three, IIR filter off: the datasheet's setting for
weather monitoring (BME280 datasheet rev 1.6, section 3.5.1). Each read() starts one
measurement, waits the datasheet's maximum measurement time, reads the eight data
registers in one burst and compensates them with the datasheet's integer formulas
(section 4.2.3: temperature 32-bit, pressure 64-bit, humidity 32-bit). Registers:
datasheet section 5.3; a write to ctrl_hum takes effect with the next ctrl_meas write.

Allocation: the buffers are made once; a read allocates only the floats it returns, and
only when a value changed since the last read. The 64-bit pressure product is split so
that no intermediate passes 2**62 (the unix port's small-int limit); on ESP32 (31-bit
small ints) some intermediates still become long ints.
"""
import time

from micropython import const

from tk import drivers

_REG_CALIB_TP = const(0x88)  # 26 bytes: dig_T1..dig_P9, (0xA0 unused), dig_H1 at 0xA1
_REG_ID = const(0xD0)
_REG_RESET = const(0xE0)
_REG_CALIB_H = const(0xE1)  # 7 bytes: dig_H2..dig_H6
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_CONFIG = const(0xF5)
_REG_DATA = const(0xF7)  # press[3], temp[3], hum[2]

_CHIP_ID = const(0x60)
_RESET_WORD = const(0xB6)
_STATUS_MEASURING = const(0x08)
_STATUS_IM_UPDATE = const(0x01)

_OSRS = const(1)  # oversampling x1 for T, P and H
_CTRL_MEAS_FORCED = const((_OSRS << 5) | (_OSRS << 2) | 0x01)  # 0x25
# Maximum measurement time (datasheet 9.1), in us: 1250 + 2300*osrs_t
# + (2300*osrs_p + 575) + (2300*osrs_h + 575) = 9300 us at x1; rounded up.
_WAIT_MS = const(10)
_SKIPPED_T = const(0x80000)  # a temperature or pressure that was not measured
_SKIPPED_H = const(0x8000)


def _u16(b, i):
    return b[i] | (b[i + 1] << 8)


def _s16(b, i):
    v = b[i] | (b[i + 1] << 8)
    return v - 0x10000 if v & 0x8000 else v


class BME280:
    def __init__(self, i2c, addr=0x76, cid="bme280",
                 names=("temperature", "humidity", "pressure")):
        self.id = cid
        self._i2c = i2c
        self._addr = addr
        self._b1 = bytearray(1)
        self._calib = bytearray(26)
        self._data = bytearray(8)
        self._ready = False  # set up (chip checked, calibration read) on the first read
        self._r = {n: None for n in names}
        # Last integer results; a float is made only when one changes.
        self._t = self._p = self._h = None

    # -- bus helpers ------------------------------------------------------------------
    def _read_reg(self, reg):
        self._i2c.readfrom_mem_into(self._addr, reg, self._b1)
        return self._b1[0]

    def _write_reg(self, reg, value):
        self._b1[0] = value
        self._i2c.writeto_mem(self._addr, reg, self._b1)

    # -- set-up -----------------------------------------------------------------------
    def _setup(self):
        chip = self._read_reg(_REG_ID)
        if chip != _CHIP_ID:
            raise drivers.ComponentError("%s: chip id 0x%02x at 0x%02x, expected 0x%02x (BME280)"
                                         % (self.id, chip, self._addr, _CHIP_ID))
        self._write_reg(_REG_RESET, _RESET_WORD)
        time.sleep_ms(3)  # start-up time after reset: 2 ms max
        for _ in range(10):  # the NVM calibration is copied to the image registers
            if not self._read_reg(_REG_STATUS) & _STATUS_IM_UPDATE:
                break
            time.sleep_ms(1)
        else:
            raise drivers.ComponentError("%s: calibration copy never finished" % self.id)
        c = self._calib
        self._i2c.readfrom_mem_into(self._addr, _REG_CALIB_TP, c)
        self._T1, self._T2, self._T3 = _u16(c, 0), _s16(c, 2), _s16(c, 4)
        self._P1, self._P2, self._P3 = _u16(c, 6), _s16(c, 8), _s16(c, 10)
        self._P4, self._P5, self._P6 = _s16(c, 12), _s16(c, 14), _s16(c, 16)
        self._P7, self._P8, self._P9 = _s16(c, 18), _s16(c, 20), _s16(c, 22)
        self._H1 = c[25]
        self._i2c.readfrom_mem_into(self._addr, _REG_CALIB_H, memoryview(c)[:7])
        self._H2, self._H3 = _s16(c, 0), c[2]
        # dig_H4 = 0xE4[11:4] / 0xE5[3:0], dig_H5 = 0xE5[7:4] / 0xE6[11:4]; both signed
        # 12-bit (the msb byte is signed).
        e4, e5, e6 = c[3], c[4], c[5]
        self._H4 = ((e4 - 256 if e4 & 0x80 else e4) << 4) | (e5 & 0x0F)
        self._H5 = ((e6 - 256 if e6 & 0x80 else e6) << 4) | (e5 >> 4)
        self._H6 = c[6] - 256 if c[6] & 0x80 else c[6]
        if self._T1 == 0 or self._P1 == 0:
            raise drivers.ComponentError("%s: calibration data is blank" % self.id)
        self._write_reg(_REG_CONFIG, 0)  # filter off (forced mode ignores t_sb)
        self._write_reg(_REG_CTRL_HUM, _OSRS)  # applied by the next ctrl_meas write
        self._ready = True

    # -- measurement ------------------------------------------------------------------
    def read(self):
        try:
            if not self._ready:
                self._setup()
            self._write_reg(_REG_CTRL_MEAS, _CTRL_MEAS_FORCED)
            time.sleep_ms(_WAIT_MS)
            n = 0
            while self._read_reg(_REG_STATUS) & _STATUS_MEASURING:
                n += 1
                if n > 10:
                    raise drivers.ComponentError("%s: measurement never finished" % self.id)
                time.sleep_ms(1)
            self._i2c.readfrom_mem_into(self._addr, _REG_DATA, self._data)
        except OSError:
            self._ready = False  # unplugged or reset: set it up again next time
            raise
        d = self._data
        adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        if adc_t == _SKIPPED_T or adc_p == _SKIPPED_T or adc_h == _SKIPPED_H:
            self._ready = False  # the part lost its settings (power cycle)
            raise drivers.ComponentError("%s: a measurement was skipped (sensor reset?)"
                                         % self.id)
        t_fine = self._t_fine(adc_t)
        r = self._r
        t = (t_fine * 5 + 128) >> 8  # 0.01 C
        if t != self._t:
            self._t = t
            if "temperature" in r:
                r["temperature"] = t / 100
        p = self._pressure(adc_p, t_fine)  # Pa in Q24.8
        if p != self._p:
            self._p = p
            if "pressure" in r:
                r["pressure"] = p / 25600  # 256 * 100 Pa/hPa
        h = self._humidity(adc_h, t_fine)  # %RH in Q22.10
        if h != self._h:
            self._h = h
            if "humidity" in r:
                r["humidity"] = h / 1024
        return r

    # -- compensation (datasheet 4.2.3) ---------------------------------------------------
    def _t_fine(self, adc_t):
        t1 = self._T1
        var1 = (((adc_t >> 3) - (t1 << 1)) * self._T2) >> 11
        x = (adc_t >> 4) - t1
        var2 = (((x * x) >> 12) * self._T3) >> 14
        return var1 + var2

    def _pressure(self, adc_p, t_fine):
        var1 = t_fine - 128000
        var2 = var1 * var1 * self._P6
        var2 = var2 + ((var1 * self._P5) << 17)
        var2 = var2 + (self._P4 << 35)
        var1 = ((var1 * var1 * self._P3) >> 8) + ((var1 * self._P2) << 12)
        # var1 = (((1 << 47) + var1) * P1) >> 33, split in 16-bit halves (exact).
        a = (1 << 47) + var1
        p1 = self._P1
        var1 = ((a >> 16) * p1 + (((a & 0xFFFF) * p1) >> 16)) >> 17
        if var1 == 0:
            raise drivers.ComponentError("%s: pressure compensation divides by 0" % self.id)
        # p = (((1048576 - adc_p) << 31) - var2) * 3125 / var1 (C division truncates),
        # computed as q*3125 + r*3125/var1 so that no product passes 2**62.
        n = ((1048576 - adc_p) << 31) - var2
        neg = n < 0
        if neg:
            n = -n
        q = n // var1
        p = q * 3125 + ((n - q * var1) * 3125) // var1
        if neg:
            p = -p
        var1 = (self._P9 * (p >> 13) * (p >> 13)) >> 25
        var2 = (self._P8 * p) >> 19
        return ((p + var1 + var2) >> 8) + (self._P7 << 4)

    def _humidity(self, adc_h, t_fine):
        v = t_fine - 76800
        v = ((((adc_h << 14) - (self._H4 << 20) - (self._H5 * v)) + 16384) >> 15) * (
            ((((((v * self._H6) >> 10) * (((v * self._H3) >> 11) + 32768)) >> 10)
              + 2097152) * self._H2 + 8192) >> 14)
        v = v - (((((v >> 15) * (v >> 15)) >> 7) * self._H1) >> 4)
        if v < 0:
            v = 0
        elif v > 419430400:
            v = 419430400
        return v >> 12


def create(comp, hw, bus):
    names = drivers.readings(comp, ("temperature", "humidity", "pressure"))
    return BME280(hw.i2c(bus), drivers.address(comp, 0x76), comp["id"], names)
