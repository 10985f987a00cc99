"""An SNTP v4 server on 127.0.0.1 whose clock tests can skew and whose answers tests can block.

Control file (JSON, read on every request so a test changes it without a restart)::

    {"offset_s": 0.0, "blocked": false}

``blocked`` drops requests without an answer (an NTP outage); ``offset_s`` is added to
the host's time (skew). Every request is logged as one line: time, client, action.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from pathlib import Path

NTP_TO_UNIX = 2208988800
log = logging.getLogger(__name__)


def read_control(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def write_control(path: Path, offset_s: float = 0.0, blocked: bool = False) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"offset_s": offset_s, "blocked": blocked}))
    tmp.replace(path)


def _ntp_ts(t: float) -> bytes:
    secs = int(t) + NTP_TO_UNIX
    frac = int((t - int(t)) * 2**32) & 0xFFFFFFFF
    return struct.pack("!II", secs, frac)


def answer(request: bytes, now: float) -> bytes | None:
    """The server's reply to one client request, or None if it is not one."""
    if len(request) < 48 or request[0] & 7 != 3:
        return None
    version = (request[0] >> 3) & 7
    head = struct.pack("!BBbb", (version << 3) | 4, 2, 6, -20)  # LI 0, mode 4, stratum 2
    head += struct.pack("!II", 0, 0) + b"TKIT"
    ts = _ntp_ts(now)
    return head + ts + request[40:48] + ts + ts


class SNTPServer:
    """Serve SNTP on 127.0.0.1:port in a daemon thread."""

    def __init__(self, port: int, control: Path, request_log: Path) -> None:
        self.control = control
        self.request_log = request_log
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.5)  # the loop sees a stop within this
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sntp", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        """True while the server thread runs."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop the loop, then close the socket (closing first raced the thread)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            ctl = read_control(self.control)
            now = time.time()
            if ctl.get("blocked"):
                self._note(now, addr, "blocked")
                continue
            reply = answer(data, now + float(ctl.get("offset_s", 0.0)))
            if reply is None:
                self._note(now, addr, "ignored")
                continue
            self.sock.sendto(reply, addr)
            self._note(now, addr, "answered")

    def _note(self, now: float, addr: tuple, action: str) -> None:
        with open(self.request_log, "a") as f:
            f.write(f"{now:.3f} {addr[0]}:{addr[1]} {action}\n")
