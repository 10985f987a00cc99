"""A fleet's output directory: the identity ledger, manifests, images, device trees.

Layout::

    fleet.json               what every device of the fleet shares (FleetSpec)
    identities.jsonl         the ledger, append-only, mode 0600: one line per event
                             (issued, rotated, revoked); issued/rotated lines carry the
                             device's key and certificate (DER, base64) and config
    manifest.csv, manifest.json  the output manifest: one row per device, no keys
    images/<thing>.littlefs.bin  the filesystem image, ready to flash
    devices/<thing>/         the device filesystem tree (optional: config.json, certs/...)
    server-ca.der            the CA that signs the endpoint's certificate

The ledger is the truth. An identity exists once its line is in the ledger, written in
one append with its key and certificate, so there is nothing half-made to find after an
interruption: a device is either in the ledger (a re-run skips it) or has nothing on disk
(a re-run issues it). Images and trees are derived from the ledger and can be rebuilt at
any time.
"""

from __future__ import annotations

import base64
import csv
import fcntl
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioning.bundle import atomic_write
from provisioning.ca import KeyPair
from provisioning.errors import ProvisioningError

LEDGER = "identities.jsonl"
FLEET_FILE = "fleet.json"
MANIFEST_CSV = "manifest.csv"
MANIFEST_JSON = "manifest.json"
MANIFEST_COLUMNS = (
    "thing_name",
    "serial",
    "mac",
    "model",
    "hw_rev",
    "mfg_date",
    "cert_serial",
    "fingerprint",
    "not_after",
    "status",
    "image",
)


class StoreError(ProvisioningError):
    """The output directory cannot be used (locked, made for another fleet, corrupt)."""


@dataclass
class DeviceEntry:
    """The current state of one device, folded from the ledger."""

    thing_name: str
    serial: str
    mac: str = ""
    model: str = ""
    hw_rev: str = ""
    mfg_date: str = ""
    cert_serial: str = ""
    fingerprint: str = ""
    spki: str = ""
    not_after: str = ""
    issued_at: str = ""
    status: str = "active"
    key: str = ""
    cert: str = ""
    config: dict = field(default_factory=dict)
    previous: list[str] = field(default_factory=list)

    def identity(self) -> KeyPair:
        """The device's current key and certificate."""
        key = serialization.load_der_private_key(base64.b64decode(self.key), password=None)
        cert = x509.load_der_x509_certificate(base64.b64decode(self.cert))
        return KeyPair(key, cert)  # type: ignore[arg-type]

    def config_bytes(self) -> bytes:
        return (json.dumps(self.config, indent=1) + "\n").encode()


_ENTRY_FIELDS = set(DeviceEntry.__dataclass_fields__)


class FleetStore:
    """One fleet's output directory. Use as a context manager to hold its lock."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.devices: dict[str, DeviceEntry] = {}
        self.by_serial: dict[str, str] = {}
        self.by_mac: dict[str, str] = {}
        self.fingerprints: dict[str, str] = {}
        self.spkis: dict[str, str] = {}
        self.cert_serials: dict[str, str] = {}
        self.revoked: dict[str, str] = {}
        self._lock_fd: int | None = None
        self._ledger = None
        self._pending: list[str] = []
        self._load()

    # -- paths -------------------------------------------------------------------
    @property
    def ledger_path(self) -> Path:
        return self.root / LEDGER

    @property
    def devices_dir(self) -> Path:
        return self.root / "devices"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    def device_dir(self, thing: str) -> Path:
        return self.devices_dir / thing

    def image_path(self, thing: str) -> Path:
        return self.images_dir / f"{thing}.littlefs.bin"

    # -- lock --------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StoreError(f"{self.root} is in use by another thingkit run") from exc
        self._lock_fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush(sync=True)
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- fleet.json --------------------------------------------------------------
    def read_spec(self) -> dict | None:
        try:
            return json.loads((self.root / FLEET_FILE).read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise StoreError(f"{self.root / FLEET_FILE} is not valid JSON: {exc}") from exc

    def write_spec(self, spec: dict) -> None:
        atomic_write(self.root / FLEET_FILE, (json.dumps(spec, indent=1) + "\n").encode())

    # -- ledger ------------------------------------------------------------------
    def _load(self) -> None:
        try:
            data = self.ledger_path.read_bytes()
        except FileNotFoundError:
            return
        lines = data.split(b"\n")
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except ValueError as exc:
                if n >= len(lines) - 1 and not data.endswith(b"\n"):
                    break  # the last line, cut short by an interruption: never recorded
                raise StoreError(f"{self.ledger_path} line {n} is not valid JSON") from exc
            self._apply(ev)
        if data and not data.endswith(b"\n"):
            # Drop the cut line so the next append starts on a line of its own.
            with open(self.ledger_path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def _apply(self, ev: dict) -> None:
        kind = ev.get("event")
        thing = ev.get("thing_name", "")
        if kind == "issued":
            e = DeviceEntry(**{k: v for k, v in ev.items() if k in _ENTRY_FIELDS})
            self.devices[thing] = e
            self.by_serial[e.serial] = thing
            if e.mac:
                self.by_mac[e.mac] = thing
            self._index_identity(thing, e.fingerprint, e.spki, e.cert_serial)
        elif kind == "rotated":
            e = self.devices[thing]
            e.previous.append(e.fingerprint)
            for k in (
                "cert_serial",
                "fingerprint",
                "spki",
                "not_after",
                "issued_at",
                "key",
                "cert",
            ):
                setattr(e, k, ev[k])
            e.status = "active"
            self._index_identity(thing, e.fingerprint, e.spki, e.cert_serial)
        elif kind == "revoked":
            self.revoked[ev["fingerprint"]] = thing
            e = self.devices.get(thing)
            if e is not None and e.fingerprint == ev["fingerprint"]:
                e.status = "revoked"

    def _index_identity(self, thing: str, fp: str, spki: str, serial: str) -> None:
        self.fingerprints[fp] = thing
        self.spkis[spki] = thing
        self.cert_serials[serial] = thing

    def duplicate_of(self, thing: str, fp: str, spki: str, cert_serial: str) -> str | None:
        """Why a new identity for ``thing`` duplicates one already recorded, or None."""
        for value, index, label in (
            (fp, self.fingerprints, "certificate fingerprint"),
            (spki, self.spkis, "key"),
            (cert_serial, self.cert_serials, "certificate serial"),
        ):
            other = index.get(value)
            if other is not None:
                return f"duplicate {label}: already used by {other}"
        return None

    def add_entry(self, e: DeviceEntry, line: str) -> None:
        """Record a new device (an ``issued`` line already made): bulk provisioning's path."""
        thing = e.thing_name
        self.devices[thing] = e
        self.by_serial[e.serial] = thing
        if e.mac:
            self.by_mac[e.mac] = thing
        self._index_identity(thing, e.fingerprint, e.spki, e.cert_serial)
        self._pending.append(line)

    def add(self, ev: dict, line: str | None = None) -> None:
        """Record an event: indexed now, written to the ledger by the next :meth:`flush`."""
        self._apply(ev)
        self._pending.append(line if line is not None else json.dumps(ev, separators=(",", ":")))

    def flush(self, sync: bool = False) -> None:
        """Append the recorded events to the ledger in one write; fsync if ``sync``."""
        if self._pending:
            if self._ledger is None:
                self.root.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.ledger_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                self._ledger = os.fdopen(fd, "a", encoding="utf-8")
            self._ledger.write("\n".join(self._pending) + "\n")
            self._ledger.flush()
            self._pending.clear()
        if sync and self._ledger is not None:
            os.fsync(self._ledger.fileno())

    def append(self, events: list[dict]) -> None:
        """Record and durably write events (lifecycle operations: one at a time)."""
        for ev in events:
            self.add(ev)
        self.flush(sync=True)

    # -- output manifest -----------------------------------------------------------
    def manifest_rows(self) -> list[dict]:
        rows = []
        images = {p.name for p in self.images_dir.glob("*.littlefs.bin")}
        for thing in sorted(self.devices):
            e = self.devices[thing]
            img = f"{thing}.littlefs.bin"
            rows.append(
                {
                    "thing_name": thing,
                    "serial": e.serial,
                    "mac": e.mac,
                    "model": e.model,
                    "hw_rev": e.hw_rev,
                    "mfg_date": e.mfg_date,
                    "cert_serial": e.cert_serial,
                    "fingerprint": e.fingerprint,
                    "not_after": e.not_after,
                    "status": e.status,
                    "image": f"images/{img}" if img in images else "",
                }
            )
        return rows

    def write_manifests(self) -> tuple[Path, Path]:
        """Write manifest.csv and manifest.json from the ledger; return their paths."""
        rows = self.manifest_rows()
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(MANIFEST_COLUMNS)
        w.writerows([r[c] for c in MANIFEST_COLUMNS] for r in rows)
        csv_path, json_path = self.root / MANIFEST_CSV, self.root / MANIFEST_JSON
        atomic_write(csv_path, buf.getvalue().encode())
        # One device per line: readable, diffable, and written by the C JSON encoder.
        body = ",\n".join(json.dumps(r, separators=(", ", ": ")) for r in rows)
        atomic_write(json_path, ('{"devices": [\n' + body + "\n]}\n").encode())
        return csv_path, json_path
