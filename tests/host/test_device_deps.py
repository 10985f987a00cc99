"""Tests for device package fetching: hash pinning, unpacking, caching (no network)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

import pytest

from host_tools import device_deps
from host_tools.errors import UserError

URL = "https://files.example.invalid/micropython-demo-1.0.tar.gz"
MOD = b"# demo module\ndef hello():\n    return 42\n"
INIT = b""


def make_tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TARBALL = make_tarball(
    {
        "demo-1.0/demo/mod.py": MOD,
        "demo-1.0/demo/__init__.py": INIT,
        "demo-1.0/setup.py": b"raise SystemExit('not for the device')\n",
        "demo-1.0/README": b"read me\n",
    }
)
SHA = hashlib.sha256(TARBALL).hexdigest()


def pkg(sha: str = SHA, files: dict[str, str] | None = None) -> dict:
    return {
        "demo.pkg": {
            "version": "1.0",
            "url": URL,
            "sha256": sha,
            "files": files
            or {
                "demo-1.0/demo/mod.py": "lib/demo/mod.py",
                "demo-1.0/demo/__init__.py": "lib/demo/__init__.py",
            },
        }
    }


class FakeResponse:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("THINGKIT_CACHE", str(root))
    return root


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float]]:
    """Every urlopen call (url, timeout); each returns TARBALL."""
    calls: list[tuple[str, float]] = []

    def fake_urlopen(url: str, timeout: float = 0) -> FakeResponse:
        calls.append((url, timeout))
        return FakeResponse(TARBALL)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return calls


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def test_hash_mismatch_raises_and_unpacks_nothing(
    cache: Path, downloads: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned = hashlib.sha256(b"something else").hexdigest()
    monkeypatch.setattr(device_deps, "packages", lambda: pkg(sha=pinned))
    with pytest.raises(UserError) as err:
        device_deps.fetch()
    msg = err.value.line()
    assert msg.startswith("device package demo.pkg failed its hash check")
    assert f"got sha256 {SHA}, pinned {pinned}" in msg
    assert str(device_deps.DEPS_FILE) in msg
    assert downloads == [(URL, 60.0)]
    assert _tree(cache) == []


def test_matching_hash_unpacks_listed_files(
    cache: Path, downloads: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device_deps, "packages", lambda: pkg())
    dirs = device_deps.fetch(timeout=7.0)
    dest = cache / "device" / f"demo.pkg-1.0-{SHA[:12]}"
    assert dirs == [dest]
    assert downloads == [(URL, 7.0)]
    assert (dest / "lib/demo/mod.py").read_bytes() == MOD
    assert (dest / "lib/demo/__init__.py").read_bytes() == INIT
    # Only the listed files (and the completion mark): no setup.py, README, temp dir.
    assert _tree(dest) == [
        ".complete",
        "lib",
        "lib/demo",
        "lib/demo/__init__.py",
        "lib/demo/mod.py",
    ]
    assert _tree(cache / "device") == [f"demo.pkg-1.0-{SHA[:12]}"] + [
        f"demo.pkg-1.0-{SHA[:12]}/{p}" for p in _tree(dest)
    ]


def test_second_fetch_does_not_download(
    cache: Path, downloads: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device_deps, "packages", lambda: pkg())
    first = device_deps.fetch()
    second = device_deps.fetch()
    assert first == second
    assert len(downloads) == 1


def test_incomplete_unpack_is_fetched_again(
    cache: Path, downloads: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device_deps, "packages", lambda: pkg())
    (dest,) = device_deps.fetch()
    (dest / ".complete").unlink()
    (dest / "lib/demo/mod.py").write_bytes(b"half")
    device_deps.fetch()
    assert len(downloads) == 2
    assert (dest / "lib/demo/mod.py").read_bytes() == MOD
    assert (dest / ".complete").exists()


def test_device_files_before_fetch_raises(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_deps, "packages", lambda: pkg())
    with pytest.raises(UserError) as err:
        device_deps.device_files()
    assert err.value.line() == "device package demo.pkg not fetched; see thingkit deps fetch"


def test_device_files_after_fetch(
    cache: Path, downloads: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device_deps, "packages", lambda: pkg())
    (dest,) = device_deps.fetch()
    assert device_deps.device_files() == {
        "lib/demo/mod.py": dest / "lib/demo/mod.py",
        "lib/demo/__init__.py": dest / "lib/demo/__init__.py",
    }


def test_download_failure_is_user_error(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(url: str, timeout: float = 0) -> FakeResponse:
        raise urllib.error.URLError("name resolution failed")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    monkeypatch.setattr(device_deps, "packages", lambda: pkg())
    with pytest.raises(UserError) as err:
        device_deps.fetch()
    assert err.value.what == "cannot download device package demo.pkg"
    assert "name resolution failed" in err.value.cause
    assert err.value.where == URL
    assert _tree(cache) == []


def test_listed_file_missing_from_package_is_user_error(
    cache: Path, downloads: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        device_deps,
        "packages",
        lambda: pkg(
            files={
                "demo-1.0/demo/mod.py": "lib/demo/mod.py",
                "demo-1.0/demo/missing.py": "lib/demo/missing.py",
            }
        ),
    )
    with pytest.raises(UserError, match="demo-1.0/demo/missing.py is not in the package"):
        device_deps.fetch()
    assert not (cache / "device" / f"demo.pkg-1.0-{SHA[:12]}").exists()


def test_real_deps_file_is_pinned() -> None:
    pkgs = device_deps.packages()
    assert "umqtt.simple" in pkgs
    for name, p in pkgs.items():
        assert len(p["sha256"]) == 64 and int(p["sha256"], 16) >= 0, name
        assert p["url"].startswith("https://"), name
        assert p["files"] and all(t.startswith("lib/") for t in p["files"].values()), name
