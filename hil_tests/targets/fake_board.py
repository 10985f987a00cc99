"""A stand-in MicroPython board on ``socket://127.0.0.1:PORT``, built from the real
MicroPython unix port, for testing the serial target and ``thingkit deploy`` without
hardware.

Like a board it is either off, at its REPL, or running ``main.py`` from its filesystem
(a directory):

- REPL: mpremote's own transport talks to it as to a board: ctrl-C/ctrl-A into the raw
  REPL, soft reset, raw-paste negotiation (refused, as older firmware does), ``OK`` /
  output / ``\\x04`` / error / ``\\x04>`` for each exec. Every snippet mpremote sends
  (``os.stat``, ``os.ilistdir``, ``open(...).write``, ``hashlib.sha256``,
  ``sys.implementation._mpy``) runs in real MicroPython;
- running: a soft reset from the friendly REPL, or power-on, starts ``main.py`` with the
  virtual kit's wiring (libfaketime RTC, simulated hardware: the firmware's sim board
  layer), its output on the port; a ctrl-C stops it and drops to the REPL, as on a board;
- power: ``on`` / ``off`` over a control port (``python -m hil_tests.targets.fake_board
  PORT on``), which an environment file's ``power_on`` / ``power_off`` commands call.
  Power-on resets the RTC to 2000-01-01 and takes a board's boot time (0.8 s) before
  main.py starts; a ctrl-C in that time finds the REPL instead.

It is not an ESP32: ``sys.platform`` is ``linux`` (deploy's platform check is switched
off for it), the network is the host's, and it has no reset lines (``socket://``).

    with FakeBoard(tmp_path / "board") as b:
        deploy(b.url, load_board("sim"), check_platform=False, ...)
        b.power("on")
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Self

from host_tools.kit.sim import POWER_ON_TIME, SimKit, micropython_binary
from host_tools.paths import BOARDS

# Runs on the MicroPython unix port: a raw REPL on stdin/stdout.
DEVICE_SCRIPT = r"""
import sys
rd = sys.stdin.buffer.read
wr = sys.stdout.buffer.write
BANNER = b"raw REPL; CTRL-B to exit\r\n>"

def fresh():
    return {"__name__": "__main__"}

g = fresh()
raw = False
buf = bytearray()
wr(b"MicroPython (thingkit fake board)\r\n>>> ")
while True:
    c = rd(1)
    if not c:
        break
    if not raw:
        if c == b"\x01":
            raw = True
            buf = bytearray()
            wr(BANNER)
        elif c == b"\x04":
            wr(b"MPY: soft reboot\r\n")
            wr(b"\x00SOFT-RESET\x00")
        continue
    if c == b"\x01":
        buf = bytearray()
        wr(BANNER)
    elif c == b"\x02":
        raw = False
        wr(b"\r\nMicroPython (thingkit fake board)\r\n>>> ")
    elif c == b"\x03":
        buf = bytearray()
    elif c == b"\x05":
        rd(2)
        wr(b"R\x00")
    elif c == b"\x04":
        wr(b"OK")
        if not buf:
            g = fresh()
            wr(b"\r\nMPY: soft reboot\r\n" + BANNER)
            continue
        code = bytes(buf)
        buf = bytearray()
        try:
            exec(code, g)
        except BaseException as e:
            wr(b"\x04")
            sys.print_exception(e, sys.stdout)
            wr(b"\x04>")
        else:
            wr(b"\x04\x04>")
    else:
        buf.extend(c)
"""
SOFT_RESET = b"\x00SOFT-RESET\x00"
# An ESP32 takes about this long from power-on to main.py (ROM, bootloader, MicroPython).
BOOT_S = 0.8


class FakeBoard:
    def __init__(self, root: Path, board: str = "sim", heap: str = "256k") -> None:
        self.kit = SimKit(Path(root))  # the virtual kit's wiring: RTC, hardware, board
        self.fs = self.kit.flash
        self.fs.mkdir(parents=True, exist_ok=True)
        board_file = getattr(self.kit, "board_file", self.fs / "board.json")
        shutil.copyfile(BOARDS / f"{board}.json", board_file)
        self.heap = heap
        self.mode = "off"
        self.soft_resets = 0
        self.output = bytearray()  # everything the device printed
        self._dir = tempfile.TemporaryDirectory(prefix="tk-fakeboard-")
        self._script = Path(self._dir.name, "repl.py")
        self._script.write_text(DEVICE_SCRIPT)
        self._proc: subprocess.Popen | None = None
        self._boot: threading.Timer | None = None
        self._conn: socket.socket | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._sock = _listener()
        self.port = self._sock.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._ctl = _listener()
        self.ctl_port = self._ctl.getsockname()[1]
        self._threads = [
            threading.Thread(target=self._accept, daemon=True, name="fakeboard-port"),
            threading.Thread(target=self._control, daemon=True, name="fakeboard-ctl"),
        ]
        for t in self._threads:
            t.start()
        self.power("on")

    # -- what runs -------------------------------------------------------------------------
    def _start(self, mode: str, reset_cause: str = "soft") -> None:
        """Replace whatever runs with the REPL or the firmware (lock held)."""
        self._kill()
        if mode == "firmware" and not (self.fs / "main.py").exists():
            mode = "repl"  # no main.py: MicroPython stays at its REPL
        if mode == "repl":
            argv = [micropython_binary(), "-X", "heapsize=2m", str(self._script)]
            env = {"MICROPYPATH": ".frozen", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        else:
            if reset_cause == "power_on":
                self.kit.set_time(POWER_ON_TIME)
            argv = [micropython_binary(), "-X", f"heapsize={self.heap}", "main.py"]
            env = self.kit._env(reset_cause)
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.fs,
            env=env,
        )
        self.mode = mode
        threading.Thread(target=self._pump, args=(self._proc,), daemon=True).start()

    def _kill(self) -> None:
        boot, self._boot = self._boot, None
        if boot is not None:
            boot.cancel()
        p, self._proc = self._proc, None
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(5)
        self.mode = "off"

    def power(self, state: str) -> None:
        """``on``: boot (main.py if there is one, after a board's boot time); ``off``: cut
        the power."""
        with self._lock:
            self._kill()
            if state == "on":
                self.mode = "booting"
                self._boot = threading.Timer(BOOT_S, self._booted)
                self._boot.daemon = True
                self._boot.start()

    def _booted(self) -> None:
        with self._lock:
            if self.mode == "booting":
                self._start("firmware", "power_on")

    def _pump(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        while True:
            data = proc.stdout.read1(4096)
            if not data:
                # machine.reset() (the sim board layer exits with status 75): a board
                # restarts, so the fake one starts its firmware again.
                if proc.wait() == 75:
                    with self._lock:
                        if self._proc is proc:
                            self._start("firmware", "soft")
                return
            if SOFT_RESET in data:
                data = data.replace(SOFT_RESET, b"")
                with self._lock:
                    self.soft_resets += 1
                    threading.Thread(target=self._soft_reset, daemon=True).start()
            self.output += data
            with self._lock:
                if self._conn is not None:
                    try:
                        self._conn.sendall(data)
                    except OSError:
                        pass

    def _soft_reset(self) -> None:
        with self._lock:
            self._start("firmware", "soft")

    # -- the serial port -----------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(0.2)
            # A serial line has no Nagle or delayed ACKs; without these, every raw-REPL
            # round trip would wait ~40 ms for one.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conn = conn
            try:
                self._serve(conn)
            finally:
                with self._lock:
                    self._conn = None
                conn.close()

    def _serve(self, conn: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = conn.recv(4096)
                if hasattr(socket, "TCP_QUICKACK"):
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            with self._lock:
                if self.mode in ("firmware", "booting") and b"\x03" in data:
                    # ctrl-C: the firmware stops, MicroPython's REPL takes the port.
                    data = data[data.index(b"\x03") + 1 :]
                    self._start("repl")
                proc = self._proc
            if proc is None or proc.stdin is None or not data:
                continue
            try:
                proc.stdin.write(data)
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass

    def _control(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._ctl.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(5)
                try:
                    cmd = conn.recv(64).decode().strip()
                    if cmd in ("on", "off"):
                        self.power(cmd)
                    conn.sendall(f"{self.mode}\n".encode())
                except OSError:
                    pass

    def power_command(self, state: str) -> list[str]:
        """The argv an environment file's power_on / power_off runs."""
        return [sys.executable, "-m", "hil_tests.targets.fake_board", str(self.ctl_port), state]

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._kill()
        for t in self._threads:
            t.join(5)
        self._sock.close()
        self._ctl.close()
        self._dir.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _listener() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(2)
    s.settimeout(0.2)
    return s


def write_env(path: Path, boards: list[FakeBoard], board: str = "sim") -> Path:
    """An environment file (TOML) for the serial target that names these fake boards."""
    lines = ["[bench]", 'device_address = "127.0.0.1"', ""]
    for i, b in enumerate(boards):
        on, off = b.power_command("on"), b.power_command("off")
        lines += [
            "[[board]]",
            f'name = "fake-{i}"',
            f'board = "{board}"',
            f'port = "{b.url}"',
            'reset = "none"',
            'power = "command"',
            f"power_on = {json.dumps(on)}",
            f"power_off = {json.dumps(off)}",
            'deps = "pinned"',
            "check_platform = false",
            "",
        ]
    Path(path).write_text("\n".join(lines))
    return Path(path)


def serve(count: int, env_out: Path, root: Path, board: str = "sim") -> int:
    """Run ``count`` fake boards and write their environment file; until interrupted."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    boards = [FakeBoard(root / f"board-{i}", board) for i in range(count)]
    try:
        write_env(env_out, boards, board)
        print(f"fake boards ready: {', '.join(b.url for b in boards)}; env file {env_out}")
        sys.stdout.flush()
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        for b in boards:
            b.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m hil_tests.targets.fake_board CTL_PORT on|off|status`` (a board's power
    switch), or ``... serve --boards N --env-out FILE [--root DIR]`` (run fake boards)."""
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] == ["serve"]:
        p = argparse.ArgumentParser(prog="python -m hil_tests.targets.fake_board serve")
        p.add_argument("--boards", type=int, default=1)
        p.add_argument("--env-out", type=Path, required=True)
        p.add_argument("--root", type=Path, default=None)
        p.add_argument("--board", default="sim")
        a = p.parse_args(args[1:])
        root = a.root or Path(tempfile.mkdtemp(prefix="tk-fakeboards-"))
        return serve(a.boards, a.env_out, root, a.board)
    if len(args) != 2 or args[1] not in ("on", "off", "status"):
        print(
            "usage: python -m hil_tests.targets.fake_board CTL_PORT on|off|status\n"
            "       python -m hil_tests.targets.fake_board serve --boards N --env-out FILE",
            file=sys.stderr,
        )
        return 2
    with socket.create_connection(("127.0.0.1", int(args[0])), timeout=10) as s:
        s.sendall(args[1].encode())
        print(s.recv(64).decode().strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
