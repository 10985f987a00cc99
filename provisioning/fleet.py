"""Bulk identities: one EC P-256 key and certificate per device, its config, its image.

``provision_fleet`` takes the allow list (records with thing names, see
:mod:`provisioning.manifest`) and works in two phases, each spread over one process per
core:

1. identities: for each device not yet in the ledger, a fresh EC P-256 key, a certificate
   (CN = thing name) from the issuing CA and the device's ``config.json``. The parent
   checks each against the ledger (serial, MAC, thing name, certificate serial, key,
   fingerprint), refuses a duplicate (nothing is written for it) and appends the rest to
   the ledger, key and certificate in the same line;
2. artifacts, from the ledger only: the littlefs image of each device's filesystem
   (:mod:`provisioning.image`) and, if asked, its filesystem tree under ``devices/``.
   Each is written under a temporary name and renamed.

A re-run resumes: devices in the ledger are never issued again; missing images or trees
are rebuilt from the ledger. An interruption loses at most the identities not yet
appended, which were never written anywhere.

Example::

    board = load_board("esp32-devkitc")                    # host_tools.boards.registry
    spec = FleetSpec.for_board(endpoint, board)            # vfs 0x200000 + 2 MiB

    result = provision_fleet(ca, spec, records, Path("out/batch-7"), server_ca_der)
    print(result.summary())
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol, Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioning.bundle import (
    CERT_FILE,
    CONFIG_FILE,
    KEY_FILE,
    SERVER_CA_FILE,
    DeviceConfig,
    atomic_write,
)
from provisioning.ca import CertificateAuthority, KeyPair, Usage, new_key
from provisioning.errors import ProvisioningError
from provisioning.manifest import DEFAULT_NAME_TEMPLATE, DeviceRecord
from provisioning.store import DeviceEntry, FleetStore, StoreError

# Devices per task sent to a worker: large enough to amortise the IPC, small enough for
# a smooth progress bar and little lost work on an interruption.
CHUNK = 64
# The ledger is written after every chunk and fsync'd at most this often (and at the end).
SYNC_EVERY_S = 1.0
# Files added to every image (board.json, ...) are kept here, to rebuild images later.
EXTRA_DIR = "image-files"
# Fields of the spec that must not change between runs into the same directory.
_FIXED = ("endpoint", "port", "ntp_servers", "topic_prefix", "name_template", "ca_root", "board")


class FleetError(ProvisioningError):
    """A fleet run cannot start (bad spec, or the directory belongs to another fleet)."""


class BoardFilesystem(Protocol):
    """What :meth:`FleetSpec.for_board` needs of a board definition.

    :class:`host_tools.boards.registry.Board` is one: the caller loads the board and
    passes it in (provisioning does not read board files).
    """

    @property
    def id(self) -> str: ...

    def filesystem_offset(self) -> int: ...

    def filesystem_size(self) -> int: ...


@dataclass(frozen=True)
class FleetSpec:
    """What every device of one fleet shares; saved in ``fleet.json``.

    Attributes:
        endpoint: the MQTT endpoint (AWS: ``<id>-ats.iot.<region>.amazonaws.com``).
        port: MQTT port (8883).
        ntp_servers: NTP servers, ``host`` or ``host:port``.
        topic_prefix: first level of the thing's topics.
        target: ``aws`` or ``bench`` (informational: registration is a separate step).
        region: AWS region, when the endpoint was chosen by region.
        board: board id (``esp32-devkitc``); its ``board.json`` goes into each image.
        partition_size: size of the board's filesystem partition, bytes.
            :meth:`for_board` takes it from the board definition (its table's ``vfs``, or
            from v1.26 the ``vfs`` MicroPython creates at boot) and refuses a value that is
            not the board's; images need it.
        fs_offset: flash offset of that partition (where the image is flashed); same rule.
        name_template: thing naming convention (see provisioning.manifest).
        config: extra DeviceConfig fields (``keepalive_s``, ``docs_url``, ...).
    """

    endpoint: str
    port: int = 8883
    ntp_servers: tuple[str, ...] = ("pool.ntp.org",)
    topic_prefix: str = "thingkit"
    target: str = "aws"
    region: str = ""
    board: str = ""
    partition_size: int = 0
    fs_offset: int = 0
    name_template: str = DEFAULT_NAME_TEMPLATE
    config: dict = field(default_factory=dict)

    @classmethod
    def for_board(cls, endpoint: str, board: BoardFilesystem, **kwargs) -> Self:
        """A spec for ``board`` whose filesystem offset and size are the board's.

        Args:
            endpoint: the MQTT endpoint.
            board: the board definition (``host_tools.boards.registry.load_board(id)``).
            kwargs: other :class:`FleetSpec` fields.

        Raises:
            FleetError: ``kwargs`` give an offset or size that is not the board's.
        """
        spec = cls(endpoint=endpoint, board=board.id, **kwargs)
        size, offset = board.filesystem_size(), board.filesystem_offset()
        if (spec.partition_size or size, spec.fs_offset or offset) != (size, offset):
            raise FleetError(
                f"filesystem 0x{spec.fs_offset:x}+0x{spec.partition_size:x} is not board "
                f"{board.id}'s (vfs 0x{offset:x}+0x{size:x}); leave partition_size and fs_offset "
                "out to take the board's"
            )
        return replace(spec, partition_size=size, fs_offset=offset)

    def device_config(self, thing: str) -> DeviceConfig:
        return DeviceConfig(
            thing_name=thing,
            endpoint=self.endpoint,
            port=self.port,
            ntp_servers=list(self.ntp_servers),
            topic_prefix=self.topic_prefix,
            **self.config,
        )

    def to_json(self) -> dict:
        d = asdict(self)
        d["ntp_servers"] = list(self.ntp_servers)
        return d


@dataclass
class FleetResult:
    """What a run did. ``refused`` holds one line per device refused (nothing written)."""

    requested: int = 0
    issued: int = 0
    skipped: int = 0
    images: int = 0
    trees: int = 0
    refused: list[str] = field(default_factory=list)
    refused_serials: set[str] = field(default_factory=set)
    seconds: float = 0.0
    identity_seconds: float = 0.0
    artifact_seconds: float = 0.0
    out: Path = Path()
    manifest_csv: Path | None = None
    manifest_json: Path | None = None

    def summary(self) -> str:
        rate = self.issued / self.identity_seconds if self.identity_seconds > 0 else 0.0
        parts = [f"{self.issued} issued"]
        if self.skipped:
            parts.append(f"{self.skipped} already provisioned")
        parts.append(f"{len(self.refused_serials)} refused")
        extra = ""
        if self.images or self.trees:
            made = [f"{self.images} images"] if self.images else []
            made += [f"{self.trees} trees"] if self.trees else []
            extra = f"; {' and '.join(made)} in {self.artifact_seconds:.1f} s"
        return (
            f"provisioned {self.requested} devices ({', '.join(parts)}) in {self.seconds:.1f} s "
            f"({rate:.0f} identities/s{extra}); output {self.out}"
        )

    def to_json(self) -> dict:
        return {
            "requested": self.requested,
            "issued": self.issued,
            "skipped": self.skipped,
            "images": self.images,
            "trees": self.trees,
            "refused": self.refused,
            "seconds": round(self.seconds, 3),
            "identity_seconds": round(self.identity_seconds, 3),
            "artifact_seconds": round(self.artifact_seconds, 3),
            "out": str(self.out),
            "manifest_csv": str(self.manifest_csv or ""),
            "manifest_json": str(self.manifest_json or ""),
        }


# -- worker side -----------------------------------------------------------------------
_W: dict = {}


def _init_worker(ctx: dict) -> None:
    """Set up a worker: the issuing CA (key passed in memory only), paths, options."""
    _W.clear()
    _W.update(ctx)
    if ctx.get("issuing_key"):
        key = serialization.load_der_private_key(ctx["issuing_key"], password=None)
        cert = x509.load_der_x509_certificate(ctx["issuing_cert"])
        root = x509.load_der_x509_certificate(ctx["root_cert"])
        _W["ca"] = CertificateAuthority(Path(ctx["ca_dir"]), root, KeyPair(key, cert))  # type: ignore[arg-type]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


_THING = "@@thing@@"  # where the thing name goes in the config template


def _issue_chunk(items: list[tuple]) -> list[tuple]:
    """Issue identities for (thing, serial, mac, model, hw_rev, mfg_date) records.

    Returns, per device, the ledger fields and the ledger line (built here, in parallel).
    """
    issue = _W["ca"].leaf_issuer(Usage.CLIENT, _W["leaf_days"])
    cfg_template: str = _W["config_json"]
    spki_fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_fmt = (
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    out = []
    not_after = issued_at = ""
    for thing, serial, mac, model, hw_rev, mfg_date in items:
        key = new_key()
        cert = issue(thing, key)
        cert_der = cert.public_bytes(serialization.Encoding.DER)
        if not not_after:  # one validity for the whole chunk (leaf_issuer fixed it)
            not_after = cert.not_valid_after_utc.isoformat()
            issued_at = cert.not_valid_before_utc.isoformat()
        fp = hashlib.sha256(cert_der).hexdigest()
        spki = hashlib.sha256(key.public_key().public_bytes(*spki_fmt)).hexdigest()
        cert_serial = f"{cert.serial_number:x}"
        key_b64 = _b64(key.private_bytes(*key_fmt))
        cert_b64 = _b64(cert_der)
        meta = json.dumps(
            {
                "event": "issued",
                "thing_name": thing,
                "serial": serial,
                "mac": mac,
                "model": model,
                "hw_rev": hw_rev,
                "mfg_date": mfg_date,
                "cert_serial": cert_serial,
                "fingerprint": fp,
                "spki": spki,
                "not_after": not_after,
                "issued_at": issued_at,
            },
            separators=(",", ":"),
        )
        line = (
            f'{meta[:-1]},"key":"{key_b64}","cert":"{cert_b64}",'
            f'"config":{cfg_template.replace(_THING, thing)}}}'
        )
        out.append(
            (
                thing,
                serial,
                mac,
                model,
                hw_rev,
                mfg_date,
                cert_serial,
                fp,
                spki,
                not_after,
                issued_at,
                key_b64,
                cert_b64,
                line,
            )
        )
    return out


def device_files(entry: DeviceEntry, server_ca_der: bytes) -> dict[str, bytes]:
    """The device filesystem's files for a ledger entry (device path -> bytes)."""
    return {
        CONFIG_FILE: entry.config_bytes(),
        CERT_FILE: base64.b64decode(entry.cert),
        KEY_FILE: base64.b64decode(entry.key),
        SERVER_CA_FILE: server_ca_der,
    }


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    """Write a device tree complete or not at all: staged beside it, then renamed in."""
    stage = root.with_name(f".{root.name}.tmp")
    shutil.rmtree(stage, ignore_errors=True)
    for rel, data in files.items():
        p = stage / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if rel == KEY_FILE else 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    old = root.with_name(f".{root.name}.old")
    if root.exists():
        os.rename(root, old)
    os.rename(stage, root)
    shutil.rmtree(old, ignore_errors=True)


def _artifact_chunk(items: list[tuple[str, dict, bool, bool]]) -> list[tuple[str, str]]:
    """Build images and trees: (thing, entry fields, image?, tree?) -> (thing, error)."""
    from provisioning.image import build_image

    out = []
    root = Path(_W["out"])
    for thing, fields_, image, tree in items:
        try:
            files = device_files(DeviceEntry(**fields_), _W["server_ca"])
            if tree:
                write_tree(root / "devices" / thing, files)
            if image:
                content = dict(_W["extra_files"])
                content.update(files)
                img = build_image(content, _W["partition_size"], full=_W["full_images"])
                atomic_write(root / "images" / f"{thing}.littlefs.bin", img)
            out.append((thing, ""))
        except Exception as exc:  # noqa: BLE001 - reported per device; the run goes on
            out.append((thing, str(exc)))
    return out


# -- parent side -----------------------------------------------------------------------
def _check_spec(store: FleetStore, spec_doc: dict) -> None:
    old = store.read_spec()
    if old is None:
        store.write_spec(spec_doc)
        return
    diff = [k for k in _FIXED if old.get(k) != spec_doc.get(k)]
    if diff:
        shown = ", ".join(f"{k} {old.get(k)!r} -> {spec_doc.get(k)!r}" for k in diff)
        raise FleetError(
            f"{store.root} holds a fleet provisioned with other settings ({shown}); "
            "use another output directory"
        )
    if old != spec_doc:
        store.write_spec(spec_doc)


def _precheck(store: FleetStore, rec: DeviceRecord) -> tuple[str, str | None]:
    """("new" | "known" | "refuse", reason) for one record against the ledger."""
    thing = rec.thing_name
    known = store.devices.get(thing)
    if known is not None and known.serial != rec.serial:
        return "refuse", (
            f"duplicate thing name {thing!r}: serial {rec.serial} would reuse the thing of "
            f"serial {known.serial}, already provisioned; nothing written for it"
        )
    other = store.by_serial.get(rec.serial)
    if other is not None and other != thing:
        return "refuse", (
            f"duplicate serial {rec.serial!r}: already provisioned as {other}; "
            "nothing written for it"
        )
    if rec.mac:
        other = store.by_mac.get(rec.mac)
        if other is not None and other != thing:
            return "refuse", (
                f"duplicate MAC {rec.mac} (serial {rec.serial}): already provisioned as "
                f"{other}; nothing written for it"
            )
    return ("new", None) if known is None else ("known", None)


class _Pool:
    """Run chunks in worker processes (or in this one for jobs=1), results as they come."""

    def __init__(self, jobs: int, ctx: dict) -> None:
        self.jobs, self.ctx = jobs, ctx
        self.pool: cf.ProcessPoolExecutor | None = None

    def __enter__(self) -> Self:
        if self.jobs > 1:
            self.pool = cf.ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_init_worker,
                initargs=(self.ctx,),
            )
        else:
            _init_worker(self.ctx)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def map(self, fn: Callable, chunks: list) -> Iterable:
        if self.pool is None:
            for ch in chunks:
                yield fn(ch)
            return
        futs = [self.pool.submit(fn, ch) for ch in chunks]
        try:
            for fut in cf.as_completed(futs):
                yield fut.result()
        finally:
            for f in futs:
                f.cancel()


def provision_fleet(
    ca: CertificateAuthority,
    spec: FleetSpec,
    records: Iterable[DeviceRecord],
    out: Path,
    server_ca_der: bytes,
    images: bool = False,
    trees: bool = False,
    full_images: bool = False,
    extra_files: dict[str, bytes] | None = None,
    jobs: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    refused: dict[str, str] | None = None,
) -> FleetResult:
    """Provision every record not yet provisioned in ``out``; see the module docstring.

    Args:
        ca: the issuing CA (loaded with its passphrase).
        spec: what every device shares.
        records: the allow list with thing names (``manifest.assign_names``).
        out: the fleet's output directory (created; resumed if it exists).
        server_ca_der: the CA that signs the endpoint's server certificate (DER).
        images: build each device's littlefs image (needs ``spec.partition_size``).
        trees: write each device's filesystem tree under ``devices/<thing>/``.
        full_images: pad images to the whole partition.
        extra_files: device path -> bytes added to every image (e.g. ``board.json``).
        jobs: worker processes (default: one per core); 1 runs in this process.
        progress: called as ``progress(phase, done, total)`` after each chunk.
        refused: serial -> reason for records the caller already refused (reported).

    Returns:
        What was done; ``result.refused`` lists devices refused, for which nothing
        was written.

    Raises:
        FleetError: bad spec or the directory belongs to another fleet.
        StoreError: the directory is locked by another run or its ledger is corrupt.
    """
    t0 = time.monotonic()
    records = list(records)
    result = FleetResult(requested=len(records) + len(refused or {}), out=Path(out))
    for serial, why in (refused or {}).items():
        result.refused.append(why)
        result.refused_serials.add(serial)
    if images and spec.partition_size <= 0:
        raise FleetError("images need the board's filesystem partition size (give a board)")
    spec_doc = dict(
        spec.to_json(), ca_root=hashlib.sha256(ca.root_der).hexdigest(), ca_dir=str(ca.directory)
    )
    jobs = jobs or os.cpu_count() or 1
    with FleetStore(Path(out)) as store:
        _check_spec(store, spec_doc)
        atomic_write(store.root / "server-ca.der", server_ca_der)
        for rel, data in (extra_files or {}).items():
            atomic_write(store.root / EXTRA_DIR / rel, data)
        work: list[tuple] = []
        wanted: list[str] = []
        config_doc = spec.device_config(_THING).to_json()
        for rec in records:
            verdict, why = _precheck(store, rec)
            if verdict == "refuse":
                result.refused.append(why or "")
                result.refused_serials.add(rec.serial)
                continue
            wanted.append(rec.thing_name)
            if verdict == "known":
                result.skipped += 1
            else:
                work.append(
                    (rec.thing_name, rec.serial, rec.mac, rec.model, rec.hw_rev, rec.mfg_date)
                )
        ctx = {
            "issuing_key": ca.issuing.key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "issuing_cert": ca.issuing.cert_der,
            "root_cert": ca.root_der,
            "ca_dir": str(ca.directory),
            "leaf_days": ca.policy.leaf_days,
            "server_ca": server_ca_der,
            "out": str(store.root),
            "config_json": json.dumps(config_doc, separators=(",", ":")),
            "full_images": full_images,
            "partition_size": spec.partition_size,
            "extra_files": dict(extra_files or {}),
        }
        with _Pool(jobs if len(work) + len(wanted) > CHUNK else 1, ctx) as pool:
            # Phase 1: identities, recorded in the ledger as they arrive.
            chunks = [work[i : i + CHUNK] for i in range(0, len(work), CHUNK)]
            done, last_sync = 0, time.monotonic()
            for batch in pool.map(_issue_chunk, chunks):
                for row in batch:
                    done += 1
                    thing, serial = row[0], row[1]
                    dup = store.duplicate_of(thing, row[7], row[8], row[6])
                    if dup:
                        result.refused.append(
                            f"{thing} (serial {serial}): {dup}; nothing written for it"
                        )
                        result.refused_serials.add(serial)
                        wanted.remove(thing)
                        continue
                    config = dict(config_doc, thing_name=thing)
                    store.add_entry(
                        DeviceEntry(*row[:11], "active", row[11], row[12], config), row[13]
                    )
                    result.issued += 1
                now = time.monotonic()
                store.flush(sync=now - last_sync >= SYNC_EVERY_S)
                last_sync = now if now - last_sync >= SYNC_EVERY_S else last_sync
                if progress:
                    progress("identities", done, len(work))
            store.flush(sync=True)
            result.manifest_csv, result.manifest_json = store.write_manifests()
            result.identity_seconds = time.monotonic() - t0
            # Phase 2: images and trees, from the ledger, for every wanted device lacking one.
            t1 = time.monotonic()
            todo = []
            if images or trees:
                have_img = {p.name for p in store.images_dir.glob("*.littlefs.bin")}
                for thing in wanted:
                    need_img = images and f"{thing}.littlefs.bin" not in have_img
                    need_tree = trees and not (store.device_dir(thing) / CERT_FILE).exists()
                    if need_img or need_tree:
                        todo.append((thing, asdict(store.devices[thing]), need_img, need_tree))
            if todo:
                if images:
                    store.images_dir.mkdir(parents=True, exist_ok=True)
                if trees:
                    store.devices_dir.mkdir(parents=True, exist_ok=True)
                chunks2 = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
                flags = {t: (i, tr) for t, _f, i, tr in todo}
                done = 0
                for batch in pool.map(_artifact_chunk, chunks2):
                    for thing, err in batch:
                        done += 1
                        if err:
                            result.refused.append(f"{thing}: image or tree not written: {err}")
                            continue
                        result.images += flags[thing][0]
                        result.trees += flags[thing][1]
                    if progress:
                        progress("images", done, len(todo))
            if todo:  # the image column
                result.manifest_csv, result.manifest_json = store.write_manifests()
            result.artifact_seconds = time.monotonic() - t1
    result.seconds = time.monotonic() - t0
    return result


__all__ = [
    "BoardFilesystem",
    "FleetError",
    "FleetResult",
    "FleetSpec",
    "Preview",
    "StoreError",
    "device_files",
    "preview_fleet",
    "provision_fleet",
    "write_tree",
]


@dataclass
class Preview:
    """What a run would do, without doing it (``--dry-run``)."""

    new: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def preview_fleet(records: Iterable[DeviceRecord], out: Path) -> Preview:
    """Check records against the ledger in ``out`` (read-only): new, known, refused."""
    store = FleetStore(Path(out))
    pv = Preview()
    for rec in records:
        verdict, why = _precheck(store, rec)
        if verdict == "refuse":
            pv.refused[rec.serial] = why or ""
        elif verdict == "known":
            pv.known.append(rec.thing_name)
        else:
            pv.new.append(rec.thing_name)
    return pv
