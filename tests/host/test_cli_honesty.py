"""Commands say what they did and nothing else: a register that changes nothing leaves the
broker alone; commands that need the bench refuse in one line when it is down; kit
create does not re-provision an existing kit without --force; set-time refuses what it
cannot parse; rotate tells "issued" from "delivered"; Ctrl-C says what was kept."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools import cli
from host_tools.bench import procs
from host_tools.bench.bench import Bench
from host_tools.bench.observer import Observer
from host_tools.errors import UserError
from host_tools.kit.sim import SimKit

MOSQUITTO = Path("/usr/sbin/mosquitto")
needs_mosquitto = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if not ln.endswith("…")]  # progress: work under way
    assert len(lines) == 1, err
    return lines[0]


def not_running(root: Path) -> str:
    return f"thingkit: the bench is not running; start it with: thingkit bench up --bench-root {root}"


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto not installed")
    b = Bench(tmp_path / "bench")
    try:
        b.up()
        yield b
    finally:
        b.down()


@pytest.fixture
def fleet(bench: Bench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "fleet"
    rc, _, err = run(
        capsys, "provision", "--count", "2", "--target", "bench", "--fleet", str(out),
        "--board", "sim", "--no-images", "--yes", "--bench-root", str(bench.layout.root),
    )  # fmt: skip
    assert rc == 0, err
    return out


def connections(bench: Bench) -> int:
    return bench.broker_log().count("New client connected")


# -- register -------------------------------------------------------------------------------
@needs_mosquitto
def test_register_with_nothing_changed_leaves_the_broker_alone(
    bench: Bench, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = ["register", "--fleet", str(fleet), "--target", "bench", "--yes"]
    reg += ["--bench-root", str(bench.layout.root)]
    rc, out, err = run(capsys, *reg)
    assert rc == 0, err
    assert "2 things registered (2 new or changed)" in out
    with Observer(bench):
        pid = bench.state["broker_pid"]
        seen, reloads = connections(bench), bench.broker_log().count("Reloading config")
        rc, out, err = run(capsys, *reg)
        assert rc == 0, err
        assert "(0 new or changed); nothing changed for the broker: it was left alone" in out
        assert bench.state["broker_pid"] == pid  # not restarted
        assert bench.broker_log().count("Reloading config") == reloads  # not even reloaded
        assert connections(bench) == seen  # nobody had to reconnect

        # A changed registration reloads the ACL (SIGHUP), still without a restart.
        assert bench.register("extra-thing", "ab" * 32) == "reloaded"
        assert bench.state["broker_pid"] == pid
        assert bench.broker_log().count("Reloading config") == reloads + 1
        assert connections(bench) == seen
        assert bench.register("extra-thing", "ab" * 32) == "unchanged"


# -- commands that need a running bench -------------------------------------------------------
@needs_mosquitto
def test_register_and_revoke_refuse_when_the_bench_is_down(
    bench: Bench, fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from provisioning.store import FleetStore

    thing = min(FleetStore(fleet).devices)
    revoked = bench.layout.fleet_ca / "revoked.json"
    bench.down()
    root = str(bench.layout.root)
    for argv in (
        ["register", "--fleet", str(fleet), "--target", "bench", "--yes", "--bench-root", root],
        [
            "revoke",
            thing,
            "--fleet",
            str(fleet),
            "--target",
            "bench",
            "--yes",
            "--bench-root",
            root,
        ],
        ["bench", "ntp", "--offset", "5", "--bench-root", root],
    ):
        rc, out, err = run(capsys, *argv)
        assert (rc, out) == (1, ""), argv
        assert one_line(err) == not_running(bench.layout.root), argv
    assert not revoked.exists()  # nothing was revoked behind the refusal
    assert bench.things() == {}  # nothing registered
    assert FleetStore(fleet).devices[thing].status == "active"


# -- kit create / set-time ---------------------------------------------------------------------
@needs_mosquitto
def test_kit_create_over_an_existing_kit_needs_force(
    bench: Bench, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = ["--bench-root", str(bench.layout.root)]
    rc, out, err = run(capsys, "kit", "create", "kit-1", *root)
    assert rc == 0, err
    from provisioning.bundle import CERT_FILE

    kit = SimKit(tmp_path / "kits" / "kit-1")
    old_cert = (kit.flash / CERT_FILE).read_bytes()
    marker = kit.flash / "outbox.marker"
    marker.write_text("queued while running\n")
    pid = kit.power_on()
    try:
        rc, out, err = run(capsys, "kit", "create", "kit-1", *root)
        assert (rc, out) == (1, "")
        line = one_line(err)
        assert line.startswith("thingkit: kit kit-1 exists already and is running (")
        assert line.endswith("see thingkit kit create kit-1 --force")
        assert procs.alive(pid) and marker.exists()  # untouched

        rc, out, err = run(capsys, "kit", "create", "kit-1", "--force", *root)
        assert rc == 0, err
        assert out.startswith("kit kit-1: the old kit was stopped and removed (--force); ")
        assert not procs.alive(pid)  # stopped first
        assert not marker.exists()  # recreated clean
        assert (kit.flash / CERT_FILE).read_bytes() != old_cert  # new identity
        assert not SimKit(kit.root).is_running()
    finally:
        SimKit(kit.root).power_off()


def test_kit_set_time_refuses_what_it_cannot_parse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kit_dir = tmp_path / "kits" / "kit-1"
    kit_dir.mkdir(parents=True)
    root = ["--bench-root", str(tmp_path / "bench")]
    for bad in ("yesterday", "2024-13-01 00:00:00", "2024-05-06"):
        rc, out, err = run(capsys, "kit", "set-time", "kit-1", bad, *root)
        assert (rc, out) == (1, ""), bad
        assert one_line(err).startswith(f"thingkit: cannot set the RTC to {bad!r}; give ")
        assert not (kit_dir / "rtc").exists()
    rc, out, _ = run(capsys, "kit", "set-time", "kit-1", "now", *root)
    assert rc == 0 and out.startswith("kit kit-1: RTC set to ")
    written = (kit_dir / "rtc").read_text()
    assert written.startswith("@") and time.strptime(written[1:].strip(), "%Y-%m-%d %H:%M:%S")


# -- rotate ------------------------------------------------------------------------------------
@needs_mosquitto
def test_rotate_says_issued_or_delivered_never_both(
    bench: Bench, fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from host_tools.kit.provision import create_sim_kit
    from provisioning.store import FleetStore

    a, b = sorted(FleetStore(fleet).devices)
    common = ["--fleet", str(fleet), "--target", "bench", "--yes"]
    common += ["--bench-root", str(bench.layout.root), "--kits", str(tmp_path / "kits")]
    assert run(capsys, "register", *common[:-2])[0] == 0

    # No kit to deliver to: issued only.
    rc, out, err = run(capsys, "rotate", a, *common)
    assert rc == 0, err
    assert "issued, not delivered yet" in out and "delivered, waiting" not in out
    assert "1 device(s) wait for delivery" in out and "did not confirm" not in out

    # A kit that gets the new identity but is given no time to connect with it.
    kit = create_sim_kit(bench, tmp_path / "kits", b)
    try:
        # No wait at all: no boot reaches the broker in 0 s (0.2 s was a race once kits
        # booted faster).
        rc, out, err = run(capsys, "rotate", b, *common, "--timeout", "0")
        assert rc == 0, err
        assert f"written to kit {kit.root} and reset, but it did not connect" in out
        assert "wait for delivery" not in out and "issued, not delivered" not in out
        assert f"1 kit(s) did not confirm: see `thingkit kit console {b}`" in out
    finally:
        kit.power_off()


# -- Ctrl-C ------------------------------------------------------------------------------------
@needs_mosquitto
def test_ctrl_c_in_bench_up_says_what_it_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    b = Bench(tmp_path / "bench")

    real_start = Bench._start_services

    def interrupted(self, timeout):  # Ctrl-C while waiting for the services to be ready
        with contextlib.suppress(UserError):  # spawned, not ready yet
            real_start(self, 0.0)
        raise KeyboardInterrupt

    monkeypatch.setattr(Bench, "_start_services", interrupted)
    try:
        rc, out, err = run(capsys, "bench", "up", "--bench-root", str(b.layout.root))
        assert (rc, out) == (130, "")
        assert one_line(err) == (
            "thingkit: interrupted; bench up: stopped the services and broker it had "
            f"started; no bench process runs; ports and settings kept in {b.layout.state_file}"
        )
        assert b.health() == {"broker": "not running", "services": "not running"}
        assert "broker_port" in b.state  # the port it picked is saved for the next start

        # The broker was running: it is kept, and said so.
        monkeypatch.undo()
        b.up()
        os.kill(b.state["services_pid"], signal.SIGKILL)
        while procs.alive(b.state["services_pid"]):
            time.sleep(0.02)
        monkeypatch.setattr(Bench, "_start_services", interrupted)
        rc, out, err = run(capsys, "bench", "up", "--bench-root", str(b.layout.root))
        assert (rc, out) == (130, "")
        assert one_line(err) == (
            "thingkit: interrupted; bench up: stopped the services it had started; broker "
            f"still running; ports and settings kept in {b.layout.state_file}"
        )
    finally:
        b.down()


@needs_mosquitto
def test_ctrl_c_in_kit_create_removes_the_partial_kit(
    bench: Bench,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from host_tools.kit import provision

    def half_made(bench, kits_root, thing, **kw):
        (Path(kits_root) / thing / "flash").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(provision, "create_sim_kit", half_made)
    rc, out, err = run(capsys, "kit", "create", "kit-9", "--bench-root", str(bench.layout.root))
    assert (rc, out) == (130, "")
    assert one_line(err) == (
        "thingkit: interrupted; kit create stopped: the partly made kit kit-9 was removed"
    )
    assert not (tmp_path / "kits" / "kit-9").exists()


def test_ctrl_c_in_validate_and_fleet_says_what_was_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from host_tools.fleet_sim.fleet import Fleet
    from host_tools.validate import sim_run

    def interrupt(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(sim_run, "validate_sim", interrupt)
    rc, out, err = run(capsys, "validate", "--workdir", str(tmp_path / "v"))
    assert (rc, out) == (130, "")
    assert one_line(err) == (
        "thingkit: interrupted; validate stopped before its report: its bench and kit were "
        f"stopped, its state is kept in {tmp_path / 'v'}"
    )

    downs = []
    monkeypatch.setattr(Fleet, "up", interrupt)
    monkeypatch.setattr(Fleet, "down", lambda self, *a, **kw: downs.append(1) or {})
    froot, broot = tmp_path / "fleet", tmp_path / "bench"
    rc, out, err = run(
        capsys, "fleet", "up", "--count", "2", "--root", str(froot), "--bench-root", str(broot)
    )
    assert (rc, out, downs) == (130, "", [1])  # the kits it started were stopped first
    assert one_line(err) == (
        "thingkit: interrupted; fleet up stopped: its kits were powered off (0 still "
        f"running), bench down; state kept in {froot}"
    )

    froot.mkdir()
    (froot / "fleet.json").write_text(json.dumps({"things": ["fleet-0001", "fleet-0002"]}))
    monkeypatch.setattr(Fleet, "down", interrupt)
    rc, out, err = run(capsys, "fleet", "down", "--root", str(froot))
    assert (rc, out) == (130, "")
    assert one_line(err) == (
        "thingkit: interrupted; fleet down stopped: 0 of 2 kits still running; "
        "run `thingkit fleet down` again"
    )
