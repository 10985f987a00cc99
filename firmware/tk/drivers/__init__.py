"""Component drivers: one small module per part, opened from board.json's components.

    from tk import drivers
    d = drivers.open_component(comp, hw)   # comp: a dict from board.json; hw: board layer
    d.id                                   # comp["id"]
    d.read()                               # {"temperature": 21.5, ...}
    d.write(True)                          # outputs only (led, neopixel)

``hw`` is the board layer (hal.esp32, or sim_board on the virtual kit): it hands out the hardware handles a
driver needs (``hw.i2c(bus)``, ``hw.pin_in(n)``, ``hw.adc(n)``, ...), so every driver
runs unchanged on an ESP32 and on the virtual kit, where the parts are emulated.

A driver module is imported only when a component uses it (each costs RAM), and each
module has ``create(comp, hw, bus)``: ``bus`` is the component's bus dict (the board's
``buses[comp["bus"]]``) or None for parts that sit on a pin.

read() returns the driver's own dict, updated in place on every call so that a read
allocates nothing: copy it (``dict(d.read())``) to keep a snapshot. Its keys are the
readings the component declares in board.json (all the driver knows, if it declares
none). A failing read raises OSError (bus error, device absent: errno 19 when the
address is not acknowledged) or ComponentError (the device answered with bad data).
Drivers touch the bus first in read(), not when opened, and set the part up again after
a bus error, so a sensor that is unplugged and plugged back works again.
"""

# The drivers that exist; a name outside this tuple is never imported.
_DRIVERS = ("mcu_temp", "button", "led", "neopixel", "adc", "touch",
            "bme280", "sht31", "mpu6886", "axp192")

_buses = None  # board.json's "buses", loaded once when a caller does not pass them


class ComponentError(Exception):
    """The part answered, but not as it should (wrong chip id, bad CRC, bad data)."""


def open_component(comp, hw, buses=None):
    """Open the driver of one component (see the module docstring).

    ``buses`` is the board's "buses" object; without it a component on a named bus
    makes this read board.json once to find the bus.
    """
    name = comp.get("driver")
    if name not in _DRIVERS:
        raise ComponentError("%s: no driver %r" % (comp.get("id"), name))
    mod = __import__("tk.drivers." + name, None, None, ("create",))
    bus = comp.get("bus")
    if isinstance(bus, str):
        bus = _bus(comp, bus, buses)
    return mod.create(comp, hw, bus)


def _bus(comp, name, buses):
    global _buses
    if buses is None:
        if _buses is None:
            from tk import board
            _buses = board.load().get("buses") or {}
        buses = _buses
    b = buses.get(name)
    if not isinstance(b, dict):
        raise ComponentError("%s: bus %r is not defined by the board" % (comp.get("id"), name))
    return b


def readings(comp, supported):
    """The dict a driver's read() fills in: one key (value None until the first read)
    per reading the component declares, each of which the driver must know."""
    declared = comp.get("readings") or supported
    values = {}
    for name in declared:
        if name not in supported:
            raise ComponentError("%s: driver %s has no reading %r (it has %s)"
                                 % (comp.get("id"), comp.get("driver"), name,
                                    ", ".join(supported)))
        values[name] = None
    return values


def pin(comp):
    """The component's GPIO number ("pin")."""
    n = comp.get("pin")
    if not isinstance(n, int):
        raise ComponentError("%s: no \"pin\" number in board.json" % comp.get("id"))
    return n


def address(comp, default):
    """The component's I2C address ("address", decimal in board.json)."""
    a = comp.get("address", default)
    if not isinstance(a, int) or not 0x08 <= a <= 0x77:
        raise ComponentError("%s: bad I2C address %r" % (comp.get("id"), a))
    return a
