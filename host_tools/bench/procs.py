"""Start, find and stop the bench's background processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound now, as the bench's servers bind it.

    TCP is probed with SO_REUSEADDR, as mosquitto binds: connections of an earlier run
    left in TIME_WAIT do not count, a listening socket does.
    """
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_holder(port: int, kind: int = socket.SOCK_STREAM) -> str:
    """Who holds ``port`` on this host: "pid 123 (nc)", or "" if it cannot be told.

    Reads /proc/net (Linux): the socket's inode, then the process with that inode open.
    """
    table = "/proc/net/tcp" if kind == socket.SOCK_STREAM else "/proc/net/udp"
    inodes = set()
    for path in (table, table + "6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            listening = kind != socket.SOCK_STREAM or f[3:4] == ["0A"]  # TCP: LISTEN only
            if len(f) > 9 and int(f[1].rsplit(":", 1)[1], 16) == port and listening:
                inodes.add(f"socket:[{f[9]}]")
    if not inodes:
        return ""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fds = list((d / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    name = (d / "comm").read_text().strip()
                    return f"pid {d.name} ({name})"
            except OSError:
                continue
    return ""


def running(pid: int | None, mark: str) -> bool:
    """Whether ``pid`` is alive and is the process we started: its command line holds
    ``mark`` (a path of the bench). A pid saved before a reboot may name another process."""
    deadline = time.monotonic() + 1.0
    while True:
        if not alive(pid):
            return False
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except FileNotFoundError:
            return False
        except OSError:
            return True  # no /proc to ask: trust the pid
        # An empty command line is a process between states (being set up or exiting):
        # ask again rather than calling it someone else's (seen: a rollback right after a
        # start left the services process running).
        if cmd or time.monotonic() > deadline:
            return mark.encode() in cmd
        time.sleep(0.01)


def spawn(argv: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> int:
    """Start a detached process (own session) with output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        p = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    return p.pid


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead (and is reaped here).
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        pass
    # Not our child: a zombie (exited, its parent has not reaped it yet) is dead too.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def stop(pid: int | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; quiet if already gone."""
    if not alive(pid):
        return
    assert pid is not None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while alive(pid):
        time.sleep(0.02)


def wait_tcp(port: int, timeout: float, pid: int | None = None) -> bool:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None and not alive(pid):
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False
