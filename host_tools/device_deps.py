"""Device-side packages: download once, check the pinned hash, unpack into a cache.

The list lives in firmware/deps.json. umqtt.simple 1.3.4 is on PyPI only as an sdist
that pip refuses (no setup.py), so the tarball is fetched from the package index's file
URL and checked against its SHA-256 before anything in it is used.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tarfile
import urllib.request
from pathlib import Path

from host_tools.errors import UserError
from host_tools.paths import FIRMWARE, cache_dir

log = logging.getLogger(__name__)
DEPS_FILE = FIRMWARE / "deps.json"


def packages() -> dict:
    return json.loads(DEPS_FILE.read_text())["packages"]


def _unpacked(name: str, pkg: dict) -> Path:
    return cache_dir() / "device" / f"{name}-{pkg['version']}-{pkg['sha256'][:12]}"


def fetch(timeout: float = 60.0) -> list[Path]:
    """Make sure every pinned package is downloaded, verified and unpacked.

    Returns:
        One directory per package, holding its files at their device paths.

    Raises:
        UserError: download failed or the hash does not match.
    """
    out = []
    for name, pkg in packages().items():
        dest = _unpacked(name, pkg)
        if not (dest / ".complete").exists():
            data = _download(name, pkg, timeout)
            _unpack(data, pkg["files"], dest)
            log.info("device package %s %s fetched and verified", name, pkg["version"])
        out.append(dest)
    return out


def _download(name: str, pkg: dict, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(pkg["url"], timeout=timeout) as r:
            data = r.read()
    except OSError as exc:
        raise UserError(f"cannot download device package {name}", str(exc), pkg["url"]) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != pkg["sha256"]:
        raise UserError(
            f"device package {name} failed its hash check",
            f"got sha256 {digest}, pinned {pkg['sha256']}",
            str(DEPS_FILE),
        )
    return data


def _unpack(data: bytes, files: dict[str, str], dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member, target in files.items():
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise UserError(f"{member} is not in the package", where=str(DEPS_FILE))
                path = tmp / target
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(f.read())
    except (tarfile.TarError, OSError, UserError):
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def device_files() -> dict[str, Path]:
    """Device path -> local file, for every file of every package (after fetch())."""
    out: dict[str, Path] = {}
    for name, pkg in packages().items():
        root = _unpacked(name, pkg)
        if not (root / ".complete").exists():
            raise UserError(f"device package {name} not fetched", where="thingkit deps fetch")
        for target in pkg["files"].values():
            out[target] = root / target
    return out
