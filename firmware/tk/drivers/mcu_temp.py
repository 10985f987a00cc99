"""The MCU's own temperature sensor (a die temperature, some degrees above ambient).

    from tk.drivers import mcu_temp
    d = mcu_temp.create({"id": "mcu_temp", "readings": {"temperature": {}}}, hw, None)
    d.read()   # {"temperature": 41.2}

What a chip can say differs, and the component declares which reading it has:
- ``temperature`` (degrees C): ESP32-S2, -S3, -C3, -C6 (``esp32.mcu_temperature()``);
- ``raw`` (no unit): the original ESP32, whose sensor is uncalibrated
  (``esp32.raw_temperature()``, which MicroPython documents as not representing any
  particular unit; many chips read a constant 128, reported as an error, not a value).
The board layer reads it (``hw.mcu_temperature()``, ``hw.mcu_temperature_raw()``); the
virtual kit returns its state file's values.
"""
from tk import drivers


class McuTemp:
    def __init__(self, hw, cid, names):
        self.id = cid
        self._r = {n: None for n in names}
        self._c = hw.mcu_temperature if "temperature" in names else None
        self._raw = hw.mcu_temperature_raw if "raw" in names else None

    def read(self):
        # One number per reading from the board layer; nothing else is allocated.
        if self._c is not None:
            self._r["temperature"] = self._c()
        if self._raw is not None:
            self._r["raw"] = self._raw()
        return self._r


def create(comp, hw, bus):
    return McuTemp(hw, comp["id"], drivers.readings(comp, ("temperature", "raw")))
