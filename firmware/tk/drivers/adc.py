"""An analog input: reading "voltage" in volts, from the board's calibrated read_uv().

    from tk.drivers import adc
    a = adc.Adc(hw.adc(34, "11dB"), "adc0")
    a.read()   # {"voltage": 1.234}

Board keys: "pin", "atten" (ESP32 input attenuation: "0dB", "2.5dB", "6dB" or "11dB";
default "11dB", the widest range, about 0.15 to 2.45 V on ESP32 with calibration).
machine.ADC.read_uv() applies the chip's eFuse calibration, which read_u16() does not.
"""
from tk import drivers


class Adc:
    def __init__(self, adc, cid="adc", names=("voltage",)):
        self.id = cid
        self._adc = adc
        self._r = {n: None for n in names}

    def read(self):
        # Microvolts (int) to volts: one float per read.
        self._r["voltage"] = self._adc.read_uv() / 1000000
        return self._r


def create(comp, hw, bus):
    names = drivers.readings(comp, ("voltage",))
    return Adc(hw.adc(drivers.pin(comp), comp.get("atten", "11dB")), comp["id"], names)
