"""Sensirion SHT31 (SHT3x-DIS) over I2C: temperature (C), humidity (%RH).

    from tk.drivers import sht31
    s = sht31.SHT31(hw.i2c(bus), 0x44, "sht")
    s.read()   # {"temperature": 22.4, "humidity": 41.9}

Single-shot measurement, high repeatability, clock stretching disabled: command 0x2400
(SHT3x-DIS datasheet, table 9). The sensor NACKs reads until the measurement is done
(15 ms max at high repeatability), so read() waits 16 ms, then reads six bytes:
temperature MSB, LSB, CRC, humidity MSB, LSB, CRC. Each CRC is CRC-8, polynomial 0x31,
initial value 0xFF, no reflection, no final XOR (CRC(0xBEEF) = 0x92, datasheet 4.12);
a mismatch raises ComponentError. Conversion (datasheet 4.13):
    T = -45 + 175 * S_T / (2**16 - 1)        RH = 100 * S_RH / (2**16 - 1)
The first read (and the first after a bus error) sends a soft reset (0x30A2) first.
Addresses: 0x44 (ADDR pin low, default) or 0x45.
"""
import time

from micropython import const

from tk import drivers

_WAIT_MS = const(16)  # high repeatability: 15 ms max
_RESET_MS = const(2)  # soft reset: 1.5 ms max


def crc8(buf, i, n=2):
    """CRC-8 of buf[i:i+n] as the SHT3x computes it (allocation-free)."""
    crc = 0xFF
    for j in range(i, i + n):
        crc ^= buf[j]
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class SHT31:
    def __init__(self, i2c, addr=0x44, cid="sht31", names=("temperature", "humidity")):
        self.id = cid
        self._i2c = i2c
        self._addr = addr
        self._measure = b"\x24\x00"  # single shot, high repeatability, no stretching
        self._reset = b"\x30\xa2"
        self._buf = bytearray(6)
        self._ready = False
        self._r = {n: None for n in names}
        self._st = self._srh = None  # last raw words

    def read(self):
        i2c, b = self._i2c, self._buf
        try:
            if not self._ready:
                i2c.writeto(self._addr, self._reset)
                time.sleep_ms(_RESET_MS)
                self._ready = True
            i2c.writeto(self._addr, self._measure)
            time.sleep_ms(_WAIT_MS)
            i2c.readfrom_into(self._addr, b)
        except OSError:
            self._ready = False
            raise
        if crc8(b, 0) != b[2] or crc8(b, 3) != b[5]:
            raise drivers.ComponentError("%s: CRC mismatch in %02x%02x%02x %02x%02x%02x"
                                         % (self.id, b[0], b[1], b[2], b[3], b[4], b[5]))
        st = (b[0] << 8) | b[1]
        srh = (b[3] << 8) | b[4]
        r = self._r
        if st != self._st:
            self._st = st
            if "temperature" in r:
                r["temperature"] = -45 + 175 * st / 65535
        if srh != self._srh:
            self._srh = srh
            if "humidity" in r:
                r["humidity"] = 100 * srh / 65535
        return r


def create(comp, hw, bus):
    names = drivers.readings(comp, ("temperature", "humidity"))
    return SHT31(hw.i2c(bus), drivers.address(comp, 0x44), comp["id"], names)
