"""Peripherals of the virtual kit: the same functions as hal.esp32_hw, emulated, so the
real drivers (tk.drivers) run unchanged on the MicroPython unix port.

    from sim_board import hw
    bus = hw.i2c({"kind": "i2c", "id": 0, "sda": 21, "scl": 22, "freq": 400000})
    hw.pin_in(0).value()        # 0 while the state file says the button is pressed
    hw.adc(34).read_uv()        # 1200000 for {"adc0": {"voltage": 1.2}}
    hw.mcu_temperature()        # 40.0 unless the state file says otherwise
    hw.output(2)                # tests: the level last written to pin 2 (or None)

What each part senses comes from the state file ($TK_SIM_HW, see sim_board.state), keyed
by the component id of board.json ($TK_SIM_BOARD, default ./board.json); the board maps
pins and bus addresses to components. I2C devices are emulated register by register
(sim_board.i2c_bus and sim_board.<driver>). Outputs (LED pins, NeoPixels) are kept in memory.
Defaults when the state file says nothing: button not pressed, ADC 1.0 V, touch 600,
MCU 40.0 C; the sensors' defaults are in their emulators (22.0 C, 45 %RH, 1013.25 hPa,
accel (0, 0, 1) g).
"""
from sim_board import state as sim_state

_EMPTY = {}
_buses = {}  # bus id -> SimI2C
_outputs = {}  # pin -> SimPinOut
_pixels = {}  # pin -> SimNeoPixel
_mcu = None  # the board's mcu_temp component (looked up once)


def reload():
    """Read the state file now, without waiting for the next poll."""
    sim_state.reload()


def i2c(bus):
    n = bus["id"]
    b = _buses.get(n)
    if b is None:
        from sim_board.i2c_bus import SimI2C
        b = SimI2C(n)
        _buses[n] = b
    return b


class SimPinIn:
    """An input pin: a button component's level, else the pull's level."""

    def __init__(self, n, pull_up=True):
        self.n = n
        self._idle = 1 if pull_up else 0
        c = sim_state.comp_at_pin(n)
        self._comp = c if c is not None and c.get("driver") == "button" else None

    def value(self):
        c = self._comp
        sim_state.poll()
        if c is None or not sim_state.present(c):
            return self._idle
        pressed = sim_state.comp_state(c["id"]).get("pressed")
        if c.get("active_low"):
            return 0 if pressed else 1
        return 1 if pressed else 0


class SimPinOut:
    def __init__(self, n):
        self.n = n
        self.level = None  # never driven

    def value(self, v=None):
        if v is None:
            return self.level or 0
        self.level = 1 if v else 0


class SimADC:
    def __init__(self, n, atten=None):
        self.n = n
        self.atten = atten
        self._comp = sim_state.comp_at_pin(n) or {"id": "adc%d" % n}

    def read_uv(self):
        sim_state.poll()
        return int(sim_state.value(self._comp, "voltage", 1.0) * 1000000)


class SimTouch:
    def __init__(self, n):
        self.n = n
        self._comp = sim_state.comp_at_pin(n) or {"id": "touch%d" % n}

    def read(self):
        sim_state.poll()
        return int(sim_state.value(self._comp, "value", 600))


class SimNeoPixel:
    """neopixel.NeoPixel: np[i] = (r, g, b), np.write(). ``shown`` is what the LEDs
    show (set by write()); ``writes`` counts the writes."""

    def __init__(self, n, count):
        self.pin = n
        self.n = count
        self.buf = [(0, 0, 0)] * count
        self.shown = list(self.buf)
        self.writes = 0

    def __len__(self):
        return self.n

    def __setitem__(self, i, rgb):
        self.buf[i] = (int(rgb[0]), int(rgb[1]), int(rgb[2]))

    def __getitem__(self, i):
        return self.buf[i]

    def fill(self, rgb):
        for i in range(self.n):
            self[i] = rgb

    def write(self):
        self.shown = list(self.buf)
        self.writes += 1


def pin_in(n, pull_up=True):
    return SimPinIn(n, pull_up)


def pin_out(n):
    p = _outputs.get(n)
    if p is None:
        p = _outputs[n] = SimPinOut(n)
    return p


def output(n):
    """The level last written to output pin ``n``, or None if it was never driven."""
    p = _outputs.get(n)
    return None if p is None else p.level


def adc(n, atten=None):
    return SimADC(n, atten)


def touch(n):
    return SimTouch(n)


def mcu_temperature():
    global _mcu
    if _mcu is None:
        _mcu = sim_state.comp_by_driver("mcu_temp") or {"id": "mcu_temp"}
    sim_state.poll()
    return sim_state.value(_mcu, "temperature", 40.0)


def mcu_temperature_raw():
    # As the original ESP32's sensor: an unscaled value; 128 (a stuck sensor) is an error.
    global _mcu
    if _mcu is None:
        _mcu = sim_state.comp_by_driver("mcu_temp") or {"id": "mcu_temp"}
    sim_state.poll()
    raw = int(sim_state.value(_mcu, "raw", 110))
    if raw == 128:
        raise OSError(5)  # EIO
    return raw


def neopixel(n, count):
    p = _pixels.get(n)
    if p is None or p.n != count:
        p = _pixels[n] = SimNeoPixel(n, count)
    return p


def pixels(n):
    """The SimNeoPixel on pin ``n`` (tests), or None."""
    return _pixels.get(n)
