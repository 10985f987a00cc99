"""Pin rules: every GPIO a component or bus uses is checked against its chip.

Errors: a pin the chip lacks, a flash/PSRAM pin, an output on an input-only pin, an ADC
or touch component on a pin without that function, an internal pull on a pin without
pull resistors, and one pin used by two owners (components on a bus share the bus's pins
through the bus, which is not a clash). Warnings: strapping pins (unless the component or
bus says ``"ignore_strapping_warning": true``) and ADC2 pins (shared with Wi-Fi).
"""

from __future__ import annotations

from dataclasses import dataclass

from host_tools.boards.catalog import BUS_OUTPUTS, BUS_PINS, OUTPUT_KINDS
from host_tools.boards.chips import Chip, span_text
from host_tools.boards.issues import Issues


@dataclass(frozen=True)
class PinUse:
    """One GPIO used by one component or bus.

    Attributes:
        gpio: the GPIO number.
        owner: ``component 'led'`` or ``bus 'i2c0'``.
        field: ``""`` for a component's ``pin``, ``pins.<name>`` or a bus field (``sda``).
        output: the pin must drive.
        spec: the component or bus object it came from.
    """

    gpio: int
    owner: str
    field: str
    output: bool
    spec: dict

    def label(self) -> str:
        """How the message names it: ``GPIO34`` or ``sda: GPIO6``."""
        return f"{self.field}: GPIO{self.gpio}" if self.field else f"GPIO{self.gpio}"


def _is_gpio(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def pin_uses(buses: dict, components: list) -> list[PinUse]:
    """Every integer pin field of the (already shape-checked) buses and components."""
    uses: list[PinUse] = []
    for bid, bus in buses.items():
        if not isinstance(bus, dict):
            continue
        kind = bus.get("kind")
        for f in BUS_PINS.get(kind, ()) if isinstance(kind, str) else ():
            if _is_gpio(bus.get(f)):
                uses.append(PinUse(bus[f], f"bus '{bid}'", f, f in BUS_OUTPUTS, bus))
    for comp in components:
        if not isinstance(comp, dict):
            continue
        owner = f"component '{comp.get('id')}'"
        out = isinstance(comp.get("kind"), str) and comp["kind"] in OUTPUT_KINDS
        if _is_gpio(comp.get("pin")):
            uses.append(PinUse(comp["pin"], owner, "", out, comp))
        pins = comp.get("pins")
        if isinstance(pins, dict):
            for name, gpio in pins.items():
                if _is_gpio(gpio):
                    uses.append(PinUse(gpio, owner, f"pins.{name}", out, comp))
    return uses


def check_pins(uses: list[PinUse], chip: Chip, reserved: dict[int, str], issues: Issues) -> None:
    """Chip rules for each use, then clashes between owners."""
    for use in uses:
        _check_use(use, chip, reserved, issues)
    first: dict[int, PinUse] = {}
    for use in uses:
        prev = first.setdefault(use.gpio, use)
        if prev.owner != use.owner:
            where = f" ({prev.field})" if prev.field else ""
            issues.error(use.owner, f"{use.label()} is already used by {prev.owner}{where}")


def _check_use(use: PinUse, chip: Chip, reserved: dict[int, str], issues: Issues) -> None:
    g, name, spec = use.gpio, chip.name, use.spec
    if g not in chip.valid:
        issues.error(use.owner, f"{use.label()} does not exist on {name} ({span_text(chip.valid)})")
        return
    if g in reserved:
        issues.error(use.owner, f"{use.label()} is {reserved[g]}; it cannot be used")
        return
    if use.output and g in chip.input_only:
        if use.owner.startswith("bus "):
            need = use.field
        else:
            kind = str(spec.get("kind"))
            an = kind[:1] in "aeiou" or kind == "led"  # "an led", as it is read out
            need = f"{'an' if an else 'a'} {kind}"
        issues.error(
            use.owner, f"{use.label()} is input-only on {name}; {need} needs an output pin"
        )
    if spec.get("pull") in ("up", "down") and g in chip.input_only:
        issues.error(
            use.owner,
            f"{use.label()} has no internal pull resistors on {name}; "
            f'use an external pull-{spec["pull"]} and drop "pull"',
        )
    if g in chip.strapping and spec.get("ignore_strapping_warning") is not True:
        issues.warning(
            use.owner,
            f"{use.label()} is a strapping pin on {name} ({span_text(chip.strapping)}); it must "
            'sit at its boot level during reset (set "ignore_strapping_warning": true when the '
            "board is designed for it)",
        )
    if use.field == "" and spec.get("kind") == "adc":
        if g not in chip.adc1 | chip.adc2:
            issues.error(
                use.owner,
                f"{use.label()} has no ADC channel on {name}; use an ADC1 pin "
                f"({span_text(chip.adc1)})",
            )
        elif g in chip.adc2:
            issues.warning(
                use.owner,
                f"{use.label()} is on ADC2, which Wi-Fi shares on {name}; readings can fail while "
                f"Wi-Fi is on (ADC1: {span_text(chip.adc1)})",
            )
    if use.field == "" and spec.get("kind") == "touch" and g not in chip.touch:
        pads = f"touch pins: {span_text(chip.touch)}" if chip.touch else "it has no touch pins"
        issues.error(use.owner, f"{use.label()} is not a touch pin on {name} ({pads})")
