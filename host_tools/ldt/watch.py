"""What the LDT reads from the kits themselves: their console lines with the host time
each appeared, and the App #2 records left in their outbox on flash.

    watch = ConsoleWatch({"kit-1": kit}).start()
    t = time.time()
    ...
    watch.wait("kit-1", ONLINE_RX, since=t, timeout=30)
    watch.stop()
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from host_tools.kit.sim import SimKit

# Console lines the LDT counts (firmware/tk/device.py, tk/main.py, the kit's reset circuit).
ONLINE_RX = re.compile(r"^\d+ I device: shadow synced: connected=true \(version (\d+)\)")
SESSION_END_RX = re.compile(r"^(\d+) W device: session ended: (.*)$")
RETRY_RX = re.compile(r"^(\d+) I device: reconnect in (\d+) ms \(attempt (\d+), window (\d+) ms\)")
BOOT_RX = re.compile(r"^\d+ I main: thingkit (\S+) on \S+ \(reset: (\w+)\)")
QUEUED_RX = re.compile(r"^\d+ [DIW] device: offline: seq (\d+) queued")
WDT_RX = re.compile(r"^--- watchdog reset")
POWER_RX = re.compile(r"^--- power on \((\w+)\)")
LAST_RESORT_RX = re.compile(r"^\d+ E device: no cloud session for (\d+) s: rebooting")
NTP_WAIT_RX = re.compile(r"^\d+ I time: time not synced")
CLOCK_SET_RX = re.compile(r"^\d+ I time: clock set from \S+ \S+ \(was off by (-?\d+) s\)")
TRACEBACK_RX = re.compile(r"^Traceback \(most recent call last\)")
POLL_S = 0.1


@dataclass(frozen=True)
class Line:
    t: float  # host time (time.time()) the line was first seen in the console file
    text: str


class ConsoleWatch:
    """Tail every kit's ``console.log`` in one thread; keep each line with its host time.

    Lines are stamped when read (within ``POLL_S`` of being written), which is what
    puts console events (sessions, reconnects, boots) into the LDT's phases.
    """

    def __init__(self, kits: dict[str, SimKit]) -> None:
        self.kits = kits
        self.lines: dict[str, list[Line]] = {name: [] for name in kits}
        self._pos: dict[str, int] = {}
        self._rest: dict[str, bytes] = {name: b"" for name in kits}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ldt-console", daemon=True)
        for name, kit in kits.items():
            try:
                self._pos[name] = kit.console_log.stat().st_size  # only what comes next
            except FileNotFoundError:
                self._pos[name] = 0

    def start(self) -> ConsoleWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.poll()  # what was written since the last turn

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self.poll()

    def poll(self) -> None:
        """Read what each console gained since the last call."""
        now = time.time()
        for name, kit in self.kits.items():
            try:
                with open(kit.console_log, "rb") as f:
                    f.seek(self._pos[name])
                    data = f.read()
            except FileNotFoundError:
                continue
            if not data:
                continue
            self._pos[name] += len(data)
            buf = self._rest[name] + data
            *full, self._rest[name] = buf.split(b"\n")
            with self._cond:
                self.lines[name].extend(Line(now, b.decode(errors="replace")) for b in full)
                self._cond.notify_all()

    def find(self, name: str, rx: re.Pattern, since: float = 0.0, until: float = 1e18) -> list:
        """(line, match) of each line of kit ``name`` matching ``rx`` seen in [since, until)."""
        with self._cond:
            out = []
            for ln in self.lines[name]:
                if since <= ln.t < until:
                    m = rx.search(ln.text)
                    if m:
                        out.append((ln, m))
            return out

    def count(self, name: str, rx: re.Pattern, since: float = 0.0, until: float = 1e18) -> int:
        return len(self.find(name, rx, since, until))

    def wait(
        self, name: str, rx: re.Pattern, since: float, timeout: float, n: int = 1
    ) -> Line | None:
        """Wait until kit ``name`` has ``n`` lines matching ``rx`` seen at or after
        ``since``; the n-th, or None at the time-out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = self.find(name, rx, since)
                if len(got) >= n:
                    return got[n - 1][0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))

    def tail(self, name: str, n: int = 12) -> str:
        with self._cond:
            return "\n".join(ln.text for ln in self.lines[name][-n:])


_BOOT_ID_RX = re.compile(rb'"boot":\s*"([0-9a-f]+)"')
_SEQ_RX = re.compile(rb'"seq":\s*(\d+)')


def outbox_seqs(flash: Path) -> dict[str, list[int]]:
    """Sequence numbers of the App #2 records in a kit's outbox files, by boot id.

    Read while the kit is off. Only the records are looked for (JSON text between the
    outbox's binary frame headers), not the outbox's layout; records already sent may
    still be in a segment file (the head says where sending stands), so this is what the
    kit took and kept, not what is still to send.
    """
    out: dict[str, list[int]] = {}
    d = flash / "outbox"
    for f in sorted(d.iterdir()) if d.is_dir() else []:
        if f.name == "head":
            continue
        for chunk in re.split(rb"[^\x20-\x7e]+", f.read_bytes()):
            boot, seq = _BOOT_ID_RX.search(chunk), _SEQ_RX.search(chunk)
            if boot and seq and b'"readings"' in chunk:
                out.setdefault(boot.group(1).decode(), []).append(int(seq.group(1)))
    return out
