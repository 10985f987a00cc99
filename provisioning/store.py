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
(a re-run issues it). A line cut short by an interruption is the last one, and is dropped
when the ledger is next opened. Images and trees are derived from the ledger and can be
rebuilt at any time.

Bulk provisioning's workers write their ledger lines to segment files of their own
(``.identities.<n>.part``, mode 0600, in the fleet directory); the store checks each
line's identity for duplicates, indexes it, and copies the lines it accepts from the
segment to the end of the ledger in the kernel (:meth:`FleetStore.add_issued`). A device's
:class:`DeviceEntry` is read back from its ledger line only when someone asks for it
(:attr:`FleetStore.devices`), so recording a device costs a few dictionary operations.
Segments are scratch: a line is recorded once it is in the ledger, and segments left by
an interrupted run (identities never recorded, never handed out) are deleted when the
directory is next opened.
"""

from __future__ import annotations

import base64
import csv
import errno
import fcntl
import io
import itertools
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioning.bundle import atomic_write
from provisioning.ca import KeyPair
from provisioning.errors import ProvisioningError

LEDGER = "identities.jsonl"
SEGMENT = ".identities.{}.part"
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


def _entry(ev: dict) -> DeviceEntry:
    return DeviceEntry(**{k: v for k, v in ev.items() if k in _ENTRY_FIELDS})


@dataclass
class IssuedBatch:
    """``issued`` lines a bulk worker wrote to its segment file, and their values.

    Attributes:
        src: the segment's file descriptor.
        offset: where the lines start in it.
        lens: each line's length in bytes, its newline included.
        things, serials, macs: per line the device's thing name, serial and MAC.
        cert_serials, fingerprints, spkis: per line its identity, as in the line.
        rows_at, rows_len: where the pickled ``(csv rows, json rows)`` of the devices'
            manifest rows (active, no image) are in the segment; ``rows_len`` 0 if none.
    """

    src: int
    offset: int
    lens: list[int]
    things: list[str]
    serials: list[str]
    macs: list[str]
    cert_serials: list[str]
    fingerprints: list[str]
    spkis: list[str]
    rows_at: int = 0
    rows_len: int = 0


def _copy_range(src: int, dst: int, count: int, src_at: int, dst_at: int) -> None:
    """Copy bytes between two files in the kernel (copy_file_range, else pread/pwrite)."""
    while count > 0:
        try:
            n = os.copy_file_range(src, dst, count, src_at, dst_at)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            n = os.pwrite(dst, os.pread(src, min(count, 1 << 20), src_at), dst_at)
        if n <= 0:
            raise StoreError("copying ledger lines from a worker's segment failed")
        count, src_at, dst_at = count - n, src_at + n, dst_at + n


def manifest_csv_row(row: dict) -> str:
    """One manifest.csv line (no line end) for a manifest row, as :mod:`csv` writes it."""
    buf = io.StringIO()
    # The line end must be the file's: csv quotes a field holding it.
    csv.writer(buf, lineterminator="\n").writerow([row[c] for c in MANIFEST_COLUMNS])
    return buf.getvalue()[:-1]


def manifest_json_row(row: dict) -> str:
    """One manifest.json device object, on one line."""
    return json.dumps(row, separators=(", ", ": "))


class FleetStore:
    """One fleet's output directory. Use as a context manager to hold its lock."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._devices: dict[str, DeviceEntry] = {}
        # Devices recorded by add_issued: thing -> (offset, length) of its ledger line,
        # made into a DeviceEntry when first asked for; and their manifest rows (csv,
        # json), valid while the device is active and has no image.
        self._lazy: dict[str, tuple[int, int]] = {}
        self._csv_rows: dict[str, str] = {}
        self._json_rows: dict[str, str] = {}
        self._bulk: int | None = None  # ledger fd for add_issued's copies (no O_APPEND)
        self._segments: list[int] = []
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

    @property
    def devices(self) -> dict[str, DeviceEntry]:
        """thing name -> its current state, every device of the ledger."""
        if self._lazy:
            data = self.ledger_path.read_bytes()
            for thing, (at, n) in self._lazy.items():
                self._devices[thing] = _entry(json.loads(data[at : at + n]))
            self._lazy.clear()
        return self._devices

    def things(self) -> list[str]:
        """Every thing name in the ledger, sorted (without making their entries)."""
        return sorted(self._devices.keys() | self._lazy.keys())

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
        for stale in self.root.glob(SEGMENT.format("*")):
            stale.unlink()  # an interrupted run's: never recorded, never handed out
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_segments()
        self.flush(sync=True)
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        if self._bulk is not None:
            os.close(self._bulk)
            self._bulk = None
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
        self._csv_rows.pop(thing, None)
        self._json_rows.pop(thing, None)
        if kind == "issued":
            e = _entry(ev)
            self._lazy.pop(thing, None)
            self._devices[thing] = e
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
        """Record a new device (an ``issued`` line already made for ``e``)."""
        thing = e.thing_name
        self._csv_rows.pop(thing, None)
        self._json_rows.pop(thing, None)
        self._lazy.pop(thing, None)
        self._devices[thing] = e
        self.by_serial[e.serial] = thing
        if e.mac:
            self.by_mac[e.mac] = thing
        self._index_identity(thing, e.fingerprint, e.spki, e.cert_serial)
        self._pending.append(line)

    def open_segments(self, n: int) -> list[int]:
        """Create ``n`` empty segment files for bulk workers; return their fds (read/write)."""
        self.close_segments()
        for i in range(n):
            path = self.root / SEGMENT.format(i)
            self._segments.append(os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))
        return list(self._segments)

    def close_segments(self) -> None:
        """Close and delete the segment files (what they held is in the ledger or refused)."""
        for i, fd in enumerate(self._segments):
            os.close(fd)
            (self.root / SEGMENT.format(i)).unlink(missing_ok=True)
        self._segments = []

    def add_issued(self, batch: IssuedBatch) -> list[tuple[int, str]]:
        """Record new devices whose ``issued`` lines a bulk worker wrote to a segment.

        The lines accepted are copied to the end of the ledger before this returns (call
        :meth:`flush` with ``sync=True`` to make them durable).

        Returns:
            (index, reason) of each line refused because its certificate serial, key or
            fingerprint is already recorded (in the ledger or earlier in the batch);
            nothing is recorded or written for those.
        """
        self.flush()
        if self._bulk is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._bulk = os.open(self.ledger_path, os.O_WRONLY | os.O_CREAT, 0o600)
        end = os.fstat(self._bulk).st_size
        b, n = batch, len(batch.things)
        new_fp = dict(zip(b.fingerprints, b.things, strict=True))
        new_spki = dict(zip(b.spkis, b.things, strict=True))
        new_cs = dict(zip(b.cert_serials, b.things, strict=True))
        rows = None
        if b.rows_len:
            rows = pickle.loads(os.pread(b.src, b.rows_len, b.rows_at))
        if not (
            len(new_fp) == len(new_spki) == len(new_cs) == n
            and self.fingerprints.keys().isdisjoint(new_fp)
            and self.spkis.keys().isdisjoint(new_spki)
            and self.cert_serials.keys().isdisjoint(new_cs)
            and self._devices.keys().isdisjoint(b.things)
        ):
            return self._add_issued_one_by_one(batch, end, rows)
        # No duplicate: index the batch in a few dictionary updates, copy it in one go.
        self.fingerprints.update(new_fp)
        self.spkis.update(new_spki)
        self.cert_serials.update(new_cs)
        self.by_serial.update(zip(b.serials, b.things))
        if any(b.macs):
            self.by_mac.update((m, t) for m, t in zip(b.macs, b.things) if m)
        starts = itertools.accumulate(b.lens, initial=end)
        self._lazy.update(zip(b.things, zip(starts, [x - 1 for x in b.lens])))
        if rows is not None:
            self._csv_rows.update(zip(b.things, rows[0]))
            self._json_rows.update(zip(b.things, rows[1]))
        _copy_range(b.src, self._bulk, sum(b.lens), b.offset, end)
        return []

    def _add_issued_one_by_one(
        self, b: IssuedBatch, end: int, rows: tuple[list[str], list[str]] | None
    ) -> list[tuple[int, str]]:
        refused: list[tuple[int, str]] = []
        copies: list[tuple[int, int]] = []  # (segment offset, length) runs of accepted lines
        fps, spkis, serials = self.fingerprints, self.spkis, self.cert_serials
        at, dst, run = b.offset, end, b.offset
        for i, thing in enumerate(b.things):
            n, fp, spki, cert_serial = b.lens[i], b.fingerprints[i], b.spkis[i], b.cert_serials[i]
            if fp in fps or spki in spkis or cert_serial in serials:
                refused.append((i, self.duplicate_of(thing, fp, spki, cert_serial) or ""))
                if at > run:
                    copies.append((run, at - run))
                at += n
                run = at
                continue
            fps[fp] = spkis[spki] = serials[cert_serial] = thing
            self.by_serial[b.serials[i]] = thing
            if b.macs[i]:
                self.by_mac[b.macs[i]] = thing
            self._devices.pop(thing, None)
            self._lazy[thing] = (dst, n - 1)
            if rows is not None:
                self._csv_rows[thing] = rows[0][i]
                self._json_rows[thing] = rows[1][i]
            at += n
            dst += n
        if at > run:
            copies.append((run, at - run))
        pos = end
        for src_at, n in copies:
            _copy_range(b.src, self._bulk, n, src_at, pos)  # type: ignore[arg-type]
            pos += n
        return refused

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
        if sync and self._bulk is not None:
            os.fsync(self._bulk)

    def append(self, events: list[dict]) -> None:
        """Record and durably write events (lifecycle operations: one at a time)."""
        for ev in events:
            self.add(ev)
        self.flush(sync=True)

    # -- output manifest -----------------------------------------------------------
    def _images(self) -> set[str]:
        try:
            return {n for n in os.listdir(self.images_dir) if n.endswith(".littlefs.bin")}
        except FileNotFoundError:
            return set()

    def _manifest_row(self, thing: str, images: set[str]) -> dict:
        e = self._devices.get(thing)
        if e is None:  # recorded by add_issued: read its entry back from the ledger
            e = self.devices[thing]
        img = f"{thing}.littlefs.bin"
        return {
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

    def manifest_rows(self) -> list[dict]:
        """One row per device (MANIFEST_COLUMNS), sorted by thing name."""
        images = self._images()
        return [self._manifest_row(thing, images) for thing in self.things()]

    def write_manifests(self) -> tuple[Path, Path]:
        """Write manifest.csv and manifest.json from the ledger; return their paths."""
        images = self._images()
        csv_rows, json_rows = self._csv_rows, self._json_rows
        # Rows made by bulk workers hold for active devices without an image; make the rest.
        todo = list((self._devices.keys() | self._lazy.keys()) - csv_rows.keys())
        if images:
            todo += [t for t in csv_rows if f"{t}.littlefs.bin" in images]
        if todo:
            csv_rows, json_rows = dict(csv_rows), dict(json_rows)
            for thing in todo:
                row = self._manifest_row(thing, images)
                csv_rows[thing] = manifest_csv_row(row)
                json_rows[thing] = manifest_json_row(row)
        things = self.things()
        csv_text = "\n".join([",".join(MANIFEST_COLUMNS), *map(csv_rows.__getitem__, things)])
        body = ",\n".join(map(json_rows.__getitem__, things))
        csv_path, json_path = self.root / MANIFEST_CSV, self.root / MANIFEST_JSON
        atomic_write(csv_path, (csv_text + "\n").encode())
        # One device per line: readable, diffable.
        atomic_write(json_path, ('{"devices": [\n' + body + "\n]}\n").encode())
        return csv_path, json_path
