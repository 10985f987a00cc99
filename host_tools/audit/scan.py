"""``audit()``: walk files and device configs, apply the rules, drop documented exceptions.

Usage::

    report = audit()                          # the repository's default paths
    report = audit([Path("firmware")], fleets=[Path("fleet")])
    for f in report.findings:
        print(f.line_str())                   # path:line: rule: message
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from host_tools import doc_urls
from host_tools.audit import allowlist as al
from host_tools.audit import fleet
from host_tools.audit.rules import Finding, private_keys, scan_text
from host_tools.errors import UserError
from host_tools.paths import REPO

# What `thingkit audit` scans with no paths: everything that ships or makes a device.
DEFAULT_PATHS = ("firmware", "boards", "host_tools", "provisioning", "docs")
# Never scanned: state, environments, caches and build output.
SKIP_DIRS = {
    ".git",
    ".venv",
    "venv",
    ".thingkit",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "node_modules",
    "_build",
    "build",
    "dist",
    "reports",
}
MAX_BYTES = 4 * 1024 * 1024
_KEY_SUFFIXES = {".der", ".key", ".pk8", ".p8", ".pem", ".bin"}
_KEY_CONTAINERS = {".p12", ".pfx"}


@dataclass
class Report:
    """What one audit found.

    Attributes:
        findings: rule violations, sorted by path and line.
        excused: findings an allow-list entry excuses, with the entry.
        stale: allow-list entries that excused nothing.
        files: text and binary files read.
        configs: device configs checked.
        seconds: wall time.
    """

    findings: list[Finding] = field(default_factory=list)
    excused: list[tuple[Finding, al.Allow]] = field(default_factory=list)
    stale: list[al.Allow] = field(default_factory=list)
    files: int = 0
    configs: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "findings": [f.to_json() for f in self.findings],
            "excused": [dict(f.to_json(), reason=a.reason) for f, a in self.excused],
            "stale_allow": [a.describe() for a in self.stale],
            "files": self.files,
            "configs": self.configs,
            "seconds": round(self.seconds, 3),
        }


def shown(path: Path) -> str:
    """A path as printed: relative to the working directory when under it."""
    p = Path(path).resolve()
    for base in (Path.cwd().resolve(), REPO):
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            continue
    return str(path)


def _rel(path: Path, root: Path) -> str | None:
    """``path`` relative to ``root``; a relative path is taken from the working
    directory if it exists there, else from the repository (audit runs from anywhere)."""
    p = Path(path)
    if not p.is_absolute():
        p = Path.cwd() / p if (Path.cwd() / p).exists() else REPO / p
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def walk(paths: Iterable[Path]) -> Iterator[Path]:
    """Files under the given paths, skipping state, environments, caches, build output."""
    for root in paths:
        root = Path(root)
        if root.is_file():
            yield root
            continue
        for d, dirs, files in os.walk(root):
            dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.endswith(".egg-info"))
            for name in sorted(files):
                p = Path(d) / name
                if not p.is_symlink():
                    yield p


def read_text(path: Path) -> tuple[str | None, bytes]:
    """(text, raw bytes): text is None for a binary or oversized file."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return None, b""
        data = path.read_bytes()
    except OSError:
        return None, b""
    if b"\0" in data[:8192]:
        return None, data
    try:
        return data.decode("utf-8"), data
    except UnicodeDecodeError:
        return None, data


def binary_key(path: Path, data: bytes) -> Finding | None:
    """A DER private key (or PKCS#12 container) in a binary file."""
    suffix = path.suffix.lower()
    if suffix in _KEY_CONTAINERS:
        return Finding(shown(path), 1, "appb.private_key", "PKCS#12 key container", "PKCS#12")
    if suffix not in _KEY_SUFFIXES or not data or len(data) > 16384:
        return None
    try:
        serialization.load_der_private_key(data, password=None)
    except TypeError:  # encrypted: still a private key
        pass
    except (ValueError, Exception):  # noqa: BLE001 - anything else is not a key
        return None
    return Finding(shown(path), 1, "appb.private_key", "DER private key", "PRIVATE KEY")


def _docs_host() -> str:
    try:
        return (urlsplit(doc_urls.base_url()).hostname or "").lower()
    except UserError:
        return ""


def audit(
    paths: Iterable[Path] | None = None,
    fleets: Iterable[Path] = (),
    allow_file: Path | None = None,
    key_sweep: Iterable[Path] | None = None,
    root: Path = REPO,
) -> Report:
    """Scan files and device configs for Appendix B violations.

    Args:
        paths: files or directories to scan with every text rule (default: the
            repository's firmware/, boards/, host_tools/, provisioning/, docs/).
        fleets: directories of device filesystems (kit flash dirs, provisioned bundles);
            each ``config.json`` under them is checked for non-certificate credential
            fields, and their certificates for reuse across devices.
        allow_file: the allow-list (default: host_tools/audit/allowlist.json).
        key_sweep: further paths searched for private keys only (default with default
            paths: the whole repository; otherwise none).
        root: the directory allow-list paths are relative to (the repository).

    Raises:
        UserError: a path does not exist, or the allow-list is invalid.
    """
    t0 = time.monotonic()
    default = paths is None
    paths = [REPO / p for p in DEFAULT_PATHS] if default else [Path(p) for p in paths]
    fleets = [Path(f) for f in fleets]
    for p in [*([] if default else paths), *fleets]:
        if not p.exists():
            raise UserError(f"audit: no such file or directory: {p}")
    sweep = [REPO] if default and key_sweep is None else [Path(p) for p in key_sweep or ()]
    allows = al.load(allow_file)
    docs_host = _docs_host()
    report = Report()
    raw: list[Finding] = []
    seen: set[Path] = set()
    configs: list[Path] = []

    for path in walk(p for p in paths if p.exists()):
        seen.add(path.resolve())
        report.files += 1
        text, data = read_text(path)
        if text is None:
            f = binary_key(path, data)
            raw += [f] if f else []
            continue
        raw += scan_text(shown(path), text, docs_host)
        if path.name == fleet.CONFIG_NAME:
            configs.append(path)
    for path in walk(sweep):
        if path.resolve() in seen:
            continue
        report.files += 1
        text, data = read_text(path)
        f = binary_key(path, data) if text is None else None
        raw += [f] if f else private_keys(shown(path), text or "")

    device_configs = fleet.find_configs(configs + fleets)
    report.configs = len(device_configs)
    cfg_findings = fleet.check_configs(device_configs, shown)
    # A credential field already reported as such need not be reported twice.
    cred_lines = {(f.path, f.line) for f in cfg_findings if f.rule == "appb.non_cert_credential"}
    raw = [
        f
        for f in raw
        if not (f.rule == "appb.hardcoded_credential" and (f.path, f.line) in cred_lines)
    ]
    raw += cfg_findings

    for f in raw:
        a = al.allowed(allows, _rel(Path(f.path), root), f)
        if a:
            report.excused.append((f, a))
        else:
            report.findings.append(f)
    report.findings.sort(key=lambda f: (f.path, f.line, f.rule))
    report.stale = [a for a in allows if not a.used] if default else []
    report.seconds = time.monotonic() - t0
    return report
