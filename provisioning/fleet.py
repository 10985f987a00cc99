"""Bulk identities: one EC P-256 key and certificate per device, its config, its image.

``provision_fleet`` takes the allow list (records with thing names, see
:mod:`provisioning.manifest`) and works in two phases, each spread over one process per
core:

1. identities: for each device not yet in the ledger, a fresh EC P-256 key, a certificate
   (CN = thing name) from the issuing CA and the device's ``config.json``. Records are
   checked against the ledger first (serial, MAC, thing name). Workers, forked with the
   records and the CA key in memory, issue a task's devices one step at a time (keys,
   then certificates, then encodings: each step's code stays in the CPU caches) and write
   the ledger lines and manifest rows to a segment file of their own. The parent checks
   each new identity (certificate serial, key, fingerprint) against the ledger and the
   run so far, refuses a duplicate (nothing is written for it), copies the other lines
   from the segment to the end of the ledger (key and certificate in the same line) and
   fsyncs it every SYNC_EVERY_S and at the end; then it writes the manifests;
2. artifacts, from the ledger only: the littlefs image of each device's filesystem
   (:mod:`provisioning.image`) and, if asked, its filesystem tree under ``devices/``.
   Each is written under a temporary name and renamed.

A re-run resumes: devices in the ledger are never issued again; missing images or trees
are rebuilt from the ledger. An interruption (even ``kill -9`` of the run and its workers)
loses at most the identities not yet copied to the ledger: they were in segments only,
never handed out, and the segments are deleted when the directory is next opened. Only
the parent writes the ledger, so a line cut short can only be its last one, which the
next run drops.

Ledger lines and manifest rows are built with f-strings, not ``json.dumps``/``csv``,
when every text field is printable ASCII without ``"``, ``\\`` or ``,`` (
``manifest.parse_records`` accepts printable ASCII, these three included); any other
record goes through
``json.dumps`` and ``csv``. Tests check both give the bytes those modules write.

Example::

    board = load_board("esp32-devkitc")                    # host_tools.boards.registry
    spec = FleetSpec.for_board(endpoint, board)            # vfs 0x200000 + 2 MiB

    result = provision_fleet(ca, spec, records, Path("out/batch-7"), server_ca_der)
    print(result.summary())
"""

from __future__ import annotations

import base64
import binascii
import collections
import gc
import hashlib
import json
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import wait as mp_wait
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
from provisioning.store import (
    DeviceEntry,
    FleetStore,
    IssuedBatch,
    StoreError,
    manifest_csv_row,
    manifest_json_row,
)

# Devices per task sent to a worker (at most): large enough to amortise the IPC, small
# enough for a smooth progress bar and little lost work on an interruption. With several
# workers, tasks shrink towards the end of a run, down to MIN_CHUNK.
CHUNK = 256
MIN_CHUNK = 16
# Below this many devices a run stays in one process (starting workers costs more).
MIN_JOBS_WORK = 64
# The ledger is written after every task and fsync'd at least this often, and at the end:
# often enough that the last fsync, which the run waits for, has little left to write.
SYNC_EVERY_S = 0.05
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

# Text that JSON and CSV both carry as is: printable ASCII without '"', '\' or ','. A record
# whose fields are all such text gets its ledger line and manifest rows from f-strings;
# any other record (a caller's own records need not have passed manifest.parse_records)
# goes through json.dumps and csv, which escape it.
_PLAIN = re.compile(r"[\x20\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]*").fullmatch
_THING = "@@thing@@"  # where the thing name goes in the config template
_DER = serialization.Encoding.DER
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
_SEC1 = serialization.PrivateFormat.TraditionalOpenSSL
_NOENC = serialization.NoEncryption()


def _init_worker(ctx: dict, index: int = 0) -> None:
    """Set up worker ``index``: the issuing CA (key passed in memory only), its segment."""
    _W.clear()
    _W.update(ctx)
    if ctx.get("issuing_key"):
        key = serialization.load_der_private_key(ctx["issuing_key"], password=None)
        cert = x509.load_der_x509_certificate(ctx["issuing_cert"])
        root = x509.load_der_x509_certificate(ctx["root_cert"])
        ca = CertificateAuthority(Path(ctx["ca_dir"]), root, KeyPair(key, cert))  # type: ignore[arg-type]
        _W["ca"] = ca
        # One certificate profile (and validity) for this worker's whole share.
        _W["issue"] = ca.leaf_issuer(Usage.CLIENT, ctx["leaf_days"])
    if ctx.get("segments"):
        _W["segment"] = ctx["segments"][index]
        _W["segment_end"] = 0


def _issue_range(bounds: tuple[int, int]) -> IssuedBatch:
    """Issue identities for ``work[start:stop]`` (the records, inherited from the parent).

    The ledger lines go to this worker's segment file, followed by the devices' manifest
    rows (pickled), in one write. The parent gets where they are and the values it checks
    and indexes (see :class:`provisioning.store.IssuedBatch`), and copies the lines it
    accepts into the ledger.
    """
    start, stop = bounds
    recs = _W["work"][start:stop]
    issue = _W["issue"]
    cfg_head, cfg_tail = _W["config_parts"]
    sha256, b64, plain = hashlib.sha256, binascii.b2a_base64, _PLAIN
    # One step at a time over the whole task rather than one device at a time: each step's
    # code stays in the CPU caches (measured: a sixth less CPU per device than interleaved).
    things = [r.thing_name for r in recs]
    keys = [new_key() for _ in recs]
    pubs = [k.public_key() for k in keys]
    certs = issue.many(things, pubs)
    cert_ders = [c.public_bytes(_DER) for c in certs]
    key_ders = [k.private_bytes(_DER, _SEC1, _NOENC) for k in keys]
    spki_ders = [k.public_bytes(_DER, _SPKI) for k in pubs]
    cert_serials = [f"{c.serial_number:x}" for c in certs]
    fps = [sha256(d).hexdigest() for d in cert_ders]
    spkis = [sha256(d).hexdigest() for d in spki_ders]
    key_b64s = [b64(d, newline=False).decode() for d in key_ders]
    cert_b64s = [b64(d, newline=False).decode() for d in cert_ders]
    if certs and not _W.get("not_after"):  # one validity for the whole worker
        _W["not_after"] = certs[0].not_valid_after_utc.isoformat()
        _W["issued_at"] = certs[0].not_valid_before_utc.isoformat()
    not_after, issued_at = _W.get("not_after", ""), _W.get("issued_at", "")
    serials = [r.serial for r in recs]
    macs = [r.mac for r in recs]
    lines: list[str] = []
    csv_rows: list[str] = []
    json_rows: list[str] = []
    for i, rec in enumerate(recs):
        thing, serial, mac = things[i], serials[i], macs[i]
        model, hw_rev, mfg_date = rec.model, rec.hw_rev, rec.mfg_date
        cs, fp, spki = cert_serials[i], fps[i], spkis[i]
        if plain(f"{thing}{serial}{mac}{model}{hw_rev}{mfg_date}"):
            lines.append(
                f'{{"event":"issued","thing_name":"{thing}","serial":"{serial}","mac":"{mac}",'
                f'"model":"{model}","hw_rev":"{hw_rev}","mfg_date":"{mfg_date}",'
                f'"cert_serial":"{cs}","fingerprint":"{fp}","spki":"{spki}",'
                f'"not_after":"{not_after}","issued_at":"{issued_at}","key":"{key_b64s[i]}",'
                f'"cert":"{cert_b64s[i]}","config":{cfg_head}"{thing}"{cfg_tail}}}\n'
            )
            csv_rows.append(
                f"{thing},{serial},{mac},{model},{hw_rev},{mfg_date},{cs},{fp},{not_after},active,"
            )
            json_rows.append(
                f'{{"thing_name": "{thing}", "serial": "{serial}", "mac": "{mac}", '
                f'"model": "{model}", "hw_rev": "{hw_rev}", "mfg_date": "{mfg_date}", '
                f'"cert_serial": "{cs}", "fingerprint": "{fp}", "not_after": "{not_after}", '
                '"status": "active", "image": ""}'
            )
        else:
            line, row = _escaped(
                (thing, serial, mac, model, hw_rev, mfg_date),
                (cs, fp, spki, not_after, issued_at, key_b64s[i], cert_b64s[i]),
            )
            lines.append(line)
            csv_rows.append(manifest_csv_row(row))
            json_rows.append(manifest_json_row(row))
    text = "".join(lines)
    blob = text.encode()
    # Lines are ASCII (json.dumps escapes everything else), so characters are bytes.
    lens = list(map(len, lines)) if len(blob) == len(text) else [len(x.encode()) for x in lines]
    rows = pickle.dumps((csv_rows, json_rows), protocol=pickle.HIGHEST_PROTOCOL)
    fd, offset = _W["segment"], _W["segment_end"]
    view, at = memoryview(blob + rows), offset
    while view:
        n = os.pwrite(fd, view, at)
        view, at = view[n:], at + n
    _W["segment_end"] = at
    return IssuedBatch(
        fd,
        offset,
        lens,
        things,
        serials,
        macs,
        cert_serials,
        fps,
        spkis,
        rows_at=offset + len(blob),
        rows_len=len(rows),
    )


def _escaped(rec: tuple, ident: tuple) -> tuple[str, dict]:
    """The ledger line and manifest row of a record whose text needs escaping."""
    thing, serial, mac, model, hw_rev, mfg_date = rec
    cs, fp, _spki, not_after, *_ = ident
    row = {
        "thing_name": thing,
        "serial": serial,
        "mac": mac,
        "model": model,
        "hw_rev": hw_rev,
        "mfg_date": mfg_date,
        "cert_serial": cs,
        "fingerprint": fp,
        "not_after": not_after,
        "status": "active",
        "image": "",
    }
    return _escaped_line(rec, ident), row


def _escaped_line(rec: tuple, ident: tuple) -> str:
    """The ledger line of a record whose text needs escaping (the slow path)."""
    thing, serial, mac, model, hw_rev, mfg_date = rec
    cs, fp, spki, not_after, issued_at, key_b64, cert_b64 = ident
    cfg_head, cfg_tail = _W["config_parts"]
    doc = {
        "event": "issued",
        "thing_name": thing,
        "serial": serial,
        "mac": mac,
        "model": model,
        "hw_rev": hw_rev,
        "mfg_date": mfg_date,
        "cert_serial": cs,
        "fingerprint": fp,
        "spki": spki,
        "not_after": not_after,
        "issued_at": issued_at,
        "key": key_b64,
        "cert": cert_b64,
    }
    meta = json.dumps(doc, separators=(",", ":"))
    return f'{meta[:-1]},"config":{cfg_head}{json.dumps(thing)}{cfg_tail}}}\n'


def _config_parts(config_doc: dict) -> tuple[str, str]:
    """The device config as compact JSON split around the thing name's string."""
    text = json.dumps(dict(config_doc, thing_name=_THING), separators=(",", ":"))
    head, sep, tail = text.partition(f'"{_THING}"')
    if not sep or _THING in tail:
        raise FleetError("the device configuration holds the text @@thing@@; change it")
    return head, tail


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
_TASKS: dict[str, Callable] = {"issue": _issue_range, "artifacts": _artifact_chunk}


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


def _worker_main(conn, ctx: dict, index: int) -> None:
    """A worker process: run the tasks the parent sends until it sends None or goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the run
    gc.freeze()  # what was inherited from the parent stays out of collections
    _init_worker(ctx, index)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        name, arg = msg
        try:
            reply = ("ok", _TASKS[name](arg))
        except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
            reply = ("error", exc)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            break
        except Exception as exc:  # noqa: BLE001 - an exception that does not pickle
            conn.send(("error", RuntimeError(f"worker {index}: {reply[1]!r} ({exc})")))


class _Pool:
    """Run tasks in worker processes (or in this one for jobs=1), results as they come.

    Workers are forked: what the context holds (the records to issue, the CA key, the
    segment files) is inherited, not sent, and an identity task is a name and an index
    range. Each worker has its own pipe and up to two of those queued, so it never waits
    for the parent.
    (``concurrent.futures.ProcessPoolExecutor`` costs the parent about 0.4 ms of CPU per
    task in its threads and queues; here both cores are for the workers.)
    """

    def __init__(self, jobs: int, ctx: dict) -> None:
        self.jobs, self.ctx = jobs, ctx
        self.conns: list = []
        self.procs: list = []

    def __enter__(self) -> Self:
        if self.jobs > 1:
            mp = multiprocessing.get_context("fork")
            try:
                for i in range(self.jobs):
                    parent_end, child_end = mp.Pipe()
                    proc = mp.Process(
                        target=_worker_main, args=(child_end, self.ctx, i), daemon=True
                    )
                    proc.start()
                    child_end.close()
                    self.conns.append(parent_end)
                    self.procs.append(proc)
            except BaseException:
                self.__exit__()
                raise
        else:
            _init_worker(self.ctx, 0)
        return self

    def __exit__(self, exc_type: type[BaseException] | None = None, *exc: object) -> None:
        for conn in self.conns:
            try:
                conn.send(None)  # a worker told already has gone, or ignores it
            except OSError:
                pass
        for proc in self.procs:
            if exc_type is not None:  # interrupted or failed: their work is not wanted
                proc.kill()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()
        self.conns, self.procs = [], []
        _W.clear()  # jobs=1 ran here: drop the records and the CA key

    def map(
        self,
        name: str,
        tasks: list,
        last: bool = False,
        meanwhile: Callable[[], None] | None = None,
        queued: int = 2,
    ) -> Iterable:
        """Run ``_TASKS[name]`` on each task; yield results as they come.

        Args:
            name: the task function.
            tasks: its arguments.
            last: the pool has nothing more to do after these, so each worker is told to
                end as soon as it has no task left (it exits while the parent finishes).
            meanwhile: called once the workers have their first tasks.
            queued: tasks sent ahead to each worker. A task larger than the pipe's buffer
                blocks the parent until its worker reads it: send those one at a time.
        """
        fn = _TASKS[name]
        if not self.conns:
            if meanwhile:
                meanwhile()
            for t in tasks:
                yield fn(t)
            return
        todo = collections.deque(tasks)
        busy = dict.fromkeys(self.conns, 0)
        for conn in self.conns:
            while todo and busy[conn] < queued:
                conn.send((name, todo.popleft()))
                busy[conn] += 1
        if meanwhile:
            meanwhile()
        while any(busy.values()):
            for conn in mp_wait([c for c, n in busy.items() if n]):
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError) as exc:
                    raise FleetError("a worker process ended unexpectedly") from exc
                busy[conn] -= 1
                if todo:
                    conn.send((name, todo.popleft()))
                    busy[conn] += 1
                elif last and not busy[conn]:
                    conn.send(None)
                if kind == "error":
                    raise value
                yield value


class _Background(threading.Thread):
    """Run ``fn(*args, **kwargs)`` in a thread; :meth:`wait` joins it and re-raises."""

    def __init__(self, fn: Callable, *args: object, **kwargs: object) -> None:
        super().__init__(daemon=True)
        self._call = (fn, args, kwargs)
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        fn, args, kwargs = self._call
        try:
            fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised by wait()
            self._error = exc

    def wait(self) -> None:
        self.join()
        if self._error is not None:
            raise self._error


def _ranges(n: int, jobs: int, chunk: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into tasks: ``chunk`` each for one process; for several, large
    tasks first and smaller ones (down to MIN_CHUNK) towards the end, so that the
    processes finish together."""
    out, i = [], 0
    while i < n:
        size = chunk if jobs <= 1 else max(MIN_CHUNK, min(chunk, (n - i) // (jobs * 4)))
        out.append((i, min(n, i + size)))
        i += size
    return out


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
        if store.read_spec() is not None:  # refuse another fleet's directory first
            _check_spec(store, spec_doc)
        work: list[DeviceRecord] = []
        config_doc = spec.device_config(_THING).to_json()
        if not store.devices:  # a new fleet: nothing to check against
            work = records
        else:
            for rec in records:
                verdict, why = _precheck(store, rec)
                if verdict == "refuse":
                    result.refused.append(why or "")
                    result.refused_serials.add(rec.serial)
                elif verdict == "known":
                    result.skipped += 1
                else:
                    work.append(rec)
        jobs = jobs if len(work) > MIN_JOBS_WORK else 1
        segments = store.open_segments(jobs)
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
            "config_parts": _config_parts(config_doc),
            "work": work,
            "segments": segments,
            "full_images": full_images,
            "partition_size": spec.partition_size,
            "extra_files": dict(extra_files or {}),
        }
        try:
            with _Pool(jobs, ctx) as pool:

                def setup() -> None:  # while the workers issue; nothing is recorded before
                    _check_spec(store, spec_doc)
                    atomic_write(store.root / "server-ca.der", server_ca_der)
                    for rel, data in (extra_files or {}).items():
                        atomic_write(store.root / EXTRA_DIR / rel, data)

                # Phase 1: identities. Workers write ledger lines to their segments; each
                # task's accepted lines are copied into the ledger as its result arrives.
                done, last_sync = 0, time.monotonic()
                tasks = _ranges(len(work), pool.jobs, CHUNK)
                tail = 4 * MIN_CHUNK * pool.jobs
                for batch in pool.map("issue", tasks, last=not (images or trees), meanwhile=setup):
                    for i, why in store.add_issued(batch):
                        serial = batch.serials[i]
                        result.refused.append(
                            f"{batch.things[i]} (serial {serial}): {why}; nothing written for it"
                        )
                        result.refused_serials.add(serial)
                        result.issued -= 1
                    done += len(batch.things)
                    result.issued += len(batch.things)
                    now = time.monotonic()
                    # In the last tasks the parent only waits: sync each, so that the final
                    # sync has little to write.
                    left = len(work) - done
                    if left and (now - last_sync >= SYNC_EVERY_S or left <= tail):
                        store.flush(sync=True)
                        last_sync = now
                    if progress:
                        progress("identities", done, len(work))
                # The final sync runs while the manifests are written (they are derived from
                # the ledger and rewritten by every run); the run returns after both.
                syncing = _Background(store.flush, sync=True)
                result.manifest_csv, result.manifest_json = store.write_manifests()
                syncing.wait()
                result.identity_seconds = time.monotonic() - t0
                # Phase 2: images and trees, from the ledger, for every wanted device lacking one.
                t1 = time.monotonic()
                todo = []
                if images or trees:
                    have_img = {p.name for p in store.images_dir.glob("*.littlefs.bin")}
                    wanted = [
                        r.thing_name for r in records if r.serial not in result.refused_serials
                    ]
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
                    chunks2 = [todo[a:b] for a, b in _ranges(len(todo), pool.jobs, CHUNK)]
                    flags = {t: (i, tr) for t, _f, i, tr in todo}
                    done = 0
                    for batch in pool.map("artifacts", chunks2, last=True, queued=1):
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
        finally:
            store.close_segments()
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
