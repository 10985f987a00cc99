"""Peripherals of an ESP32-family kit for the component drivers (tk.drivers): thin
wrappers over machine, esp32 and neopixel. The virtual kit's sim_board.hw has the same
functions, emulated.

    from hal import esp32_hw as hw
    bus = hw.i2c({"kind": "i2c", "id": 0, "sda": 21, "scl": 22, "freq": 400000})
    hw.pin_in(0).value()     # machine.Pin(0, Pin.IN, Pin.PULL_UP)
    hw.adc(34).read_uv()     # machine.ADC(Pin(34), atten=ADC.ATTN_11DB)
    hw.touch(4).read()       # machine.TouchPad(Pin(4))
    hw.mcu_temperature()     # degrees C
    hw.neopixel(48, 1)       # neopixel.NeoPixel(Pin(48, Pin.OUT), 1)

One machine.I2C is made per bus id and kept: drivers of several parts on one bus share
it. MCU temperature: esp32.mcu_temperature() (Celsius) on the ESP32-S2, -S3, -C3 and
-C6; the original ESP32 has only esp32.raw_temperature() (Fahrenheit), converted here;
its reading 128 means "no reading" (as ESPHome treats it) and raises OSError(EIO).
"""
import errno

import esp32
import machine

_buses = {}  # bus id -> machine.I2C

# board.json "atten" -> machine.ADC attenuation (input range grows with it).
_ATTEN = {"0dB": "ATTN_0DB", "2.5dB": "ATTN_2_5DB", "6dB": "ATTN_6DB", "11dB": "ATTN_11DB"}


def i2c(bus):
    n = bus["id"]
    b = _buses.get(n)
    if b is None:
        b = machine.I2C(n, scl=machine.Pin(bus["scl"]), sda=machine.Pin(bus["sda"]),
                        freq=bus.get("freq", 400000))
        _buses[n] = b
    return b


def pin_in(n, pull_up=True):
    return machine.Pin(n, machine.Pin.IN, machine.Pin.PULL_UP if pull_up else None)


def pin_out(n):
    return machine.Pin(n, machine.Pin.OUT)


def adc(n, atten="11dB"):
    name = _ATTEN.get(atten or "11dB")
    if name is None:
        raise ValueError("ADC attenuation %r: use one of %s" % (atten, ", ".join(_ATTEN)))
    return machine.ADC(machine.Pin(n), atten=getattr(machine.ADC, name))


def touch(n):
    return machine.TouchPad(machine.Pin(n))


def mcu_temperature():
    """Degrees C, on chips with a calibrated sensor (S2, S3, C3, C6)."""
    f = getattr(esp32, "mcu_temperature", None)
    if f is None:
        # The original ESP32: its board definition declares the "raw" reading instead.
        raise OSError(errno.ENODEV)
    return f()


def mcu_temperature_raw():
    """The original ESP32's uncalibrated sensor value (no unit). A constant 128 is what
    many chips read when the sensor does not work: an error, not a reading."""
    f = getattr(esp32, "raw_temperature", None)
    if f is None:
        raise OSError(errno.ENODEV)
    raw = f()
    if raw == 128:
        raise OSError(errno.EIO)
    return raw


def neopixel(n, count):
    import neopixel as np_mod  # frozen in the ESP32 firmware; imported only when used

    return np_mod.NeoPixel(machine.Pin(n, machine.Pin.OUT), count)
