"""A plain LED on a GPIO: write(True/False), reading "on" (bool).

    from tk.drivers import led
    l = led.Led(hw.pin_out(2), "led")
    l.write(True)
    l.read()   # {"on": True}

Board keys: "pin", "active_low" (the LED lights when the pin is low; default false).
read() reports what was last written: the driver drives the pin, so that is what the
LED shows. The LED is switched off when the driver is created, to start from a known
state.
"""
from tk import drivers


class Led:
    def __init__(self, pin, cid="led", active_low=False, names=("on",)):
        self.id = cid
        self._pin = pin
        self._active_low = active_low
        self._r = {n: None for n in names}
        self.write(False)

    def write(self, on):
        on = bool(on)
        self._pin.value(0 if on == self._active_low else 1)
        self._r["on"] = on

    def read(self):
        return self._r


def create(comp, hw, bus):
    names = drivers.readings(comp, ("on",))
    return Led(hw.pin_out(drivers.pin(comp)), comp["id"], bool(comp.get("active_low", False)),
               names)
