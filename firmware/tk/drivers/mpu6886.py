"""InvenSense/TDK MPU-6886 6-axis IMU over I2C: accel_x/y/z (g), gyro_x/y/z (dps),
temperature (C).

    from tk.drivers import mpu6886
    m = mpu6886.MPU6886(hw.i2c(bus), 0x68, "imu")
    m.read()   # {"accel_z": 1.0, "gyro_x": 0.0, ..., "temperature": 31.5}

Registers (MPU-6886 datasheet DS-000193, register map): WHO_AM_I 0x75 (0x19),
PWR_MGMT_1 0x6B (0x80 resets; 0x01 wakes with the auto-selected clock), CONFIG 0x1A,
GYRO_CONFIG 0x1B and ACCEL_CONFIG 0x1C (full scale in bits 4:3), data 0x3B..0x48:
ACCEL_X/Y/Z, TEMP, GYRO_X/Y/Z, each a big-endian signed 16-bit word, read in one burst.
Scales: accel 16384/8192/4096/2048 LSB/g for +-2/4/8/16 g; gyro 131/65.5/32.8/16.4
LSB/dps for +-250/500/1000/2000 dps; temperature 326.8 LSB/C, 0 LSB = 25 C.

The full scales are the smallest that cover the "range" the board declares for the
readings (default +-8 g, +-2000 dps).
"""
import time

from micropython import const

from tk import drivers

_REG_CONFIG = const(0x1A)
_REG_GYRO_CONFIG = const(0x1B)
_REG_ACCEL_CONFIG = const(0x1C)
_REG_DATA = const(0x3B)
_REG_PWR_MGMT_1 = const(0x6B)
_REG_WHO_AM_I = const(0x75)
_WHO_AM_I = const(0x19)

NAMES = ("accel_x", "accel_y", "accel_z", "temperature", "gyro_x", "gyro_y", "gyro_z")
_ACCEL_FS = (2, 4, 8, 16)  # g; FS_SEL 0..3
_GYRO_FS = (250, 500, 1000, 2000)  # dps; FS_SEL 0..3
_GYRO_LSB = (131.0, 65.5, 32.8, 16.4)


def _fs_sel(comp, prefix, scales, default):
    """Smallest full scale covering the declared ranges of the prefix's readings."""
    need = 0
    for name, spec in (comp.get("readings") or {}).items():
        if name.startswith(prefix) and isinstance(spec, dict) and spec.get("range"):
            need = max(need, abs(spec["range"][0]), abs(spec["range"][1]))
    if not need:
        return default
    for sel in range(4):
        if scales[sel] >= need:
            return sel
    return 3


class MPU6886:
    def __init__(self, i2c, addr=0x68, cid="mpu6886", names=NAMES, accel_sel=2, gyro_sel=3):
        self.id = cid
        self._i2c = i2c
        self._addr = addr
        self._accel_sel = accel_sel
        self._gyro_sel = gyro_sel
        self._accel_lsb = 16384 >> accel_sel  # LSB per g
        self._gyro_lsb = _GYRO_LSB[gyro_sel]  # LSB per dps
        self._b1 = bytearray(1)
        self._data = bytearray(14)
        self._ready = False
        self._r = {n: None for n in names}
        self._raw = [None] * 7  # last raw words; floats are made only when one changes

    def _write_reg(self, reg, value):
        self._b1[0] = value
        self._i2c.writeto_mem(self._addr, reg, self._b1)

    def _setup(self):
        self._i2c.readfrom_mem_into(self._addr, _REG_WHO_AM_I, self._b1)
        if self._b1[0] != _WHO_AM_I:
            raise drivers.ComponentError("%s: WHO_AM_I 0x%02x at 0x%02x, expected 0x%02x "
                                         "(MPU6886)" % (self.id, self._b1[0], self._addr,
                                                        _WHO_AM_I))
        self._write_reg(_REG_PWR_MGMT_1, 0x80)  # device reset
        time.sleep_ms(10)
        self._write_reg(_REG_PWR_MGMT_1, 0x01)  # awake, auto-selected clock
        time.sleep_ms(10)
        self._write_reg(_REG_ACCEL_CONFIG, self._accel_sel << 3)
        self._write_reg(_REG_GYRO_CONFIG, self._gyro_sel << 3)
        self._write_reg(_REG_CONFIG, 0x01)  # gyro and temperature low-pass 176 Hz
        time.sleep_ms(5)
        self._ready = True

    def read(self):
        try:
            if not self._ready:
                self._setup()
            self._i2c.readfrom_mem_into(self._addr, _REG_DATA, self._data)
        except OSError:
            self._ready = False
            raise
        d, r, last = self._data, self._r, self._raw
        for i in range(7):
            v = (d[2 * i] << 8) | d[2 * i + 1]
            if v & 0x8000:
                v -= 0x10000
            if v == last[i]:
                continue
            last[i] = v
            name = NAMES[i]
            if name not in r:
                continue
            if i < 3:
                r[name] = v / self._accel_lsb
            elif i == 3:
                r[name] = v / 326.8 + 25
            else:
                r[name] = v / self._gyro_lsb
        return r


def create(comp, hw, bus):
    names = drivers.readings(comp, NAMES)
    return MPU6886(hw.i2c(bus), drivers.address(comp, 0x68), comp["id"], names,
                   _fs_sel(comp, "accel_", _ACCEL_FS, 2), _fs_sel(comp, "gyro_", _GYRO_FS, 3))
