"""A push button on a GPIO: reading "pressed" (bool).

    from tk.drivers import button
    b = button.Button(hw.pin_in(0, pull_up=True), "boot_button", active_low=True)
    b.read()   # {"pressed": False}

Board keys: "pin", "active_low" (a button that pulls the pin to GND when pressed, the
usual wiring with a pull-up; default false), "pull_up" (enable the internal pull-up;
default: same as active_low. GPIO34-39 of the ESP32 have no internal pulls: set false
and fit an external resistor).
"""
from tk import drivers


class Button:
    def __init__(self, pin, cid="button", active_low=False, names=("pressed",)):
        self.id = cid
        self._pin = pin
        # The level that means "pressed": 0 for an active-low button.
        self._pressed_level = 0 if active_low else 1
        self._r = {n: None for n in names}

    def read(self):
        self._r["pressed"] = self._pin.value() == self._pressed_level
        return self._r


def create(comp, hw, bus):
    active_low = bool(comp.get("active_low", False))
    pull_up = bool(comp.get("pull_up", active_low))
    names = drivers.readings(comp, ("pressed",))
    return Button(hw.pin_in(drivers.pin(comp), pull_up), comp["id"], active_low, names)
