"""The HIL suite as a product: the checklist summary, JUnit properties, per-test
artifacts, target selection and skips.

Unit tests of the summary logic, then the plugin end to end: pytest runs parts of
hil_tests in a subprocess, on the virtual kit and on the serial target (against a fake
board: the MicroPython unix port behind a raw REPL, hil_tests/targets/fake_board.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hil_tests.plugin import checklist, mapping
from hil_tests.plugin import report as rpt
from hil_tests.plugin.artifacts import dir_name_for
from hil_tests.plugin.timeout import bounded
from hil_tests.targets import TargetOptions, make_target
from hil_tests.targets.fake_board import FakeBoard, write_env
from hil_tests.targets.resources import load_env
from host_tools.errors import UserError
from host_tools.paths import REPO

COMPONENTS = {"env": "env (i2c_sensor, bme280)", "led": "led (led, led)"}


def O(nodeid: str, outcome: str, *items: str, detail: str = "") -> rpt.Outcome:
    return rpt.Outcome(f"hil_tests/{nodeid}", outcome, 1.0, list(items), detail)


def status(results, item_id: str) -> str:
    return next(r.status for r in results if r.id == item_id)


# -- the summary ---------------------------------------------------------------------------
def test_item_status_rules() -> None:
    outcomes = [
        O("test_a.py::test_ok", rpt.PASSED, "app1.subscribe", "hw.tls12"),
        O("test_a.py::test_bad", rpt.FAILED, "hw.tls12"),
        O("test_a.py::test_known", rpt.XFAILED, "hw.shadow_validated"),
        O("test_a.py::test_skip", rpt.SKIPPED, "lens.offline_state", detail="no power switch"),
        O("test_a.py::test_other", rpt.PASSED, "lens.offline_state"),
        O("test_a.py::test_only_skipped", rpt.SKIPPED, "lens.backoff_jitter", detail="why"),
    ]
    results = rpt.summarize(outcomes, COMPONENTS)
    assert status(results, "app1.subscribe") == rpt.MET
    assert status(results, "hw.tls12") == rpt.NOT_MET  # one of its tests failed
    assert status(results, "hw.shadow_validated") == rpt.NOT_MET  # a known failure
    assert status(results, "lens.offline_state") == rpt.MET  # a skip does not unmeet
    assert status(results, "lens.backoff_jitter") == rpt.NOT_RUN
    assert status(results, "app1.online_topic") == rpt.NO_TEST
    assert status(results, "hw.docs_formats") == rpt.NOT_HIL
    assert [r.id for r in results if r.section == checklist.APP2] == ["app2.env", "app2.led"]
    c = rpt.counts(results)
    assert (c[rpt.MET], c[rpt.NOT_MET], c[rpt.NOT_RUN]) == (2, 2, 1)


def test_app2_star_means_every_component_of_the_board() -> None:
    results = rpt.summarize([O("test_app2.py::test_r", rpt.PASSED, "app2.*")], COMPONENTS)
    assert status(results, "app2.env") == status(results, "app2.led") == rpt.MET
    env = next(r for r in results if r.id == "app2.env")
    assert "bme280" in env.title


def test_renderings_name_items_tests_and_artifacts(tmp_path) -> None:
    outcomes = [
        rpt.Outcome(
            "hil_tests/test_tls_negative.py::test_x[expired]",
            rpt.PASSED,
            2.5,
            ["hw.tls12"],
            artifacts="test_tls_negative__test_x-expired",
        ),
        O("test_b.py::test_y", rpt.FAILED, "hw.cert_auth", detail="assert <1> | x"),
    ]
    paths = rpt.write(tmp_path, outcomes, COMPONENTS, {"target": "sim", "board": "sim"})
    md = paths["md"].read_text()
    assert "| `hw.tls12` | **MET** |" in md and "| `hw.cert_auth` | **NOT MET** |" in md
    assert "`test_x[expired]` passed" in md
    # links relative to the summary's own directory, where the artifacts are
    assert "[test_tls_negative__test_x-expired](test_tls_negative__test_x-expired/)" in md
    assert "assert <1> \\| x" in md  # table cells stay cells
    html = paths["html"].read_text()
    assert "<code>hw.tls12</code>" in html and "assert &lt;1&gt;" in html
    assert "<a href='test_tls_negative__test_x-expired/'>" in html
    doc = json.loads(paths["json"].read_text())
    assert doc["item_counts"]["met"] == 1 and doc["outcome_counts"] == {"passed": 1, "failed": 1}
    assert doc["components"] == COMPONENTS


def _junit(path: Path, cases: list[tuple[str, str, dict, str | None]]) -> Path:
    suite = ET.Element("testsuite")
    for nodeid, name, props, child in cases:
        tc = ET.SubElement(suite, "testcase", classname="hil_tests.x", name=name, time="1.5")
        pe = ET.SubElement(tc, "properties")
        for k, v in {"hil_nodeid": nodeid, **props}.items():
            ET.SubElement(pe, "property", name=k, value=v)
        if child == "failure":
            ET.SubElement(tc, "failure", message="AssertionError: no 409")
        elif child == "xfail":
            ET.SubElement(tc, "skipped", type="pytest.xfail", message="firmware: loop")
        elif child == "skip":
            ET.SubElement(tc, "skipped", type="pytest.skip", message="no port")
    ET.ElementTree(ET.Element("testsuites")).getroot().append(suite)
    ET.ElementTree(suite).write(path)
    return path


def test_summary_rebuilt_from_junit_files_of_several_boards(tmp_path, capsys) -> None:
    comps = json.dumps({"env": "env (i2c_sensor, bme280)"})
    a = _junit(
        tmp_path / "a.xml",
        [
            (
                "hil_tests/t.py::test_1",
                "test_1",
                {"checklist": "hw.tls12", "hil_components": comps},
                None,
            ),
            (
                "hil_tests/t.py::test_2",
                "test_2",
                {"checklist": "app2.*", "hil_target": "serial"},
                "skip",
            ),
        ],
    )
    b = _junit(
        tmp_path / "b.xml",
        [("hil_tests/t.py::test_3", "test_3", {"checklist": "hw.shadow_validated"}, "xfail")],
    )
    outcomes, components = rpt.from_junit(a)
    assert [o.outcome for o in outcomes] == [rpt.PASSED, rpt.SKIPPED]
    assert components == {"env": "env (i2c_sensor, bme280)"}
    rc = rpt.main([str(a), str(b), "--out", str(tmp_path / "out")])
    assert rc == 1  # hw.shadow_validated is not met
    doc = json.loads((tmp_path / "out/summary.json").read_text())
    items = {i["id"]: i["status"] for i in doc["items"]}
    assert items["hw.tls12"] == "met" and items["hw.shadow_validated"] == "not met"
    assert items["app2.env"] == "not run"
    assert "1 items met, 1 not met" in capsys.readouterr().out


def test_names_markers_and_mapping() -> None:
    assert dir_name_for("hil_tests/test_tls_negative.py::test_x[unknown-ca]") == (
        "test_tls_negative__test_x-unknown-ca"
    )
    assert checklist.is_known("lens.least_privilege") and checklist.is_known("app2.env")
    assert checklist.is_known("app2.*") and not checklist.is_known("lens.least_priviledge")
    with pytest.raises(KeyError):
        checklist.item("hw.nope")
    entry = mapping.lookup(
        "hil_tests/test_app1.py::test_ping_with_garbage_payload_is_answered_and_kit_survives"
    )
    assert entry is not None and entry.checklist == ("app1.subscribe",)
    for key, needs in mapping.TABLE.items():
        assert all(checklist.is_known(i) for i in needs.checklist), key


def test_time_limit_fails_the_block() -> None:
    t0 = time.monotonic()
    expected = pytest.raises(pytest.fail.Exception, match="HIL time-out: slow step ran over 0 s")
    with expected, bounded(0.2, "slow step"):
        time.sleep(5)
    assert time.monotonic() - t0 < 2


# -- targets --------------------------------------------------------------------------------
def test_serial_target_needs_a_port_and_board() -> None:
    with pytest.raises(UserError, match="needs --port URL and --board ID"):
        make_target(TargetOptions(target="serial"))
    t = make_target(TargetOptions(target="serial", port="/dev/ttyUSB0", board="esp32-devkitc"))
    assert t.name == "serial" and t.board.id == "esp32-devkitc"
    assert "power_cut" in t.capabilities and "virtual_kit" not in t.capabilities


def test_env_file_is_checked(tmp_path) -> None:
    bad = tmp_path / "bench.toml"
    bad.write_text(
        '[[board]]\nname = "a"\nboard = "esp32-devkitc"\nport = "/dev/x"\npower = "magic"\n'
    )
    with pytest.raises(UserError, match="power must be one of rts, command, none"):
        load_env(bad)
    bad.write_text(
        '[[board]]\nname = "a"\nboard = "esp32-devkitc"\nport = "/dev/x"\npower = "command"\n'
    )
    with pytest.raises(UserError, match="needs power_on and power_off"):
        load_env(bad)
    good = tmp_path / "good.toml"
    good.write_text(
        '[bench]\ndevice_address = "192.0.2.1"\n'
        '[[board]]\nname = "a"\nboard = "esp32-devkitc-bme280"\nport = "/dev/ttyUSB0"\n'
        'firmware = "fw/mp.bin"\n'
        '[[board]]\nname = "b"\nboard = "esp32-c3-devkitm-1"\nport = "rfc2217://bench-pi.local:4000"\n'
        'reset = "none"\npower = "none"\n'
    )
    env = load_env(good)
    assert env.bench.endpoint_name == "192.0.2.1" and not env.bench.on_loopback
    assert env.boards[0].firmware == tmp_path / "fw/mp.bin"
    t = make_target(TargetOptions(env_file=good, env_board="b"))
    assert t.board.id == "esp32-c3-devkitm-1" and t.capabilities == frozenset()
    assert t.device_endpoint().listen == "192.0.2.1"


# -- the plugin, end to end ---------------------------------------------------------------
def run_hil(
    tmp_path: Path, *args: str, timeout: float = 240
) -> tuple[subprocess.CompletedProcess, Path, Path]:
    junit, reports = tmp_path / "junit.xml", tmp_path / "reports"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={junit}",
            f"--report-dir={reports}",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    return done, junit, reports


def _cases(junit: Path) -> dict[str, ET.Element]:
    return {tc.get("name"): tc for tc in ET.parse(junit).getroot().iter("testcase")}


def _props(tc: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in tc.iter("property")}


def test_sim_run_writes_junit_properties_artifacts_and_summary(tmp_path) -> None:
    """Two pytest-xdist workers, each with its own bench and kit: one summary and one
    JUnit XML cover both (the controller folds the workers' reports)."""
    done, junit, reports = run_hil(
        tmp_path,
        "hil_tests/test_tls_negative.py::test_control_valid_server_gets_mqtt_connect_over_tls12",
        "hil_tests/test_tls_negative.py::test_device_refuses_bad_server[expired]",
        "-n",
        "2",
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "thingkit HIL checklist" in done.stdout
    cases = _cases(junit)
    props = _props(cases["test_control_valid_server_gets_mqtt_connect_over_tls12"])
    assert props["checklist"] == "hw.tls12 hw.cert_auth" and props["hil_target"] == "sim"
    art = reports / props["artifacts"]  # relative to the report dir, as the summary links it
    assert any(p.name.startswith("console-hil-") for p in art.iterdir()), list(art.iterdir())
    assert (art / "broker.log").exists()
    summary = (reports / "summary.md").read_text()
    assert "| `hw.tls12` | **MET** |" in summary and "| `hw.cert_auth` | **MET** |" in summary
    assert "test_device_refuses_bad_server[expired]` passed" in summary
    doc = json.loads((reports / "summary.json").read_text())
    assert doc["board"] == "sim" and doc["outcome_counts"] == {"passed": 2}
    assert doc["workers"] == "2" and doc["components"]
    html = (reports / "summary.html").read_text()
    for t in doc["tests"]:  # every link of the summary leads to the test's artifacts
        assert f"<a href='{t['artifacts']}/'>" in html
        assert (reports / t["artifacts"] / "broker.log").is_file()


def test_serial_target_refuses_parallel_workers(tmp_path) -> None:
    done, _, _ = run_hil(tmp_path, "hil_tests/test_tls_negative.py", "--target=serial", "-n", "2")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "drives one board at a time: run the HIL tests without -n" in done.stderr


def test_serial_without_a_port_skips_every_test_with_the_reason(tmp_path) -> None:
    done, junit, reports = run_hil(tmp_path, "hil_tests/test_tls_negative.py", "--target", "serial")
    assert done.returncode == 0, done.stdout[-2000:]
    skipped = [tc.find("skipped") for tc in _cases(junit).values()]
    assert skipped and all(s is not None for s in skipped)
    assert all("needs --port URL and --board ID" in s.get("message", "") for s in skipped)
    doc = json.loads((reports / "summary.json").read_text())
    assert {i["id"]: i["status"] for i in doc["items"]}["hw.tls12"] == "not run"


@pytest.mark.slow
def test_same_tests_on_the_serial_target_against_a_fake_board(tmp_path) -> None:
    """The serial target walks a board off -> flashed -> provisioned -> online with
    thingkit deploy (mpremote) and its console over socket://; tests run unchanged, and
    a test needing the virtual kit is skipped with the reason."""
    with FakeBoard(tmp_path / "board") as board:
        env = write_env(tmp_path / "fake.toml", [board])
        done, junit, reports = run_hil(
            tmp_path,
            "hil_tests/test_tls_negative.py::test_device_refuses_bad_server[unknown-ca]",
            "hil_tests/test_shadow_conformance.py::test_delta_applied_and_reported",
            "hil_tests/test_isolation.py",
            f"--env-file={env}",
        )
    assert done.returncode == 0, done.stdout[-4000:]
    cases = _cases(junit)
    assert cases["test_device_refuses_bad_server[unknown-ca]"].find("skipped") is None
    assert cases["test_delta_applied_and_reported"].find("failure") is None
    skip = cases["test_thing_cannot_reach_another_things_topics"].find("skipped")
    assert skip is not None and "target serial lacks virtual_kit" in skip.get("message")
    doc = json.loads((reports / "summary.json").read_text())
    assert doc["target"].startswith("real board fake-0 on socket://127.0.0.1:")
    assert {i["id"]: i["status"] for i in doc["items"]}["hw.shadow_validated"] == "met"
