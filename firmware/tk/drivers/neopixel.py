"""WS2812 ("NeoPixel") LEDs on one GPIO, all set to one colour: readings "on" (bool)
and "rgb" ([r, g, b]).

    from tk.drivers import neopixel
    n = neopixel.Pixels(hw.neopixel(48, 1), 1, "rgb_led")
    n.write([0, 32, 0])    # green
    n.write(False)         # off; write(True) brings back the last colour
    n.read()               # {"on": False} (or {"rgb": [0, 0, 0]}, as board.json declares)

Board keys: "pin", "count" (LEDs in the chain; default 1). The LEDs are switched off
when the driver is created. write(True) with no colour set yet uses a dim white
(16, 16, 16): at full brightness a 25-LED matrix draws about 1.5 A.
"""
from tk import drivers

_DIM_WHITE = (16, 16, 16)


class Pixels:
    def __init__(self, np, count, cid="neopixel", names=("on", "rgb")):
        self.id = cid
        self._np = np
        self._count = count
        self._last_on = _DIM_WHITE  # colour for write(True)
        self._r = {n: None for n in names}
        self.write(False)

    def write(self, value):
        """True/False, or a colour [r, g, b] with each 0..255."""
        if value is True or value is False or isinstance(value, int):
            rgb = self._last_on if value else (0, 0, 0)
        else:
            if len(value) != 3:
                raise ValueError("colour is [r, g, b], got %r" % (value,))
            rgb = (int(value[0]), int(value[1]), int(value[2]))
            for c in rgb:
                if not 0 <= c <= 255:
                    raise ValueError("colour values are 0..255, got %r" % (value,))
            if rgb != (0, 0, 0):
                self._last_on = rgb
        for i in range(self._count):
            self._np[i] = rgb
        self._np.write()
        r = self._r
        if "on" in r:
            r["on"] = rgb != (0, 0, 0)
        if "rgb" in r:
            r["rgb"] = list(rgb)  # a new list: a snapshot a caller kept stays as it was

    def read(self):
        return self._r


def create(comp, hw, bus):
    names = drivers.readings(comp, ("on", "rgb"))
    count = comp.get("count", 1)
    if not isinstance(count, int) or count < 1:
        raise drivers.ComponentError("%s: bad LED count %r" % (comp["id"], count))
    return Pixels(hw.neopixel(drivers.pin(comp), count), count, comp["id"], names)
