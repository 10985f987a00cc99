"""What each chip allows on each GPIO: the data behind ``thingkit boards check``.

Sources (checked by hand, see the boards/ commit for the list): the ESP-IDF "GPIO & RTC
GPIO" pages and datasheets for ESP32, ESP32-S3 and ESP32-C3 (pin tables, strapping pins,
SPI0/1 flash and PSRAM pins, ADC channels, touch channels).

Usage::

    chip = CHIPS["esp32"]
    chip.reserved(psram=True, octal_spi=False)[16]  # -> "a PSRAM pin on esp32 with PSRAM ..."
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


def _pins(*spans: int | tuple[int, int]) -> frozenset[int]:
    """Pins from single numbers and inclusive (first, last) spans."""
    out: set[int] = set()
    for s in spans:
        if isinstance(s, tuple):
            out.update(range(s[0], s[1] + 1))
        else:
            out.add(s)
    return frozenset(out)


def span_text(pins: frozenset[int]) -> str:
    """``GPIO6-11, 16-17`` style text for a pin set."""
    runs: list[list[int]] = []
    for p in sorted(pins):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    parts = [f"{a}-{b}" if a != b else f"{a}" for a, b in runs]
    return "GPIO" + ", ".join(parts)


@dataclass(frozen=True)
class Chip:
    """The pin rules of one chip family.

    Attributes:
        name: chip name as written in board files.
        valid: GPIO numbers that exist on the chip.
        flash: pins wired to the SPI flash (any use is an error).
        flash_what: how the flash pins are described in messages.
        psram: pins that PSRAM takes when the board has PSRAM.
        octal: extra pins taken by octal flash/PSRAM (board field ``octal_spi``).
        input_only: pins with no output driver (and no internal pull resistors).
        strapping: pins sampled at reset (a warning).
        adc1: pins on ADC1.
        adc2: pins on ADC2 (shared with Wi-Fi: a warning).
        touch: capacitive touch pins.
        i2c_ids: hardware I2C controller ids.
    """

    name: str
    valid: frozenset[int]
    flash: frozenset[int]
    flash_what: str
    psram: frozenset[int] = frozenset()
    octal: frozenset[int] = frozenset()
    input_only: frozenset[int] = frozenset()
    strapping: frozenset[int] = frozenset()
    adc1: frozenset[int] = frozenset()
    adc2: frozenset[int] = frozenset()
    touch: frozenset[int] = frozenset()
    i2c_ids: frozenset[int] = field(default=frozenset({0}))

    def reserved(self, psram: bool, octal_spi: bool) -> dict[int, str]:
        """Pins no component or bus may use on a board with this memory, and why."""
        out = {p: f"{self.flash_what} on {self.name} ({span_text(self.flash)})" for p in self.flash}
        if psram:
            for p in self.psram:
                out[p] = f"a PSRAM pin on {self.name} with PSRAM ({span_text(self.psram)})"
        if octal_spi:
            for p in self.octal:
                out[p] = (
                    f"an octal flash/PSRAM pin on {self.name} with octal_spi "
                    f"({span_text(self.octal)})"
                )
        return out


ESP32 = Chip(
    name="esp32",
    valid=_pins((0, 19), (21, 23), (25, 27), (32, 39)),
    flash=_pins((6, 11)),
    flash_what="an SPI flash pin",
    psram=_pins(16, 17),
    input_only=_pins((34, 39)),
    strapping=_pins(0, 2, 5, 12, 15),
    adc1=_pins((32, 39)),
    adc2=_pins(0, 2, 4, (12, 15), (25, 27)),
    touch=_pins(0, 2, 4, (12, 15), 27, 32, 33),
    i2c_ids=frozenset({0, 1}),
)

ESP32S3 = Chip(
    name="esp32s3",
    valid=_pins((0, 21), (26, 48)),
    flash=_pins((26, 32)),
    flash_what="an SPI flash/PSRAM pin",
    octal=_pins((33, 37)),
    strapping=_pins(0, 3, 45, 46),
    adc1=_pins((1, 10)),
    adc2=_pins((11, 20)),
    touch=_pins((1, 14)),
    i2c_ids=frozenset({0, 1}),
)

ESP32C3 = Chip(
    name="esp32c3",
    valid=_pins((0, 21)),
    flash=_pins((12, 17)),
    flash_what="an SPI flash pin",
    strapping=_pins(2, 8, 9),
    adc1=_pins((0, 4)),
    adc2=_pins(5),
)

# The virtual kit follows the ESP32 rules, so a sim board is also a plausible real board.
SIM = replace(ESP32, name="sim")

CHIPS: dict[str, Chip] = {c.name: c for c in (ESP32, ESP32S3, ESP32C3, SIM)}
