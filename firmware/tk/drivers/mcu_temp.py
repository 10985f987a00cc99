"""The MCU's own temperature sensor (a die temperature, some degrees above ambient).

    from tk.drivers import mcu_temp
    d = mcu_temp.McuTemp(hw.mcu_temperature, "mcu_temp")
    d.read()   # {"temperature": 41.2}

The board layer knows how to read it: esp32.mcu_temperature() on ESP32-S2/S3/C3/C6,
esp32.raw_temperature() (Fahrenheit) on the original ESP32; the sim returns the state
file's value.
"""
from tk import drivers


class McuTemp:
    def __init__(self, read_c, cid="mcu_temp", names=("temperature",)):
        self.id = cid
        self._read_c = read_c  # function returning degrees C
        self._r = {n: None for n in names}

    def read(self):
        # One float per read from the board layer; nothing else is allocated.
        self._r["temperature"] = self._read_c()
        return self._r


def create(comp, hw, bus):
    names = drivers.readings(comp, ("temperature",))
    return McuTemp(hw.mcu_temperature, comp["id"], names)
