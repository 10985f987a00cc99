"""A capacitive touch pad: reading "value", the raw count of machine.TouchPad.read().

    from tk.drivers import touch
    t = touch.Touch(hw.touch(4), "touch0")
    t.read()   # {"value": 612}

The raw count is what the chip gives: on the ESP32 it falls when the pad is touched, on
the ESP32-S2/S3 it rises. Thresholds belong to the application, not to this driver.
Board key: "pin" (a touch-capable GPIO).
"""
from tk import drivers


class Touch:
    def __init__(self, pad, cid="touch", names=("value",)):
        self.id = cid
        self._pad = pad
        self._r = {n: None for n in names}

    def read(self):
        self._r["value"] = self._pad.read()
        return self._r


def create(comp, hw, bus):
    names = drivers.readings(comp, ("value",))
    return Touch(hw.touch(drivers.pin(comp)), comp["id"], names)
