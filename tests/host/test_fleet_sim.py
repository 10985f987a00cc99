"""The fleet simulator end to end: ``thingkit fleet up/status/down`` with three real kits
on a real bench (started by ``fleet up``), messages checked on the broker by an
independent observer, and no process left after ``fleet down``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from host_tools import cli
from host_tools.bench.bench import Bench
from host_tools.bench.observer import Observer
from host_tools.fleet_sim.fleet import Fleet
from host_tools.fleet_sim.measure import connects, per_second, tree_memory
from host_tools.fleet_sim.observer import FleetCounter

MOSQUITTO = Path("/usr/sbin/mosquitto")


def _procs_under(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(path) in cmd and state != "Z":
            out.append(f"{d.name}: {cmd[:160]}")
    return out


def test_counter_counts_loss_and_duplicates() -> None:
    c = FleetCounter(["a", "b"], "thingkit", interval_s=10)
    for seq in (1, 2, 4, 4):
        c.feed("thingkit/a/telemetry", json.dumps({"boot": "x", "seq": seq}).encode(), False)
    c.feed("thingkit/b/telemetry", json.dumps({"boot": "y", "seq": 1}).encode(), False)
    c.feed("thingkit/b/telemetry", json.dumps({"boot": "y", "seq": 9}).encode(), True)  # replay
    c.feed("thingkit/zz/telemetry", json.dumps({"boot": "y", "seq": 5}).encode(), False)
    c.feed("thingkit/a/status", b'{"state": "online"}', False)
    c.feed("thingkit/b/status", b'{"state": "offline"}', False)
    s = c.summary()
    assert s["telemetry"]["lost"] == 1 and s["telemetry"]["lost_by_thing"] == {"a": 1}
    assert s["telemetry"]["duplicates"] == 1 and s["telemetry"]["total"] == 5
    assert s["online"] == 1


def test_per_second_bins() -> None:
    assert per_second([10.0, 10.5, 12.2], 10.0, 13.0) == [2, 0, 1, 0]


@pytest.mark.slow
@pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed")
def test_fleet_up_status_down(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, broot = tmp_path / "fleet", tmp_path / "bench"
    base = ["fleet", "up", "--count", "3", "--root", str(root), "--bench-root", str(broot)]
    try:
        rc = cli.main([*base, "--interval", "2", "--timeout", "90", "--json"])
        up = json.loads(capsys.readouterr().out)
        if rc != 0:  # say why: the first kit's console (a kit that never came online)
            tail = Fleet(root).kit("fleet-0001").console(since_boot=False).splitlines()[-6:]
            pytest.fail(
                f"fleet up: {up['online']}/3 online; fleet-0001 console:\n" + "\n".join(tail)
            )
        assert up["count"] == 3 and up["running"] == 3 and up["online"] == 3
        fleet = Fleet(root)
        bench = Bench(broot)
        assert bench.is_up() and fleet.state["bench_started"] is True
        things = fleet.things()
        assert things == ["fleet-0001", "fleet-0002", "fleet-0003"]
        # Distinct identities from the provisioning toolkit, registered on the bench.
        fps = {
            hashlib.sha256((fleet.kit(t).flash / "certs/device.crt.der").read_bytes()).hexdigest()
            for t in things
        }
        assert len(fps) == 3
        assert set(things) <= set(bench.things())
        # The broker sees every kit: an independent operator client, its own subscription.
        with Observer(bench) as obs:
            for t in things:
                m = obs.wait(lambda m, t=t: m.topic == f"thingkit/{t}/telemetry", timeout=30)
                assert m is not None, f"no telemetry from {t} on the broker"
                assert m.json()["thing"] == t
        logged = {cid for _, cid in connects(bench.layout.broker_log, 0, set(things))}
        assert logged == set(things)
        assert tree_memory(fleet.kit(things[0]).pid or 0).pss > 0

        assert cli.main(["fleet", "status", "--root", str(root), "--json"]) == 0
        st = json.loads(capsys.readouterr().out)
        assert st["running"] == 3 and st["online"] == 3 and st["observer"]
        assert st["telemetry"]["total"] >= 6, st  # two intervals at least, three kits
        assert st["telemetry"]["lost"] == 0 and st["stats_age_s"] < 5
        pids = [fleet.kit(t).pid for t in things] + [fleet.state["observer_pid"]]
    finally:
        cli.main(["fleet", "down", "--root", str(root)])
    out = capsys.readouterr().out
    assert "fleet down: 3 kits powered off, 0 left running" in out
    assert not Bench(broot).is_up()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert _procs_under(tmp_path) == []
    # Status after down: nothing runs, the last figures are kept.
    assert cli.main(["fleet", "status", "--root", str(root), "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["running"] == 0
