"""The manufacturer's allow list: which devices may get an identity, and their thing names.

A manifest is CSV (with a header row) or JSON (a list of objects, or ``{"devices": [...]}``)
with one record per device:

=============  =========================================================
field          meaning
=============  =========================================================
``serial``     the manufacturer's serial number (required, unique)
``mac``        the Wi-Fi station MAC, ``aa:bb:cc:dd:ee:ff`` (optional, unique)
``model``      product model (required unless ``--model`` gives a default)
``hw_rev``     hardware revision (optional)
``mfg_date``   manufacturing date, ``YYYY-MM-DD`` (optional)
=============  =========================================================

Thing names follow one documented convention (:data:`DEFAULT_NAME_TEMPLATE`,
``{model}-{serial}``): the template is filled from the record, and the result must be a
valid thing name (1-64 of ``A-Z a-z 0-9 _ -``). Nothing is silently rewritten: a serial
with a character a thing name cannot hold is refused, because mapping it to another
character could make two devices collide. Placeholders: ``{serial}``, ``{model}``,
``{hw_rev}``, ``{mac}`` (12 lower-case hex digits, no separators), ``{index}`` (the
record's position, from 1; a format spec such as ``{index:06d}`` works).

Example::

    records = load_manifest(Path("allow-list.csv"))
    devices = assign_names(records)        # raises ManifestError listing every problem
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import string
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from provisioning.bundle import THING_NAME_RE
from provisioning.errors import ProvisioningError

DEFAULT_NAME_TEMPLATE = "{model}-{serial}"
FIELDS = ("serial", "mac", "model", "hw_rev", "mfg_date")
_PLACEHOLDERS = {"serial", "model", "hw_rev", "mac", "index"}
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-]?[0-9a-f]{2}){5}$")
_TEXT_RE = re.compile(r"^[\x20-\x7e]{1,64}$")
# How many problems an error message lists before "and N more".
_SHOWN = 5


class ManifestError(ProvisioningError, ValueError):
    """The manifest cannot be used; ``problems`` lists each bad record (one line each).

    Attributes:
        problems: one human-readable line per problem.
        rejected: serials of the records refused (nothing is written for them).
    """

    def __init__(self, summary: str, problems: list[str], rejected: set[str] | None = None):
        self.summary = summary
        self.problems = problems
        self.rejected = rejected or set()
        shown = "; ".join(problems[:_SHOWN])
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        super().__init__(f"{summary}: {shown}{more}" if problems else summary)


@dataclass(frozen=True)
class DeviceRecord:
    """One device of the allow list. ``thing_name`` is set by :func:`assign_names`."""

    serial: str
    model: str
    mac: str = ""
    hw_rev: str = ""
    mfg_date: str = ""
    index: int = 0
    thing_name: str = ""

    def attributes(self) -> dict[str, str]:
        """Thing attributes for the registry (AWS: at most 50, values 1-800 chars)."""
        out = {"serial": self.serial, "model": self.model}
        for k in ("mac", "hw_rev", "mfg_date"):
            v = getattr(self, k)
            if v:
                out[k] = v.replace(":", "") if k == "mac" else v
        return out

    def to_json(self) -> dict:
        return asdict(self)


def normalise_mac(mac: str) -> str:
    """``AA-BB-CC-DD-EE-FF`` / ``aabbccddeeff`` -> ``aa:bb:cc:dd:ee:ff``; raises ValueError."""
    m = mac.strip().lower()
    if not _MAC_RE.fullmatch(m):
        raise ValueError(f"MAC {mac!r} is not six hex bytes")
    digits = re.sub(r"[:-]", "", m)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def check_template(template: str) -> str:
    """Return ``template`` if it only uses known placeholders, else raise ManifestError."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ManifestError(f"thing name template {template!r} is malformed", [str(exc)]) from exc
    unknown = sorted(names - _PLACEHOLDERS)
    if unknown or not names:
        raise ManifestError(
            f"thing name template {template!r} is not usable",
            [f"placeholders allowed: {', '.join(sorted(_PLACEHOLDERS))}; unknown: {unknown}"],
        )
    return template


def thing_name_for(record: DeviceRecord, template: str = DEFAULT_NAME_TEMPLATE) -> str:
    """The thing name of ``record`` by the naming convention (not yet checked)."""
    return template.format(
        serial=record.serial,
        model=record.model,
        hw_rev=record.hw_rev,
        mac=record.mac.replace(":", ""),
        index=record.index,
    )


def _rows(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}", [str(exc)]) from exc
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"manifest {path} is not valid JSON", [str(exc)]) from exc
        rows = doc.get("devices") if isinstance(doc, dict) else doc
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ManifestError(
                f"manifest {path}: expected a list of objects or {{'devices': [...]}}", []
            )
        return rows
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "serial" not in [f.strip() for f in reader.fieldnames]:
        raise ManifestError(f"manifest {path}: the CSV header must name a 'serial' column", [])
    return [{(k or "").strip(): v for k, v in row.items()} for row in reader]


def parse_records(
    rows: list[dict], default_model: str = "", source: str = "manifest"
) -> tuple[list[DeviceRecord], list[str]]:
    """Check each row; return the good records and one problem line per bad row."""
    records: list[DeviceRecord] = []
    problems: list[str] = []
    for i, row in enumerate(rows, start=1):
        where = f"{source} record {i}"
        unknown = sorted(set(row) - set(FIELDS) - {""})
        if unknown:
            problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
            continue
        vals = {k: ("" if row.get(k) is None else str(row.get(k)).strip()) for k in FIELDS}
        vals["model"] = vals["model"] or default_model
        bad = None
        if not vals["serial"]:
            bad = "serial is empty"
        elif not vals["model"]:
            bad = "model is empty (give one in the manifest or with --model)"
        for k in ("serial", "model", "hw_rev"):
            if not bad and vals[k] and not _TEXT_RE.fullmatch(vals[k]):
                bad = f"{k} {vals[k]!r} must be 1-64 printable ASCII characters"
        if not bad and vals["mac"]:
            try:
                vals["mac"] = normalise_mac(vals["mac"])
            except ValueError as exc:
                bad = str(exc)
        if not bad and vals["mfg_date"]:
            try:
                dt.date.fromisoformat(vals["mfg_date"])
            except ValueError:
                bad = f"mfg_date {vals['mfg_date']!r} is not YYYY-MM-DD"
        if bad:
            problems.append(f"{where} (serial {vals['serial'] or '?'}): {bad}")
            continue
        records.append(DeviceRecord(index=i, **vals))
    return records, problems


def load_manifest(path: Path, default_model: str = "") -> list[DeviceRecord]:
    """Read and check a CSV or JSON manifest (thing names not yet assigned).

    Raises:
        ManifestError: unreadable, or any record is bad (every problem is listed).
    """
    records, problems = parse_records(_rows(path), default_model, source=path.name)
    if problems:
        raise ManifestError(f"manifest {path} has {len(problems)} bad record(s)", problems)
    if not records:
        raise ManifestError(f"manifest {path} lists no devices", [])
    return records


def generated_records(
    count: int, model: str, prefix: str = "SN", start: int = 1
) -> list[DeviceRecord]:
    """``count`` records with serials ``<prefix><number:08d>`` (for ``--count N``)."""
    if count < 1:
        raise ManifestError("--count must be at least 1", [])
    return [
        DeviceRecord(serial=f"{prefix}{n:08d}", model=model, index=i)
        for i, n in enumerate(range(start, start + count), start=1)
    ]


def assign_names(
    records: list[DeviceRecord], template: str = DEFAULT_NAME_TEMPLATE
) -> tuple[list[DeviceRecord], ManifestError | None]:
    """Give each record its thing name; find duplicates and invalid names.

    Every record that shares a serial, MAC or thing name with another is refused (both
    of them: there is no telling which is right), as is any record whose thing name is not
    valid.

    Returns:
        The accepted records (with ``thing_name``), and a ManifestError describing the
        refused ones (None if all were accepted).
    """
    check_template(template)
    named = [replace(r, thing_name=thing_name_for(r, template)) for r in records]
    problems: list[str] = []
    rejected: set[int] = set()
    for r in named:
        if not THING_NAME_RE.fullmatch(r.thing_name):
            problems.append(
                f"record {r.index} (serial {r.serial}): thing name {r.thing_name!r} is not "
                "valid (1-64 of A-Z a-z 0-9 _ -)"
            )
            rejected.add(r.index)
    for key, label in (("serial", "serial"), ("mac", "MAC"), ("thing_name", "thing name")):
        seen: dict[str, list[int]] = defaultdict(list)
        shown: dict[str, str] = {}
        for r in named:
            v = getattr(r, key)
            if v:
                k = v.lower() if key != "serial" else v
                seen[k].append(r.index)
                shown.setdefault(k, v)
        for k, idx in seen.items():
            if len(idx) > 1:
                where = ", ".join(map(str, idx))
                problems.append(f"duplicate {label} {shown[k]!r} in records {where}")
                rejected.update(idx)
    ok = [r for r in named if r.index not in rejected]
    if not problems:
        return ok, None
    refused = {r.serial for r in named if r.index in rejected}
    err = ManifestError(f"{len(refused)} device(s) refused", problems, refused)
    return ok, err
