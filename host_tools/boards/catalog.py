"""The names a board file may use: component kinds, drivers, units and bus kinds.

This is the one place to add a driver: a name here must match a module in
``firmware/tk/drivers/``.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = frozenset(
    {"mcu_temperature", "button", "led", "adc", "touch", "i2c_sensor", "imu", "battery", "rtc"}
)

# Kinds that drive their pins: an input-only pin is an error for them.
OUTPUT_KINDS = frozenset({"led"})


@dataclass(frozen=True)
class Driver:
    """What a driver needs.

    Attributes:
        kinds: the component kinds it can serve.
        io: ``"pin"`` (a ``pin`` or ``pins``), ``"i2c"`` (a ``bus`` and an ``address``)
            or ``"none"`` (inside the chip).
    """

    kinds: frozenset[str]
    io: str


DRIVERS: dict[str, Driver] = {
    "mcu_temp": Driver(frozenset({"mcu_temperature"}), "none"),
    "button": Driver(frozenset({"button"}), "pin"),
    "led": Driver(frozenset({"led"}), "pin"),
    "neopixel": Driver(frozenset({"led"}), "pin"),
    "adc": Driver(frozenset({"adc"}), "pin"),
    "touch": Driver(frozenset({"touch"}), "pin"),
    "bme280": Driver(frozenset({"i2c_sensor"}), "i2c"),
    "sht31": Driver(frozenset({"i2c_sensor"}), "i2c"),
    "mpu6886": Driver(frozenset({"imu"}), "i2c"),
    "axp192": Driver(frozenset({"battery"}), "i2c"),
    "bm8563": Driver(frozenset({"rtc"}), "i2c"),
}
KNOWN_DRIVERS = frozenset(DRIVERS)

# Units of readings. Numeric units need a [min, max] range; the others do not.
NUMERIC_UNITS = frozenset(
    {"C", "%RH", "hPa", "g", "dps", "V", "mV", "mA", "%", "raw", "s", "lx", "ppm"}
)
OTHER_UNITS = frozenset({"bool", "text"})
UNITS = NUMERIC_UNITS | OTHER_UNITS

# Bus kinds, their pin fields, and the fields that must drive (open-drain counts).
BUS_PINS: dict[str, tuple[str, ...]] = {
    "i2c": ("sda", "scl"),
    "spi": ("sck", "mosi", "miso", "cs"),
    "uart": ("tx", "rx"),
}
BUS_REQUIRED: dict[str, tuple[str, ...]] = {"i2c": ("sda", "scl"), "spi": ("sck",), "uart": ()}
BUS_OUTPUTS = frozenset({"sda", "scl", "sck", "mosi", "cs", "tx"})

I2C_ADDRESS_MIN = 0x08
I2C_ADDRESS_MAX = 0x77
