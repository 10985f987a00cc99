"""OTA update bundles: build, sign, parse and inspect (format: docs/ota_bundles.rst, "Format").

One file, read in order, so a device can check the signature before it takes any
payload::

    b"TKOTA1\\n\\0"    8 bytes magic
    u32 BE M          manifest length (at most MAX_MANIFEST)
    M bytes           manifest: canonical UTF-8 JSON (sorted keys, no spaces)
    64 bytes          ECDSA P-256 signature of SHA-256(manifest), raw r || s;
                      all zeros in an unsigned bundle (what ``build`` writes)
    payload           the files' bytes, concatenated in manifest order

Typical use::

    files = compile_app(FIRMWARE, version="1.2.0")            # device path -> .mpy bytes
    unsigned = build(files, version="1.2.0", boards=["sim"])
    signed = sign(unsigned, keys.load_key(path))
    report = inspect(signed, pubkey_der)                       # manifest, sizes, checks

The device side is firmware/tk/ota_bundle.py; both refuse the same things.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from host_tools.errors import UserError
from host_tools.ota import keys
from host_tools.ota.app_image import AppImage, read_app_image
from host_tools.paths import FIRMWARE

MAGIC = b"TKOTA1\n\0"
FORMAT = 1
MAX_MANIFEST = 8192
SIG_LEN = 64
UNSIGNED = bytes(SIG_LEN)
KINDS = ("app", "firmware")
FIRMWARE_FILE = "firmware.bin"
# Device paths in a bundle: '/'-separated names of [A-Za-z0-9_.-], no '.' or '..'.
_PATH_RE = re.compile(r"^(?!.*(?:^|/)\.{1,2}(?:/|$))[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*$")
MAX_PATH = 96
_VERSION_RE = re.compile(r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$")
_VERSION_LINE = re.compile(r'^VERSION = "[^"\n]*"$', re.MULTILINE)


class BundleError(UserError):
    """A bundle file is malformed (one line: what is wrong and where)."""


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.0"`` -> ``(1, 2, 0)``; versions compare as these tuples.

    Raises:
        UserError: not MAJOR.MINOR.PATCH of decimal integers.
    """
    m = _VERSION_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise UserError(f"version {text!r} is not MAJOR.MINOR.PATCH", "e.g. 1.2.0")
    return int(m[1]), int(m[2]), int(m[3])


def check_path(path: str, kind: str) -> None:
    """Refuse a device path a bundle must not carry (see module docstring).

    Raises:
        UserError: unsafe or unexpected path for this kind of bundle.
    """
    if not isinstance(path, str) or len(path) > MAX_PATH or not _PATH_RE.match(path):
        raise UserError(f"bundle path {path!r} is not a safe relative device path")
    if kind == "app" and not path.endswith(".mpy"):
        raise UserError(f"app bundle path {path!r} is not a .mpy module")
    if kind == "firmware" and path != FIRMWARE_FILE:
        raise UserError(f"firmware bundle path {path!r} must be {FIRMWARE_FILE}")


def canonical_json(obj: object) -> bytes:
    """The manifest's byte form: sorted keys, no spaces, ASCII (so it is the same everywhere)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# -- building ---------------------------------------------------------------------------
def app_sources(source: Path = FIRMWARE) -> dict[str, Path]:
    """Device path (.py) -> source file of an app bundle: firmware/ without main.py.

    ``main.py`` is the boot selector: it stays in the filesystem and is never updated by
    an app bundle. Includes the pinned device packages (umqtt.simple), as a kit gets them.
    """
    from host_tools.kit.sim import firmware_files

    source = Path(source)
    if not source.is_dir():
        raise UserError(f"firmware source {source} is not a directory")
    files = firmware_files(source)
    files.pop("main.py", None)
    if not files:
        raise UserError(f"no .py files under {source}")
    return files


def _source_text(rel: str, src: Path, version: str) -> bytes:
    # tk/version.py carries the version the device reports: make it the bundle's.
    data = src.read_bytes()
    if rel == "tk/version.py":
        text, n = _VERSION_LINE.subn(f'VERSION = "{version}"', data.decode())
        if n != 1:
            raise UserError(f'{src} has no line VERSION = "..." to set the version in')
        data = text.encode()
    return data


def compile_app(source: Path = FIRMWARE, version: str = "0.0.0") -> dict[str, bytes]:
    """Compile an app's modules with mpy-cross: device path (``tk/x.mpy``) -> bytes.

    ``tk/version.py`` is compiled with ``VERSION`` set to ``version``, so the installed
    app reports the version its manifest claims.

    Raises:
        UserError: no sources, or mpy-cross failed (its first error line is shown).
    """
    from host_tools.kit.sim import mpy_cross_binary

    parse_version(version)
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as d:
        for rel, src in app_sources(source).items():
            stage = Path(d) / rel
            stage.parent.mkdir(parents=True, exist_ok=True)
            stage.write_bytes(_source_text(rel, src, version))
            dest = stage.with_suffix(".mpy")
            r = subprocess.run(
                [mpy_cross_binary(), "-o", str(dest), "-s", rel, str(stage)],
                capture_output=True,
                text=True,
                check=False,
            )
            if r.returncode != 0:
                first = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise UserError(f"mpy-cross failed on {src}", first)
            out[rel[: -len(".py")] + ".mpy"] = dest.read_bytes()
    return dict(sorted(out.items()))


def firmware_image(source: Path) -> tuple[bytes, AppImage]:
    """The one file of a ``firmware`` bundle, checked: an ESP-IDF app image (MicroPython's
    ``.app-bin`` for the -OTA board variant) and what its app descriptor says.

    Raises:
        UserError: ``source`` is a directory, unreadable, or not an app image (a ROMFS
            image, garbage, a corrupt image): one line saying which.
    """
    source = Path(source)
    if source.is_dir():
        raise UserError(
            f"{source} is a directory; a firmware bundle takes one ESP-IDF app image file",
            "MicroPython's ESP32_GENERIC-OTA .app-bin; thingkit's own code goes in app bundles",
        )
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {source}", exc.strerror or str(exc)) from exc
    return data, read_app_image(data, where=str(source))


def runtime_version(info: AppImage, version: str | None = None) -> str:
    """A firmware bundle's version: the image's, as MAJOR.MINOR.PATCH.

    Raises:
        UserError: ``version`` given and not the one the image's descriptor says.
    """
    found = info.semver
    if version is not None and version != found:
        raise UserError(
            f"version {version} given, but the image's app descriptor says {info.version}",
            "leave --version out for a firmware bundle: it is read from the image",
        )
    return found


def make_manifest(
    files: dict[str, bytes],
    *,
    version: str,
    boards: list[str],
    kind: str = "app",
    min_version: str = "0.0.0",
    chips: list[str] | None = None,
    key_id: str = "",
    created: int | None = None,
    runtime: dict | None = None,
) -> dict:
    """The manifest for ``files`` (device path -> bytes, kept in the order given).

    ``created`` defaults to $SOURCE_DATE_EPOCH, else now (reproducible builds).
    ``runtime`` (firmware bundles): the image's app descriptor, ``{"version":
    "v1.28.0", "project_name": "micropython", "chip": "esp32"}``, shown by ``inspect``.

    Raises:
        UserError: bad version, kind, board list or path.
    """
    if kind not in KINDS:
        raise UserError(f"unknown bundle kind {kind!r}", "use app or firmware")
    if parse_version(min_version) > parse_version(version):
        raise UserError(f"min_version {min_version} is above version {version}")
    if not boards or not all(isinstance(b, str) and b for b in boards):
        raise UserError("a bundle needs at least one compatible board", "--boards sim,...")
    if not files:
        raise UserError("a bundle needs at least one file")
    for path in files:
        check_path(path, kind)
    if created is None:
        created = int(os.environ.get("SOURCE_DATE_EPOCH") or time.time())
    payload = hashlib.sha256()
    for data in files.values():
        payload.update(data)
    m: dict = {
        "format": FORMAT,
        "kind": kind,
        "version": version,
        "min_version": min_version,
        "boards": list(boards),
        "key_id": key_id,
        "files": [
            {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
            for p, d in files.items()
        ],
        "payload_size": sum(len(d) for d in files.values()),
        "payload_sha256": payload.hexdigest(),
        "created": int(created),
    }
    if chips:
        m["chips"] = list(chips)
    if runtime:
        m["runtime"] = dict(runtime)
    return m


def assemble(manifest: dict, payload: bytes, signature: bytes = UNSIGNED) -> bytes:
    """Header + manifest + signature + payload, as one bundle file."""
    mb = canonical_json(manifest)
    if len(mb) > MAX_MANIFEST:
        raise UserError(
            f"manifest is {len(mb)} bytes, over the {MAX_MANIFEST}-byte limit",
            "too many files in one bundle",
        )
    return MAGIC + struct.pack(">I", len(mb)) + mb + signature + payload


def build(files: dict[str, bytes], **manifest_args: object) -> bytes:
    """An unsigned bundle of ``files`` (see :func:`make_manifest` for the arguments)."""
    m = make_manifest(files, **manifest_args)  # type: ignore[arg-type]
    return assemble(m, b"".join(files.values()))


def build_from_source(
    source: Path = FIRMWARE,
    *,
    version: str | None,
    boards: list[str],
    kind: str = "app",
    min_version: str = "0.0.0",
    chips: list[str] | None = None,
    created: int | None = None,
) -> bytes:
    """An unsigned bundle: ``app`` compiles the firmware tree ``source`` into .mpy files
    at ``version``; ``firmware`` takes ``source`` as one ESP-IDF app image (checked with
    esptool) whose app descriptor gives the version (``version`` may be left None).

    Raises:
        UserError: no version for an app bundle, a firmware source that is not an app
            image, or a version that disagrees with the image's.
    """
    runtime = None
    if kind == "app":
        if version is None:
            raise UserError("an app bundle needs --version", "e.g. --version 1.2.0")
        files = compile_app(source, version)
    elif kind == "firmware":
        data, info = firmware_image(source)
        version = runtime_version(info, version)
        files = {FIRMWARE_FILE: data}
        runtime = {"version": info.version, "project_name": info.project_name, "chip": info.chip}
    else:
        raise UserError(f"unknown bundle kind {kind!r}", "use app or firmware")
    return build(
        files,
        version=version,
        boards=boards,
        kind=kind,
        min_version=min_version,
        chips=chips,
        created=created,
        runtime=runtime,
    )


# -- parsing ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Bundle:
    """A parsed bundle (header checked; payload length checked against the manifest)."""

    manifest: dict
    manifest_bytes: bytes
    signature: bytes
    payload: bytes = field(repr=False)

    @property
    def header_len(self) -> int:
        """Bytes before the payload: magic, length, manifest, signature."""
        return len(MAGIC) + 4 + len(self.manifest_bytes) + SIG_LEN

    @property
    def signed(self) -> bool:
        return self.signature != UNSIGNED

    def files(self) -> list[tuple[dict, bytes]]:
        """(manifest entry, bytes) of each file, in payload order."""
        out, pos = [], 0
        for f in self.manifest["files"]:
            out.append((f, self.payload[pos : pos + f["size"]]))
            pos += f["size"]
        return out


def _manifest_problem(m: object) -> str | None:
    if not isinstance(m, dict):
        return "manifest is not a JSON object"
    if m.get("format") != FORMAT:
        return f"manifest format {m.get('format')!r} is not {FORMAT}"
    need = {
        "kind": str,
        "version": str,
        "min_version": str,
        "boards": list,
        "key_id": str,
        "files": list,
        "payload_size": int,
        "payload_sha256": str,
        "created": int,
    }
    for k, t in need.items():
        if not isinstance(m.get(k), t):
            return f"manifest field {k!r} missing or not {t.__name__}"
    try:
        if m["kind"] not in KINDS:
            return f"unknown kind {m['kind']!r}"
        parse_version(m["version"])
        parse_version(m["min_version"])
        total = 0
        for f in m["files"]:
            if not isinstance(f, dict) or not isinstance(f.get("size"), int) or f["size"] < 0:
                return "a file entry has no valid size"
            if not isinstance(f.get("sha256"), str) or len(f["sha256"]) != 64:
                return f"file {f.get('path')!r} has no valid sha256"
            check_path(f.get("path"), m["kind"])
            total += f["size"]
    except UserError as exc:
        return exc.what
    if total != m["payload_size"]:
        return f"file sizes add up to {total}, payload_size says {m['payload_size']}"
    return None


def parse(data: bytes, where: str = "bundle") -> Bundle:
    """Parse and check a bundle's structure (not its signature or hashes: see inspect).

    Raises:
        BundleError: bad magic, truncated, manifest too large, bad JSON, a manifest that
            breaks the format rules, or a payload of the wrong length.
    """
    if len(data) < len(MAGIC):
        raise BundleError(f"{where} is truncated: {len(data)} bytes, no header")
    if data[: len(MAGIC)] != MAGIC:
        raise BundleError(f"{where} is not an OTA bundle (bad magic {data[:8]!r})")
    if len(data) < len(MAGIC) + 4:
        raise BundleError(f"{where} is truncated inside the header")
    (mlen,) = struct.unpack(">I", data[8:12])
    if mlen > MAX_MANIFEST:
        raise BundleError(f"{where} manifest length {mlen} is over {MAX_MANIFEST} bytes")
    hlen = 12 + mlen + SIG_LEN
    if len(data) < hlen:
        raise BundleError(f"{where} is truncated: {len(data)} bytes, header needs {hlen}")
    mb = bytes(data[12 : 12 + mlen])
    try:
        manifest = json.loads(mb.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{where} manifest is not valid JSON ({exc})") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise BundleError(f"{where} manifest is invalid: {problem}")
    payload = bytes(data[hlen:])
    size = manifest["payload_size"]
    if len(payload) < size:
        raise BundleError(f"{where} is truncated: payload has {len(payload)} of {size} bytes")
    if len(payload) > size:
        raise BundleError(f"{where} has {len(payload) - size} bytes after the payload")
    return Bundle(manifest, mb, bytes(data[12 + mlen : hlen]), payload)


def read_bundle(path: Path) -> Bundle:
    """Read and :func:`parse` a bundle file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read bundle {path}", exc.strerror or str(exc)) from exc
    return parse(data, where=str(path))


def sign(data: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """Sign a bundle (signed or not): set ``key_id`` in its manifest and sign it.

    Raises:
        BundleError: the input is not a well-formed bundle.
    """
    b = parse(data)
    pub = keys.public_der(key)
    m = dict(b.manifest, key_id=keys.key_id(pub))
    mb = canonical_json(m)
    return assemble(m, b.payload, keys.sign_digest(key, hashlib.sha256(mb).digest()))


def payload_problems(b: Bundle) -> list[str]:
    """Files (and the whole payload) whose SHA-256 differs from the manifest's."""
    bad = [f["path"] for f, d in b.files() if hashlib.sha256(d).hexdigest() != f["sha256"]]
    if hashlib.sha256(b.payload).hexdigest() != b.manifest["payload_sha256"]:
        bad.append("(whole payload)")
    return bad


def inspect(data: bytes, pubkey_der: bytes | None = None, where: str = "bundle") -> dict:
    """What a bundle holds and whether it checks out, as a JSON-able report.

    Keys: ``manifest``; ``sizes`` (header, manifest, signature, payload, total);
    ``signed``; ``signature`` ("valid", "invalid", "unsigned", "wrong_key" or
    "not_checked" without a public key); ``payload_ok`` and ``payload_problems``;
    ``ok`` (every check that could be made passed).

    Raises:
        BundleError: the file is not a well-formed bundle (see :func:`parse`).
    """
    b = parse(data, where)
    m = b.manifest
    if not b.signed:
        sig = "unsigned"
    elif pubkey_der is None:
        sig = "not_checked"
    elif m["key_id"] != keys.key_id(pubkey_der):
        sig = "wrong_key"
    else:
        good = keys.verify_digest(
            pubkey_der, hashlib.sha256(b.manifest_bytes).digest(), b.signature
        )
        sig = "valid" if good else "invalid"
    problems = payload_problems(b)
    ok = not problems and sig in ("valid", "not_checked")
    return {
        "manifest": m,
        "sizes": {
            "header": b.header_len,
            "manifest": len(b.manifest_bytes),
            "signature": SIG_LEN,
            "payload": len(b.payload),
            "total": len(data),
        },
        "signed": b.signed,
        "signature": sig,
        "pubkey_id": keys.key_id(pubkey_der) if pubkey_der is not None else None,
        "payload_ok": not problems,
        "payload_problems": problems,
        "ok": ok,
    }


def write_file(path: Path, data: bytes) -> None:
    """Write a bundle file atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


__all__ = [
    "MAGIC",
    "MAX_MANIFEST",
    "Bundle",
    "BundleError",
    "assemble",
    "build",
    "build_from_source",
    "canonical_json",
    "compile_app",
    "firmware_image",
    "inspect",
    "make_manifest",
    "parse",
    "parse_version",
    "read_bundle",
    "sign",
    "write_file",
]
