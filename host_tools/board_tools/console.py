"""A serial monitor: everything a board prints, into a log file and to whoever watches,
with reset and hold-in-reset through the usual DTR/RTS wiring of ESP32 dev boards.

    with SerialConsole("/dev/ttyUSB0", Path("console.log")) as con:
        con.reset()
        m = con.wait_for(r"I device: shadow synced", timeout=60)

On ESP32 DevKitC-style boards (and the USB Serial/JTAG of S3/C3) RTS drives EN (reset)
and DTR drives GPIO0 (boot mode): ``reset`` pulses RTS with DTR released, so the chip
restarts into its firmware; ``hold`` keeps RTS asserted, which keeps the chip in reset
(a power cut as far as the network is concerned), ``release`` lets it boot. On
``socket://`` ports there are no control lines: those calls are no-ops there and say so.

The port is a pyserial URL. The console releases the port (``pause``) while esptool or
mpremote need it, and takes it back (``resume``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import serial

from host_tools.errors import UserError

log = logging.getLogger("thingkit.console")
RESET_PULSE_S = 0.1


def open_port(url: str, baud: int = 115200, factory: Callable[..., Any] | None = None) -> Any:
    """Open a pyserial URL for reading without touching the reset lines."""
    make = factory or serial.serial_for_url
    try:
        port = make(url, baudrate=baud, timeout=0.1, do_not_open=True)
        # Opening a port asserts DTR and RTS on most USB bridges, which resets an ESP32
        # (or puts it in download mode). Release both first.
        port.dtr = False
        port.rts = False
        port.open()
    except (serial.SerialException, OSError, ValueError) as exc:
        raise UserError(
            f"cannot open serial port {url}",
            str(exc).splitlines()[0] if str(exc) else "",
            "ls -l /dev/serial/by-id/; is your user in the dialout group?",
        ) from exc
    return port


class SerialConsole:
    """Read a serial port on a thread into ``log_path`` (appended)."""

    def __init__(
        self,
        url: str,
        log_path: Path,
        baud: int = 115200,
        echo: Callable[[bytes], None] | None = None,
        factory: Callable[..., Any] | None = None,
    ) -> None:
        self.url = url
        self.log_path = Path(log_path)
        self.baud = baud
        self.echo = echo
        self.factory = factory
        self.port: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._mark = 0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> SerialConsole:
        if self._thread is not None:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        self.port = open_port(self.url, self.baud, self.factory)
        self._stop.clear()
        self._thread = threading.Thread(target=self._pump, daemon=True, name="serial-console")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self.port is not None:
            try:
                self.port.close()
            except (OSError, serial.SerialException):
                pass
            self.port = None

    pause = stop  # give the port to esptool or mpremote

    def resume(self) -> None:
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _pump(self) -> None:
        with open(self.log_path, "ab") as out:
            while not self._stop.is_set():
                try:
                    data = self.port.read(4096)
                except (OSError, serial.SerialException) as exc:
                    # A board on a switched USB port takes its serial adapter with it:
                    # wait for the port to come back.
                    with self._lock:
                        out.write(f"\n--- console: port lost ({exc}) ---\n".encode())
                        out.flush()
                    if not self._reopen():
                        return
                    continue
                if not data:
                    continue
                with self._lock:
                    out.write(data)
                    out.flush()
                if self.echo is not None:
                    self.echo(data)

    def _reopen(self) -> bool:
        with contextlib.suppress(OSError, serial.SerialException):
            self.port.close()
        while not self._stop.is_set():
            try:
                self.port = open_port(self.url, self.baud, self.factory)
                return True
            except UserError:
                time.sleep(0.2)
        return False

    # -- control lines -----------------------------------------------------------------
    def _has_lines(self) -> bool:
        return not self.url.startswith("socket://")

    def reset(self) -> None:
        """Pulse EN through RTS (DTR released: boot the firmware, not the loader)."""
        if not self._has_lines():
            log.info("%s has no control lines: reset the board by hand", self.url)
            return
        self.port.dtr = False
        self.port.rts = True
        time.sleep(RESET_PULSE_S)
        self.port.rts = False

    def hold(self) -> None:
        """Keep the chip in reset (EN low through RTS)."""
        if self._has_lines():
            self.port.dtr = False
            self.port.rts = True

    def release(self) -> None:
        if self._has_lines():
            self.port.rts = False

    def write(self, data: bytes) -> None:
        self.port.write(data)

    # -- reading -----------------------------------------------------------------------
    def mark(self, note: str) -> None:
        """Write a marker line and make later ``text()`` start after it."""
        with self._lock, open(self.log_path, "ab") as out:
            out.write(f"\n--- {note} host time {time.time():.3f} ---\n".encode())
        self._mark = self.log_path.stat().st_size

    def text(self, since_mark: bool = True) -> str:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[self._mark if since_mark else 0 :].decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float, since_mark: bool = True) -> re.Match:
        """Wait for output matching ``pattern``; TimeoutError names it and the tail."""
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.text(since_mark))
            if m:
                return m
            if time.monotonic() > deadline:
                tail = "\n".join(self.text(since_mark).splitlines()[-15:])
                raise TimeoutError(
                    f"{self.url}: no output matching {pattern!r} within {timeout:.0f} s; "
                    f"console {self.log_path}; tail:\n{tail}"
                )
            time.sleep(0.05)


def monitor(
    url: str,
    log_path: Path,
    *,
    baud: int = 115200,
    reset: bool = False,
    until: str | None = None,
    timeout: float | None = None,
    out: Callable[[bytes], None] | None = None,
) -> bool:
    """Show a board's console until ``until`` matches, ``timeout`` passes or Ctrl-C.

    Returns:
        True if ``until`` matched (or there was none to match).
    """
    con = SerialConsole(url, log_path, baud, echo=out)
    with con:
        con.mark(f"console {url}")
        if reset:
            con.reset()
        if until is None:
            deadline = time.monotonic() + timeout if timeout else None
            try:
                while deadline is None or time.monotonic() < deadline:
                    time.sleep(0.1)
            except KeyboardInterrupt:
                pass
            return True
        try:
            con.wait_for(until, timeout if timeout is not None else 1e9)
            return True
        except TimeoutError:
            return False
