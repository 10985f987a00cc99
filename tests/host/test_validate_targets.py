"""``thingkit validate`` end to end on other targets and clouds:

- ``--target serial --port socket://…``: a fake board (the MicroPython unix port behind
  a real raw REPL, hil_tests/targets/fake_board.py), deployed and provisioned as the HIL
  serial target does; every item it can show is met, the rest "not run" with what they
  need;
- ``--cloud remote``: a bench started separately and reached only as a remote broker
  (its endpoint, an operator certificate and key, its CA; the kit with a device bundle
  made for it), giving the same App #1 / App #2 verdicts as ``--cloud bench``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from hil_tests.targets import TargetOptions, make_target
from hil_tests.targets.fake_board import FakeBoard
from hil_tests.targets.sim import SimTarget
from host_tools.bench.bench import Bench
from host_tools.bench.layout import OPERATOR_CN
from host_tools.errors import UserError
from host_tools.kit.provision import bench_config
from host_tools.validate import cli as vcli
from host_tools.validate.checks import CHECKS
from host_tools.validate.cloud import BenchCloud
from host_tools.validate.engine import run
from provisioning.device import provision_device

SIM_COMPONENTS = 6  # boards/sim.json
NEEDS_VIRTUAL_KIT = {"lens.signed_updates", "lens.staged_rollout", "lens.rollback"}
NEEDS_POWER = {"lens.time_before_connect", "lens.offline_state"}


def validate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    p = argparse.ArgumentParser(prog="thingkit")
    vcli.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["validate", *argv])
    try:
        rc = args.func(args)
    except UserError as exc:
        print(f"thingkit: {exc.line()}")
        rc = 1
    out, err = capsys.readouterr()
    return rc, out, err


def statuses(doc: dict) -> dict[str, str]:
    return {i["id"]: i["status"] for i in doc["items"]}


@pytest.mark.slow
def test_serial_target_on_a_fake_board(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeBoard(tmp_path / "board") as board:
        rc, out, err = validate(
            capsys,
            "--target", "serial", "--port", board.url, "--board", "sim", "--json",
            "--workdir", str(tmp_path / "work"),
        )  # fmt: skip
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] is True, out
    st = statuses(doc)
    assert len(st) == 16 + SIM_COMPONENTS  # the 22 items of a sim run
    assert {i for i, s in st.items() if s == "not_run"} == NEEDS_VIRTUAL_KIT | NEEDS_POWER
    assert all(s == "met" for i, s in st.items() if i not in NEEDS_VIRTUAL_KIT | NEEDS_POWER)
    for item in doc["items"]:
        if item["status"] == "not_run":
            assert item["evidence"][0].startswith("not run: needs "), item
    power = next(i for i in doc["items"] if i["id"] == "lens.offline_state")
    assert "target serial lacks power_cut" in power["evidence"]
    assert doc["target"].startswith(f"real board board on {board.url}")
    assert doc["board"] == "sim" and doc["kit"]["certificate_sha256"]
    # progress: each check said as it starts and as it ends, plain lines off a terminal
    for check in CHECKS:
        assert (
            f"thingkit: validate [{CHECKS.index(check) + 1}/{len(CHECKS)}] {check.name} ..." in err
        )
        assert f"thingkit: validate {check.name}: " in err


def _remote_bench(root: Path, thing: str) -> tuple[Bench, Path]:
    """A bench started on its own, with a thing registered and its device bundle."""
    b = Bench(root / "bench")
    b.up()
    ident = provision_device(
        b.fleet_ca(), bench_config(b, thing), root / "bundle", b.layout.server_ca_der.read_bytes()
    )
    b.register(thing, ident.fingerprint)
    return b, root / "bundle"


@pytest.mark.slow
def test_remote_cloud_gives_the_bench_verdicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote, bundle = _remote_bench(tmp_path / "elsewhere", "kit-remote-1")
    cert, key = remote.layout.identity(OPERATOR_CN)
    try:
        rc, out, _err = validate(
            capsys,
            "--cloud", "remote", "--endpoint", "localhost", "--endpoint-port", str(remote.port),
            "--operator-cert", str(cert), "--operator-key", str(key),
            "--ca", str(remote.layout.server_ca_pem), "--bundle", str(bundle),
            "--json", "--html", str(tmp_path / "report.html"),
            "--workdir", str(tmp_path / "work"),
        )  # fmt: skip
    finally:
        remote.down()
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] is True, out
    assert doc["thing"] == "kit-remote-1" and doc["cloud"].startswith("remote broker localhost:")
    rst = statuses(doc)
    assert {i for i, s in rst.items() if s == "not_run"} == NEEDS_VIRTUAL_KIT | {
        "lens.store_forward"
    }
    items = {i["id"]: i for i in doc["items"]}
    auth = " ".join(items["hw.cert_auth"]["evidence"])
    assert "lifecycle event $aws/events/presence/connected/kit-remote-1" in auth
    assert "not shown on this cloud" in items["lens.store_forward"]["evidence"][0]
    assert "verdict" in (tmp_path / "report.html").read_text()

    # The same App #1 / App #2 items against a bench of validate's own.
    app_checks = [c for c in CHECKS if any(i.startswith(("app1.", "app2.")) for i in c.items)]
    results, _ = run(
        SimTarget("sim"), BenchCloud(tmp_path / "own"), tmp_path / "own", checks=app_checks
    )
    bst = {r.id: r.status for r in results}
    apps = {i for i in bst if i.startswith(("app1.", "app2."))}
    assert len(apps) == 3 + SIM_COMPONENTS
    assert {i: rst[i] for i in apps} == {i: bst[i] for i in apps}
    assert {bst[i] for i in apps} == {"met"}


def test_remote_cloud_needs_its_identities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _err = validate(capsys, "--cloud", "remote", "--endpoint", "h.example")
    assert rc == 1
    assert "--cloud remote needs --operator-cert FILE, --operator-key FILE, --bundle DIR" in out


def test_a_network_port_claims_no_power_switch() -> None:
    """socket:// has no RTS line: holding EN low would do nothing, so the target must not
    claim power cuts (the power items are then "not run", not wrongly failed)."""
    t = make_target(TargetOptions(target="serial", port="socket://127.0.0.1:1", board="sim"))
    assert "power_cut" not in t.capabilities
    res = t.env.boards[0]
    assert (res.power, res.reset, res.check_platform) == ("none", "none", False)
    t = make_target(TargetOptions(target="serial", port="/dev/ttyUSB0", board="esp32-devkitc"))
    assert "power_cut" in t.capabilities


def test_sim_target_refuses_a_real_board(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _err = validate(capsys, "--board", "esp32-devkitc")
    assert rc == 1
    assert out.strip() == (
        "thingkit: validate --target sim runs a virtual kit: board esp32-devkitc is a real "
        "board; give a virtual board (sim, sim-ota, sim-romfs), or validate the real one with "
        "--target serial --port URL --board esp32-devkitc"
    )


@pytest.mark.slow
def test_remote_cloud_on_a_board(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A board given a bundle made for a remote cloud: deployed as it is (nothing
    registered by the validator), observed only through the operator identity."""
    remote, bundle = _remote_bench(tmp_path / "elsewhere", "kit-remote-2")
    cert, key = remote.layout.identity(OPERATOR_CN)
    try:
        with FakeBoard(tmp_path / "board") as board:
            rc, out, _err = validate(
                capsys,
                "--target", "serial", "--port", board.url, "--board", "sim",
                "--cloud", "remote", "--endpoint", f"localhost:{remote.port}",
                "--operator-cert", str(cert), "--operator-key", str(key),
                "--ca", str(remote.layout.server_ca_pem), "--bundle", str(bundle), "--json",
                "--workdir", str(tmp_path / "work"),
            )  # fmt: skip
            on_board = json.loads((board.fs / "config.json").read_text())
    finally:
        remote.down()
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] is True, out
    assert on_board == json.loads((bundle / "config.json").read_text())
    st = statuses(doc)
    skipped = NEEDS_VIRTUAL_KIT | NEEDS_POWER | {"lens.store_forward"}
    assert {i for i, s in st.items() if s == "not_run"} == skipped
    assert all(s == "met" for i, s in st.items() if i not in skipped)
    assert doc["thing"] == "kit-remote-2" and doc["target"].startswith("real board board on")
