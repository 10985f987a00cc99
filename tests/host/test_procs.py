"""Tests for the bench's process helpers: free ports, spawn, alive, stop."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.bench import procs

# Ignores SIGTERM, then says so (the test waits for the line before it signals).
IGNORE_TERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ignoring', flush=True)\n"
    "time.sleep(30)\n"
)


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids a test spawns; any still running at the end are killed and reaped."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if procs.alive(pid):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def wait_for_text(path: Path, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.01)
    pytest.fail(f"{text!r} not in {path} after {timeout} s")


def proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except FileNotFoundError:
        return None


# -- free_port --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_free_port_is_bindable(kind: int) -> None:
    port = procs.free_port(kind)
    assert isinstance(port, int) and 1024 <= port <= 65535
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", port))
        assert s.getsockname() == ("127.0.0.1", port)


def test_free_port_default_is_tcp_and_varies() -> None:
    ports = {procs.free_port() for _ in range(5)}
    assert len(ports) >= 2
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


# -- spawn / alive / stop ---------------------------------------------------------------
def test_spawn_alive_stop(tmp_path: Path, spawned: list[int]) -> None:
    log = tmp_path / "logs" / "sleep.log"
    pid = procs.spawn(["sleep", "30"], log)
    spawned.append(pid)
    assert log.exists()  # parent directory made, log opened
    assert procs.alive(pid) is True
    assert proc_state(pid) not in (None, "Z")
    # Own session: a signal to the test's process group does not reach it.
    assert os.getsid(pid) == pid and os.getsid(pid) != os.getsid(0)
    t0 = time.monotonic()
    procs.stop(pid)
    assert time.monotonic() - t0 < 2.0  # sleep exits on SIGTERM: no wait for the timeout
    assert procs.alive(pid) is False
    assert proc_state(pid) is None  # reaped, not left a zombie


def test_spawn_appends_output_and_uses_cwd_and_env(tmp_path: Path, spawned: list[int]) -> None:
    log = tmp_path / "out.log"
    log.write_text("earlier\n")
    pid = procs.spawn(
        [sys.executable, "-c", "import os; print(os.getcwd(), os.environ['TK_X'], flush=True)"],
        log,
        cwd=tmp_path,
        env=dict(os.environ, TK_X="hello"),
    )
    spawned.append(pid)
    wait_for_text(log, "hello")
    assert log.read_text() == f"earlier\n{tmp_path} hello\n"


def test_spawn_stderr_goes_to_log(tmp_path: Path, spawned: list[int]) -> None:
    log = tmp_path / "err.log"
    pid = procs.spawn([sys.executable, "-c", "import sys; sys.stderr.write('oops\\n')"], log)
    spawned.append(pid)
    wait_for_text(log, "oops\n")


def test_alive_of_exited_child_is_false(tmp_path: Path, spawned: list[int]) -> None:
    pid = procs.spawn(["true"], tmp_path / "true.log")
    spawned.append(pid)
    deadline = time.monotonic() + 5
    while procs.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert procs.alive(pid) is False
    assert procs.alive(pid) is False  # asking again (already reaped) is still False


@pytest.mark.parametrize("pid", [None, 0])
def test_alive_none_and_zero(pid: int | None) -> None:
    assert procs.alive(pid) is False


def test_alive_of_other_process() -> None:
    assert procs.alive(os.getpid()) is True  # not a child of ours: counted alive


def test_stop_of_dead_pid_is_quiet(tmp_path: Path, spawned: list[int]) -> None:
    pid = procs.spawn(["sleep", "30"], tmp_path / "s.log")
    spawned.append(pid)
    procs.stop(pid)
    t0 = time.monotonic()
    procs.stop(pid)
    procs.stop(None)
    procs.stop(0)
    assert time.monotonic() - t0 < 0.5
    assert procs.alive(pid) is False


def test_stop_kills_process_ignoring_sigterm(tmp_path: Path, spawned: list[int]) -> None:
    log = tmp_path / "stubborn.log"
    pid = procs.spawn([sys.executable, "-c", IGNORE_TERM], log)
    spawned.append(pid)
    wait_for_text(log, "ignoring")
    t0 = time.monotonic()
    procs.stop(pid, timeout=0.5)
    took = time.monotonic() - t0
    assert procs.alive(pid) is False
    assert proc_state(pid) is None
    assert 0.5 <= took < 2.0  # waited the full timeout, then SIGKILL


def test_stop_does_not_wait_for_fast_exit(tmp_path: Path, spawned: list[int]) -> None:
    pid = procs.spawn([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "p.log")
    spawned.append(pid)
    t0 = time.monotonic()
    procs.stop(pid, timeout=5.0)
    assert time.monotonic() - t0 < 1.0
    assert procs.alive(pid) is False


# -- wait_tcp -------------------------------------------------------------------------
def test_wait_tcp(tmp_path: Path, spawned: list[int]) -> None:
    port = procs.free_port()
    t0 = time.monotonic()
    assert procs.wait_tcp(port, timeout=0.3) is False
    assert time.monotonic() - t0 >= 0.3
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", port))
        srv.listen()
        assert procs.wait_tcp(port, timeout=2.0) is True


def test_wait_tcp_gives_up_when_process_dies(tmp_path: Path, spawned: list[int]) -> None:
    pid = procs.spawn(["true"], tmp_path / "t.log")
    spawned.append(pid)
    t0 = time.monotonic()
    assert procs.wait_tcp(procs.free_port(), timeout=5.0, pid=pid) is False
    assert time.monotonic() - t0 < 2.0
