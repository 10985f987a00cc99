"""Register-level BME280 emulator for the virtual kit (see sim_board.i2c_bus).

    dev = Device(comp)    # comp: the board component; values come from sim_board.state

It holds calibration constants in 0x88..0xA1 / 0xE1..0xE7 like a real part and, on a
forced-mode trigger (ctrl_meas mode 01 or 10), puts raw ADC values in 0xF7..0xFE that
compensate to the state file's temperature, humidity and pressure. The raw values are
found by bisection over the ADC codes, since each compensation is monotonic in its raw
value; the emulator uses the datasheet's double-precision formulas (appendix 8.1), so
the driver's integer formulas are checked against an independent implementation.
Raw resolution follows the oversampling (16 + osrs - 1 bits for T and P without the
IIR filter; humidity 16 bits); a measurement that is skipped (osrs 0) reads 0x80000 /
0x8000. "status" bit 3 (measuring) stays set for the typical measurement time. Normal mode (11)
is not emulated: its data registers keep their last values.
Faults: state "chip_id" changes register 0xD0.
"""
import time

from sim_board import state as sim_state
from sim_board.i2c_bus import RegDevice

# Calibration: the values of Bosch's worked example (T, P) and of a typical part (H).
T1, T2, T3 = 27504, 26435, -1000
P1, P2, P3, P4, P5, P6, P7, P8, P9 = 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000
H1, H2, H3, H4, H5, H6 = 75, 370, 0, 313, 50, 30

DEFAULTS = {"temperature": 22.0, "humidity": 45.0, "pressure": 1013.25}


def comp_t(adc_t):
    """(T in C, t_fine) by the datasheet's double formula."""
    v1 = (adc_t / 16384.0 - T1 / 1024.0) * T2
    x = adc_t / 131072.0 - T1 / 8192.0
    v2 = x * x * T3
    return (v1 + v2) / 5120.0, int(v1 + v2)


def comp_p(adc_p, t_fine):
    """Pressure in Pa by the datasheet's double formula."""
    v1 = t_fine / 2.0 - 64000.0
    v2 = v1 * v1 * P6 / 32768.0
    v2 = v2 + v1 * P5 * 2.0
    v2 = v2 / 4.0 + P4 * 65536.0
    v1 = (P3 * v1 * v1 / 524288.0 + P2 * v1) / 524288.0
    v1 = (1.0 + v1 / 32768.0) * P1
    if v1 == 0:
        return 0.0
    p = 1048576.0 - adc_p
    p = (p - v2 / 4096.0) * 6250.0 / v1
    v1 = P9 * p * p / 2147483648.0
    v2 = p * P8 / 32768.0
    return p + (v1 + v2 + P7) / 16.0


def comp_h(adc_h, t_fine):
    """Relative humidity in % by the datasheet's double formula."""
    h = t_fine - 76800.0
    h = (adc_h - (H4 * 64.0 + H5 / 16384.0 * h)) * (
        H2 / 65536.0 * (1.0 + H6 / 67108864.0 * h * (1.0 + H3 / 67108864.0 * h)))
    h = h * (1.0 - H1 * h / 524288.0)
    return min(100.0, max(0.0, h))


def solve(f, target, bits, width):
    """The ``width``-bit ADC code (a multiple of 2**(width - bits)) whose f is nearest
    to target; f is monotonic (either direction)."""
    step = 1 << (width - bits)
    lo, hi = 0, (1 << bits) - 1
    up = f(hi * step) >= f(0)
    while lo < hi:  # smallest k with f(k) on the far side of target
        mid = (lo + hi) // 2
        v = f(mid * step)
        if (v >= target) if up else (v <= target):
            hi = mid
        else:
            lo = mid + 1
    best = lo
    if lo > 0 and abs(f((lo - 1) * step) - target) <= abs(f(lo * step) - target):
        best = lo - 1
    return best * step


def _calib_bytes():
    b = bytearray(26 + 7)
    for i, v in enumerate((T1, T2, T3, P1, P2, P3, P4, P5, P6, P7, P8, P9)):
        b[2 * i] = v & 0xFF
        b[2 * i + 1] = (v >> 8) & 0xFF
    b[25] = H1
    h = memoryview(b)[26:]
    h[0], h[1], h[2] = H2 & 0xFF, (H2 >> 8) & 0xFF, H3
    h[3] = (H4 >> 4) & 0xFF
    h[4] = ((H5 & 0x0F) << 4) | (H4 & 0x0F)
    h[5] = (H5 >> 4) & 0xFF
    h[6] = H6 & 0xFF
    return b


def _times(osrs):
    """Oversampling factor of an osrs_x setting (0: skipped)."""
    return (1 << (min(osrs, 5) - 1)) if osrs else 0


class Device(RegDevice):
    def __init__(self, comp):
        super().__init__(comp)
        cal = _calib_bytes()
        self.regs[0x88:0x88 + 26] = cal[:26]
        self.regs[0xE1:0xE1 + 7] = cal[26:]
        self.regs[0xF7:0xFF] = b"\x80\x00\x00\x80\x00\x00\x80\x00"  # reset values
        self._raw_bytes = None  # data registers for the current state and settings
        self._key = None  # the settings they were made for
        self._busy_until = None
        self._osrs_h = 0  # ctrl_hum as latched by the last ctrl_meas write

    def sync(self):
        cid = sim_state.comp_state(self.comp["id"]).get("chip_id")
        self.regs[0xD0] = 0x60 if cid is None else cid
        self._raw_bytes = None

    def store(self, reg, val):
        if reg == 0xE0:
            if val == 0xB6:  # soft reset: control registers back to 0, measurement aborted
                for r in (0xF2, 0xF4, 0xF5):
                    self.regs[r] = 0
                self._busy_until = None
            return
        if reg in (0xF2, 0xF4, 0xF5):
            self.regs[reg] = val
        if reg == 0xF4:
            self._osrs_h = self.regs[0xF2] & 0x07
            if (val & 0x03) in (1, 2):  # forced mode: measure once, then sleep
                self._measure()
                self.regs[0xF4] = val & 0xFC

    def load(self, reg):
        if reg == 0xF3:
            busy = self._busy_until is not None and \
                time.ticks_diff(self._busy_until, time.ticks_ms()) > 0
            return 0x08 if busy else 0x00
        return self.regs[reg]

    def _measure(self):
        # Called on every forced-mode trigger: allocation-free unless the state or the
        # settings changed since the last measurement.
        ctrl = self.regs[0xF4]
        ot, op, oh = ctrl >> 5, (ctrl >> 2) & 0x07, self._osrs_h
        filt = (self.regs[0xF5] >> 2) & 0x07
        key = ((ot * 8 + op) * 8 + oh) * 8 + filt
        if self._raw_bytes is None or self._key != key:
            self._raw_bytes = self._raw(ot, op, oh, filt)
            self._key = key
        self.regs[0xF7:0xFF] = self._raw_bytes
        # Typical measurement time (datasheet 9.1): 1 + 2*T + 2*P + 0.5 + 2*H + 0.5 ms.
        ms = 2 + 2 * (_times(ot) + _times(op) + _times(oh))
        self._busy_until = time.ticks_add(time.ticks_ms(), ms)

    def _raw(self, osrs_t, osrs_p, osrs_h, filt):
        comp = self.comp
        t = sim_state.value(comp, "temperature", DEFAULTS["temperature"])
        p = sim_state.value(comp, "pressure", DEFAULTS["pressure"]) * 100.0
        h = sim_state.value(comp, "humidity", DEFAULTS["humidity"])

        def bits(o):
            return 20 if filt else 15 + min(o, 5)

        adc_t = solve(lambda r: comp_t(r)[0], t, bits(osrs_t or 5), 20)
        t_fine = comp_t(adc_t)[1]
        if not osrs_t:
            adc_t = 0x80000
        adc_p = solve(lambda r: comp_p(r, t_fine), p, bits(osrs_p), 20) if osrs_p else 0x80000
        adc_h = solve(lambda r: comp_h(r, t_fine), h, 16, 16) if osrs_h else 0x8000
        return bytes((adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4,
                      adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4,
                      adc_h >> 8, adc_h & 0xFF))
