"""The bench keeps its ports and settings across ``down``/``up`` and crashes; ``up`` brings
back only the parts that are dead; a real virtual kit reconnects after each."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil_tests.helpers import wait_connected
from host_tools import cli
from host_tools.bench import procs
from host_tools.bench.bench import Bench
from host_tools.bench.observer import Observer
from host_tools.errors import UserError

MOSQUITTO = Path("/usr/sbin/mosquitto")
pytestmark = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed")


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    b = Bench(tmp_path / "bench")
    try:
        yield b
    finally:
        b.down()


def wait_dead(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while procs.alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.02)


def sntp_answers(port: int) -> bool:
    """One SNTP client request to the bench: True if a server reply comes back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        s.sendto(b"\x23" + b"\0" * 47, ("127.0.0.1", port))  # LI 0, v4, mode 3
        try:
            data, _ = s.recvfrom(512)
        except TimeoutError:
            return False
    return len(data) >= 48 and data[0] & 7 == 4 and struct.unpack("!I", data[40:44])[0] > 0


def test_ports_and_settings_are_kept_across_down_up(bench: Bench) -> None:
    first = bench.start()
    assert set(first.started) == {"broker", "services"} and first.kept == []
    port, ntp_port = bench.port, bench.ntp_port
    bench.set_ntp(offset_s=30.0)
    bench.down()
    assert not bench.is_up()
    again = bench.start()
    assert (bench.port, bench.ntp_port) == (port, ntp_port)
    assert set(again.started) == {"broker", "services"}
    assert bench.ntp_settings() == {"offset_s": 30.0, "blocked": False}
    # A third start with everything running does nothing.
    pids = (bench.state["broker_pid"], bench.state["services_pid"])
    noop = bench.start()
    assert noop.started == {} and noop.kept == ["broker", "services"]
    assert (bench.state["broker_pid"], bench.state["services_pid"]) == pids
    assert noop.line(bench.layout.root).startswith("bench already up, nothing restarted: ")


def test_saved_port_taken_by_another_process_is_one_line(
    bench: Bench, capsys: pytest.CaptureFixture[str]
) -> None:
    bench.up()
    port = bench.port
    bench.down()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        rc = cli.main(["bench", "up", "--bench-root", str(bench.layout.root)])
        out, err = capsys.readouterr()
    assert (rc, out) == (1, "")
    lines = [ln for ln in err.splitlines() if not ln.endswith("…")]  # progress: under way
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(f"thingkit: the bench's broker port {port} ")
    assert f"is taken by pid {os.getpid()} (" in err
    # Nothing half-started, and the saved port was not swapped for another one.
    assert "broker_pid" not in bench.state and "services_pid" not in bench.state
    assert bench.port == port
    bench.up()  # the port is free again: the bench comes back on it
    assert bench.port == port and bench.is_up()


def test_up_while_running_refuses_another_port(bench: Bench) -> None:
    bench.up()
    with pytest.raises(UserError, match=r"runs on port \d+; stop it first"):
        bench.up(port=bench.port + 1)


def test_up_restarts_only_the_dead_services(bench: Bench) -> None:
    bench.up()
    broker_pid, services_pid = bench.state["broker_pid"], bench.state["services_pid"]
    os.kill(services_pid, signal.SIGKILL)
    wait_dead(services_pid)
    assert bench.health()["services"].startswith("it had stopped")
    assert not bench.is_up()
    rep = bench.start()
    assert list(rep.started) == ["services"] and rep.kept == ["broker"]
    assert bench.state["broker_pid"] == broker_pid
    assert bench.state["services_pid"] != services_pid
    assert "restarted services (shadow, jobs, streams, rules, NTP)" in rep.line(bench.layout.root)
    assert sntp_answers(bench.ntp_port)


def _reconnected(obs: Observer, thing: str, after_version: int, timeout: float) -> dict | None:
    """The shadow once the kit has reported connected: true again (a version newer than
    ``after_version``). Read from the shadow service, not from update/accepted messages:
    the observer's own session is re-made after a broker restart, and the kit can be
    back before the observer has subscribed again (a message missed that way made this
    test fail once on a clean clone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            doc = obs.shadow_get(thing)
        except Exception:  # noqa: BLE001  (the broker or the service is still coming back)
            doc = None
        if doc and doc["version"] > after_version and doc["state"]["reported"].get("connected"):
            return doc
        time.sleep(0.5)
    return None


def test_kit_survives_bench_down_up_and_broker_crash(bench: Bench, tmp_path: Path) -> None:
    from host_tools.kit.provision import create_sim_kit

    bench.up()
    kit = create_sim_kit(bench, tmp_path / "kits", "kit-restart")
    config = (kit.flash / "config.json").read_bytes()
    try:
        with Observer(bench) as obs:  # reconnects by itself after each restart
            t0 = time.time()
            pid = kit.power_on()
            assert wait_connected(obs, "kit-restart", True, 60, since=t0), kit.console()

            # 1. bench down, bench up: same ports, the kit comes back on its own.
            v0 = obs.shadow_get("kit-restart")["version"]
            bench.down()
            time.sleep(1.0)  # the kit notices and starts its reconnect backoff
            rep = bench.start()
            assert set(rep.started) == {"broker", "services"}
            doc = _reconnected(obs, "kit-restart", v0, 60)
            assert doc is not None, kit.console()

            # 2. the broker dies (SIGKILL): up restarts it alone; the kit comes back.
            services_pid = bench.state["services_pid"]
            broker_pid = bench.state["broker_pid"]
            v1 = doc["version"]
            os.kill(broker_pid, signal.SIGKILL)
            wait_dead(broker_pid)
            rep = bench.start()
            assert list(rep.started) == ["broker"] and rep.kept == ["services"]
            assert rep.started["broker"] == f"it had stopped (pid {broker_pid} gone)"
            assert bench.state["services_pid"] == services_pid
            assert _reconnected(obs, "kit-restart", v1, 60) is not None, kit.console()

        # Never re-created: the same process and the config it was made with.
        assert kit.pid == pid and kit.is_running()
        assert (kit.flash / "config.json").read_bytes() == config
    finally:
        kit.power_off()


def test_a_stale_pid_naming_another_process_is_not_the_bench(bench: Bench, tmp_path: Path) -> None:
    # After a reboot the saved pids may name unrelated processes: they are neither taken
    # for the bench (up starts it) nor stopped by down.
    bench.up()
    bench.down()
    other = procs.spawn(["sleep", "30"], tmp_path / "sleep.log")
    try:
        st = bench.state
        st.update(broker_pid=other, services_pid=other)
        bench.layout.write_state(st)
        assert bench.health() == {
            "broker": f"it had stopped (pid {other} now runs another program)",
            "services": f"it had stopped (pid {other} now runs another program)",
        }
        bench.down()
        assert procs.alive(other)
        st.update(broker_pid=other, services_pid=other)
        bench.layout.write_state(st)
        rep = bench.start()
        assert set(rep.started) == {"broker", "services"} and bench.is_up()
        assert procs.alive(other) and bench.state["broker_pid"] != other
    finally:
        procs.stop(other)
