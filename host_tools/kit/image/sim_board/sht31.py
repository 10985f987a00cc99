"""SHT31 (SHT3x-DIS) emulator for the virtual kit (see sim_board.i2c_bus).

A command device, not a register file: a write is a 16-bit command. A single-shot
measurement command (0x2400/0B/16, 0x2C06/0D/10) makes the result ready after the
typical measurement time; until then, and when no result is waiting, a read is NACKed
(OSError(19)), as the sensor does with clock stretching disabled. The result is six
bytes: temperature word, CRC, humidity word, CRC (CRC-8, poly 0x31, init 0xFF).
Soft reset (0x30A2) and status (0xF32D) are understood; other commands are ignored.
Faults: state "bad_crc": true makes the temperature CRC wrong.
"""
import time

from micropython import const

from sim_board import state as sim_state

_ENODEV = const(19)
_MEASURE = {0x2400: 13, 0x240B: 5, 0x2416: 3, 0x2C06: 13, 0x2C0D: 5, 0x2C10: 3}  # ms typ.


def crc8(data):
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _word(value, scale, offset):
    return max(0, min(65535, int(round((value + offset) * 65535 / scale))))


class Device:
    def __init__(self, comp):
        self.comp = comp
        self._out = None  # bytes the next read returns
        self._ready_at = None

    def sync(self):
        pass

    def write(self, buf):
        if len(buf) < 2:
            return
        cmd = (buf[0] << 8) | buf[1]
        ms = _MEASURE.get(cmd)
        if ms is not None:
            self._out = self._result()
            self._ready_at = time.ticks_add(time.ticks_ms(), ms)
        elif cmd == 0x30A2:  # soft reset
            self._out = self._ready_at = None
        elif cmd == 0xF32D:  # status register: "reset detected" bit set
            self._out = bytes((0x00, 0x10, crc8(b"\x00\x10")))
            self._ready_at = None

    def write_reg(self, reg, buf):
        self.write(bytes((reg,)) + bytes(buf))

    def read(self, buf):
        if self._out is None or (self._ready_at is not None and
                                 time.ticks_diff(self._ready_at, time.ticks_ms()) > 0):
            raise OSError(_ENODEV)
        for i in range(min(len(buf), len(self._out))):
            buf[i] = self._out[i]
        self._out = self._ready_at = None

    def read_reg(self, reg, buf):
        raise OSError(_ENODEV)  # the SHT3x has no register reads

    def _result(self):
        comp = self.comp
        st = _word(sim_state.value(comp, "temperature", 22.0), 175.0, 45.0)
        srh = _word(sim_state.value(comp, "humidity", 45.0), 100.0, 0.0)
        t = bytes((st >> 8, st & 0xFF))
        h = bytes((srh >> 8, srh & 0xFF))
        ct, ch = crc8(t), crc8(h)
        if sim_state.comp_state(comp["id"]).get("bad_crc"):
            ct ^= 0xFF
        return t + bytes((ct,)) + h + bytes((ch,))
