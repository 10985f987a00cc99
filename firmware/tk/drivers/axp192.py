"""X-Powers AXP192 power manager (M5Stack Core2 and others) over I2C: battery voltage
(V) and whether the battery is charging.

    from tk.drivers import axp192
    p = axp192.AXP192(hw.i2c(bus), 0x34, "battery")
    p.read()   # {"voltage": 4.05, "charging": True}

The reading may be named "voltage" or "battery_voltage" in board.json.
Registers: IC type 0x03 (0x03 for an AXP192; the AXP2101 reads 0x4A), power mode and
charge status 0x01 (bit 6: charging), ADC enable 1 0x82 (bit 7: battery voltage),
battery voltage 0x78 (bits 11:4) and 0x79 (bits 3:0), 1.1 mV per LSB.
The first read enables the battery-voltage ADC (the other enable bits are kept).
"""
from micropython import const

from tk import drivers

_REG_CHG_STATUS = const(0x01)
_REG_IC_TYPE = const(0x03)
_REG_BAT_V = const(0x78)
_REG_ADC_EN1 = const(0x82)
_IC_TYPE = const(0x03)
_CHARGING = const(0x40)
_ADC_BAT_V = const(0x80)


class AXP192:
    def __init__(self, i2c, addr=0x34, cid="axp192", names=("voltage", "charging")):
        self.id = cid
        self._i2c = i2c
        self._addr = addr
        self._b1 = bytearray(1)
        self._b2 = bytearray(2)
        self._ready = False
        self._r = {n: None for n in names}
        self._raw = None

    def _read_reg(self, reg):
        self._i2c.readfrom_mem_into(self._addr, reg, self._b1)
        return self._b1[0]

    def _setup(self):
        ic = self._read_reg(_REG_IC_TYPE)
        if ic != _IC_TYPE:
            raise drivers.ComponentError("%s: IC type 0x%02x at 0x%02x, expected 0x%02x "
                                         "(AXP192)" % (self.id, ic, self._addr, _IC_TYPE))
        en = self._read_reg(_REG_ADC_EN1)
        if not en & _ADC_BAT_V:
            self._b1[0] = en | _ADC_BAT_V
            self._i2c.writeto_mem(self._addr, _REG_ADC_EN1, self._b1)
        self._ready = True

    def read(self):
        try:
            if not self._ready:
                self._setup()
            self._i2c.readfrom_mem_into(self._addr, _REG_BAT_V, self._b2)
            status = self._read_reg(_REG_CHG_STATUS)
        except OSError:
            self._ready = False
            raise
        raw = (self._b2[0] << 4) | (self._b2[1] & 0x0F)
        r = self._r
        if raw != self._raw:
            self._raw = raw
            v = raw * 11 / 10000  # 1.1 mV per LSB
            if "voltage" in r:
                r["voltage"] = v
            if "battery_voltage" in r:
                r["battery_voltage"] = v
        if "charging" in r:
            r["charging"] = bool(status & _CHARGING)
        return r


def create(comp, hw, bus):
    names = drivers.readings(comp, ("voltage", "battery_voltage", "charging"))
    return AXP192(hw.i2c(bus), drivers.address(comp, 0x34), comp["id"], names)
