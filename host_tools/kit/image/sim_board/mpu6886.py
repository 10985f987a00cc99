"""MPU-6886 emulator for the virtual kit (see sim_board.i2c_bus).

Registers: WHO_AM_I 0x75 = 0x19 (state "chip_id" changes it), PWR_MGMT_1 0x6B (reset
value 0x41: asleep; writing bit 7 resets every register), GYRO_CONFIG 0x1B and
ACCEL_CONFIG 0x1C (full scale in bits 4:3), data 0x3B..0x48 (big-endian signed words,
accel, temperature, gyro) made from the state file's values at the configured scales.
While asleep the data registers keep their last values (zero after power-up).
"""
from sim_board import state as sim_state
from sim_board.i2c_bus import RegDevice

_ACCEL = ("accel_x", "accel_y", "accel_z")
_GYRO = ("gyro_x", "gyro_y", "gyro_z")
_DEFAULTS = {"accel_x": 0.0, "accel_y": 0.0, "accel_z": 1.0, "gyro_x": 0.0, "gyro_y": 0.0,
             "gyro_z": 0.0, "temperature": 30.0}
_GYRO_LSB = (131.0, 65.5, 32.8, 16.4)


def _word(v):
    v = max(-32768, min(32767, int(round(v))))
    return v & 0xFFFF


class Device(RegDevice):
    def __init__(self, comp):
        super().__init__(comp)
        self._reset()

    def _reset(self):
        for i in range(256):
            self.regs[i] = 0
        self.regs[0x6B] = 0x41
        self._who = 0x19

    def sync(self):
        cid = sim_state.comp_state(self.comp["id"]).get("chip_id")
        self._who = 0x19 if cid is None else cid
        self._update()

    def load(self, reg):
        return self._who if reg == 0x75 else self.regs[reg]

    def store(self, reg, val):
        if reg == 0x6B and val & 0x80:
            who = self._who
            self._reset()
            self._who = who
            return
        self.regs[reg] = val
        if reg in (0x1B, 0x1C, 0x6B):
            self._update()

    def _update(self):
        if self.regs[0x6B] & 0x40:  # asleep: no new samples
            return
        comp = self.comp
        accel_lsb = 16384 >> ((self.regs[0x1C] >> 3) & 3)
        gyro_lsb = _GYRO_LSB[(self.regs[0x1B] >> 3) & 3]
        words = [sim_state.value(comp, n, _DEFAULTS[n]) * accel_lsb for n in _ACCEL]
        words.append((sim_state.value(comp, "temperature", _DEFAULTS["temperature"]) - 25)
                     * 326.8)
        words += [sim_state.value(comp, n, _DEFAULTS[n]) * gyro_lsb for n in _GYRO]
        for i, v in enumerate(words):
            w = _word(v)
            self.regs[0x3B + 2 * i] = w >> 8
            self.regs[0x3C + 2 * i] = w & 0xFF
