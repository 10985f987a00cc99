"""Validate a board file: its shape, its components and readings, then the chip rules.

Usage::

    issues = check_file(Path("boards/esp32-devkitc.json"))
    for i in issues.errors:
        print(i)   # boards/x.json: component 'led': GPIO34 is input-only on esp32; ...
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from host_tools.boards import catalog
from host_tools.boards.chips import CHIPS, Chip
from host_tools.boards.issues import Issues
from host_tools.boards.partitions import (
    check_filesystem,
    check_partitions,
    flash_bytes,
    parse_int,
    read_partitions,
)
from host_tools.boards.pins import check_pins, pin_uses
from host_tools.boards.stock import check_image
from host_tools.paths import REPO

REQUIRED = ("id", "name", "chip", "flash_size", "psram", "partitions", "filesystem", "components")
OPTIONAL = ("url_key", "notes", "buses", "octal_spi", "reserved_pins", "image")
BOARD_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
COMPONENT_ID = re.compile(r"[a-z0-9_]{1,32}")
BUS_ID = re.compile(r"[a-z0-9_]{1,32}")


def shown(path: Path) -> str:
    """``boards/x.json`` for files in the repository, the path as given otherwise."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def check_file(path: Path) -> Issues:
    """Read and check one board file."""
    issues = Issues(shown(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        issues.error("", "no such file")
        return issues
    except (OSError, UnicodeDecodeError) as exc:
        issues.error("", f"cannot read: {exc}")
        return issues
    except json.JSONDecodeError as exc:
        issues.error("", f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}")
        return issues
    return check_data(data, issues, stem=path.stem)


def check_data(data: object, issues: Issues, stem: str | None = None) -> Issues:
    """Check a parsed board; ``stem`` is the file name the id must match."""
    if not isinstance(data, dict):
        issues.error("", "the file must hold one JSON object")
        return issues
    for key in REQUIRED:
        if key not in data:
            issues.error("", f"missing field '{key}'")
    for key in data:
        if key not in REQUIRED and key not in OPTIONAL:
            issues.warning("", f"unknown field '{key}' (ignored)")
    if any(i.level == "error" for i in issues):
        return issues
    _check_header(data, issues, stem)
    parts = []
    image = data.get("image")
    needs_ota = isinstance(image, dict) and image.get("variant") == "ota"
    if isinstance(data["partitions"], list) and data["partitions"]:
        parts = read_partitions(data["partitions"], issues)
        flash = flash_bytes(data["flash_size"])
        check_partitions(parts, flash, str(data["flash_size"]), issues, require_ota=needs_ota)
    else:
        issues.error("", "field 'partitions' must be a non-empty list")
    before = len(issues.errors)
    runtime = check_image(data, parts, issues) if "image" in data else None
    image_failed = len(issues.errors) > before
    check_filesystem(data["filesystem"], parts, issues, runtime, image_failed)
    buses = data.get("buses", {})
    if not isinstance(buses, dict):
        issues.error("", "field 'buses' must be an object of named buses")
        buses = {}
    chip = _chip(data)
    _check_buses(buses, chip, issues)
    comps = data["components"]
    if not isinstance(comps, list):
        issues.error("", "field 'components' must be a list")
        comps = []
    _check_components(comps, buses, issues)
    _check_mcu_temperature(data.get("chip"), comps, issues)
    if chip is not None:
        reserved = chip.reserved(data["psram"] is True, data.get("octal_spi") is True)
        extra = data.get("reserved_pins", [])
        for g in extra if isinstance(extra, list) else []:
            reserved.setdefault(g, "reserved on this board (reserved_pins)")
        check_pins(pin_uses(buses, comps), chip, reserved, issues)
    return issues


def _check_header(data: dict, issues: Issues, stem: str | None) -> None:
    bid = data["id"]
    if not isinstance(bid, str) or not BOARD_ID.fullmatch(bid):
        issues.error("", f"id {bid!r} must be lower-case letters, digits and '-'")
    elif stem is not None and bid != stem:
        issues.error("", f"id '{bid}' does not match the file name ({stem}.json)")
    if not isinstance(data["name"], str) or not data["name"].strip():
        issues.error("", "field 'name' must be a non-empty string")
    chip = _chip(data)
    if chip is None:
        issues.error("", f"chip {data['chip']!r} must be one of {', '.join(CHIPS)}")
    if flash_bytes(data["flash_size"]) is None:
        issues.error("", f'flash_size {data["flash_size"]!r} must look like "4MB"')
    for key in ("psram", "octal_spi"):
        if key in data and not isinstance(data[key], bool):
            issues.error("", f"field '{key}' must be true or false")
    if data.get("octal_spi") is True and chip is not None and not chip.octal:
        issues.warning("", f"octal_spi has no effect on {chip.name}")
    for key in ("url_key", "notes"):
        if key in data and not isinstance(data[key], str):
            issues.error("", f"field '{key}' must be a string")
    rp = data.get("reserved_pins", [])
    if not isinstance(rp, list) or not all(_is_int(g) for g in rp):
        issues.error("", "field 'reserved_pins' must be a list of GPIO numbers")


def _chip(data: dict) -> Chip | None:
    return CHIPS.get(data["chip"]) if isinstance(data["chip"], str) else None


def _text(v: object) -> str | None:
    """The value if it is a string (so set lookups never meet an unhashable list)."""
    return v if isinstance(v, str) else None


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_buses(buses: dict, chip: Chip | None, issues: Issues) -> None:
    seen: dict[tuple, str] = {}
    for bid, bus in buses.items():
        where = f"bus '{bid}'"
        if not BUS_ID.fullmatch(bid):
            issues.error(where, "bus names are lower-case letters, digits and '_'")
        if not isinstance(bus, dict):
            issues.error(where, "must be an object")
            continue
        kind = bus.get("kind")
        if not isinstance(kind, str) or kind not in catalog.BUS_PINS:
            issues.error(where, f"kind {kind!r} must be one of {', '.join(catalog.BUS_PINS)}")
            continue
        if not _is_int(bus.get("id")):
            issues.error(where, "needs a hardware controller 'id' (a number)")
        else:
            key = (kind, bus["id"])
            if key in seen:
                issues.error(
                    where, f"{kind} controller {bus['id']} is already used by bus '{seen[key]}'"
                )
            seen[key] = bid
            if kind == "i2c" and chip is not None and bus["id"] not in chip.i2c_ids:
                ids = ", ".join(str(i) for i in sorted(chip.i2c_ids))
                issues.error(where, f"{chip.name} has no I2C controller {bus['id']} (ids: {ids})")
        for f in catalog.BUS_REQUIRED[kind]:
            if f not in bus:
                issues.error(where, f"missing pin field '{f}'")
        for f in catalog.BUS_PINS[kind]:
            if f in bus and not _is_int(bus[f]):
                issues.error(where, f"{f} must be a GPIO number")
        if "freq" in bus and (not _is_int(bus["freq"]) or bus["freq"] <= 0):
            issues.error(where, "freq must be a positive number (Hz)")


def _check_mcu_temperature(chip: object, comps: list, issues: Issues) -> None:
    """The original ESP32 has only an uncalibrated raw sensor (esp32.raw_temperature(),
    "doesn't represent any particular unit"): its mcu_temp declares ``raw``, never a
    temperature in degrees. The S2, S3, C3 and C6 read degrees (esp32.mcu_temperature())."""
    for comp in comps:
        if not isinstance(comp, dict) or comp.get("driver") != "mcu_temp":
            continue
        readings = comp.get("readings") if isinstance(comp.get("readings"), dict) else {}
        where = f"component '{comp.get('id')}'"
        if chip == "esp32" and "temperature" in readings:
            issues.error(
                where,
                "the original ESP32 has no calibrated temperature sensor: declare the reading "
                "'raw' (esp32.raw_temperature(), no unit)",
            )


def _check_components(comps: list, buses: dict, issues: Issues) -> None:
    ids: set[str] = set()
    addresses: dict[tuple[str, int], str] = {}
    for i, comp in enumerate(comps):
        if not isinstance(comp, dict):
            issues.error(f"components[{i}]", "must be an object")
            continue
        cid = comp.get("id")
        if not isinstance(cid, str) or not COMPONENT_ID.fullmatch(cid):
            issues.error(f"components[{i}]", f"id {cid!r} must match [a-z0-9_]{{1,32}}")
            continue
        where = f"component '{cid}'"
        if cid in ids:
            issues.error(where, "duplicate component id; ids must be unique on a board")
        ids.add(cid)
        _check_component(comp, where, buses, addresses, issues)


def _check_component(comp: dict, where: str, buses: dict, addresses: dict, issues: Issues) -> None:
    kind, driver = _text(comp.get("kind")), _text(comp.get("driver"))
    if kind not in catalog.KINDS:
        issues.error(
            where, f"unknown kind {comp.get('kind')!r} (known: {', '.join(sorted(catalog.KINDS))})"
        )
    spec = catalog.DRIVERS.get(driver)
    if spec is None:
        known = ", ".join(sorted(catalog.KNOWN_DRIVERS))
        issues.error(where, f"unknown driver {comp.get('driver')!r} (known: {known})")
    elif kind in catalog.KINDS and kind not in spec.kinds:
        issues.error(where, f"driver '{driver}' serves {', '.join(sorted(spec.kinds))}, not {kind}")
    for key in ("optional", "active_low", "ignore_strapping_warning"):
        if key in comp and not isinstance(comp[key], bool):
            issues.error(where, f"field '{key}' must be true or false")
    if "pin" in comp and not _is_int(comp["pin"]):
        issues.error(where, "pin must be a GPIO number")
    if "pins" in comp and not (
        isinstance(comp["pins"], dict) and all(_is_int(g) for g in comp["pins"].values())
    ):
        issues.error(where, "pins must be an object of GPIO numbers")
    if spec is not None and spec.io == "pin" and "pin" not in comp and "pins" not in comp:
        issues.error(where, f"driver '{driver}' needs a \"pin\"")
    if spec is not None and spec.io == "i2c":
        _check_i2c(comp, where, buses, addresses, issues)
    _check_readings(comp.get("readings"), where, issues)


def _check_i2c(comp: dict, where: str, buses: dict, addresses: dict, issues: Issues) -> None:
    bus_name = comp.get("bus")
    if bus_name is not None and not isinstance(bus_name, str):
        issues.error(where, 'bus must be the name of a bus in "buses"')
        bus_name = None
    elif bus_name is None:
        issues.error(where, f'driver \'{comp["driver"]}\' needs a "bus" (an i2c bus in "buses")')
    elif bus_name not in buses:
        issues.error(where, f"bus '{bus_name}' is not in \"buses\"")
    elif isinstance(buses[bus_name], dict) and buses[bus_name].get("kind") != "i2c":
        issues.error(where, f"bus '{bus_name}' is not an i2c bus")
    addr = parse_int(comp.get("address"))
    if addr is None:
        issues.error(where, 'needs an I2C "address" (a number, e.g. 118 or "0x76")')
        return
    if not catalog.I2C_ADDRESS_MIN <= addr <= catalog.I2C_ADDRESS_MAX:
        issues.error(where, f"I2C address 0x{addr:02x} is outside 0x08-0x77 (7-bit, not reserved)")
        return
    if bus_name is not None:
        other = addresses.setdefault((bus_name, addr), where)
        if other != where:
            issues.error(
                where, f"I2C address 0x{addr:02x} on bus '{bus_name}' is already used by {other}"
            )


def _check_readings(readings: object, where: str, issues: Issues) -> None:
    if not isinstance(readings, dict) or not readings:
        issues.error(where, 'needs "readings": an object of reading name -> {unit, range}')
        return
    for name, r in readings.items():
        rw = f"reading '{name}'"
        if not isinstance(r, dict) or "unit" not in r:
            issues.error(where, f"{rw}: no unit; every reading needs one")
            continue
        unit = _text(r["unit"])
        if unit not in catalog.UNITS:
            issues.error(
                where,
                f"{rw}: unknown unit {r['unit']!r} (known: {', '.join(sorted(catalog.UNITS))})",
            )
            continue
        if unit not in catalog.NUMERIC_UNITS:
            continue
        rng = r.get("range")
        if rng is None:
            issues.error(where, f"{rw}: unit '{unit}' is numeric, so it needs a range [min, max]")
        elif not (
            isinstance(rng, list)
            and len(rng) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)
        ):
            issues.error(where, f"{rw}: range must be [min, max], two numbers")
        elif not rng[0] < rng[1]:
            issues.error(where, f"{rw}: range [{rng[0]}, {rng[1]}] needs min < max")
