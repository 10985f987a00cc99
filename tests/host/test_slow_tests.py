"""benchmarks/slow_tests.py: the slowest tests and the wall time of a run, from its JUnit
XML; and the durations file the suite's conftest.py orders tests by."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks import slow_tests
from host_tools.paths import REPO


def _junit(path: Path) -> Path:
    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", name="pytest", time="120.5")
    cases = [
        ("tests.host.test_docs", "test_html_builds_without_warnings[html]", "20.0", None),
        ("hil_tests.test_ota", "test_power_cuts_always_leave_a_bootable_kit", "80.25", None),
        ("tests.host.test_docs", "test_every_page_is_in_the_toctree", "0.01", None),
        ("hil_tests.test_app1", "test_known", "3.0", "xfail"),
        ("tests.host.test_cli", "test_bad", "1.5", "failure"),
    ]
    for cls, name, t, child in cases:
        tc = ET.SubElement(suite, "testcase", classname=cls, name=name, time=t)
        if child == "xfail":
            ET.SubElement(tc, "skipped", type="pytest.xfail", message="known")
        elif child == "failure":
            ET.SubElement(tc, "failure", message="boom")
    ET.ElementTree(suites).write(path)
    return path


def test_report_names_wall_time_slowest_tests_and_files(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)  # node ids are rebuilt from the files that exist
    r = slow_tests.read(_junit(tmp_path / "junit.xml"), top=2)
    assert r.wall_s == 120.5 and round(r.tests_s, 2) == 104.76
    assert r.counts == {"passed": 3, "xfailed": 1, "failed": 1}
    assert [c.nodeid for c in r.slowest] == [
        "hil_tests/test_ota.py::test_power_cuts_always_leave_a_bootable_kit",
        "tests/host/test_docs.py::test_html_builds_without_warnings[html]",
    ]
    assert r.by_file[0] == ("hil_tests/test_ota.py", 80.25, 1)
    assert r.by_file[1] == ("tests/host/test_docs.py", 20.01, 2)
    text = slow_tests.render(r)
    assert "wall time   2m00.5s (120.5 s)" in text
    assert "   80.25 s  passed   hil_tests/test_ota.py::test_power_cuts" in text


def test_json_and_saved_durations(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(REPO)
    junit, out = _junit(tmp_path / "junit.xml"), tmp_path / "durations.json"
    assert slow_tests.main([str(junit), "--json", "--save-durations", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["wall_s"] == 120.5 and doc["slowest"][0]["seconds"] == 80.25
    # Only tests of a second or more, by node id: what conftest.py ranks tests by.
    assert json.loads(out.read_text()) == {
        "hil_tests/test_app1.py::test_known": 3.0,
        "hil_tests/test_ota.py::test_power_cuts_always_leave_a_bootable_kit": 80.2,
        "tests/host/test_cli.py::test_bad": 1.5,
        "tests/host/test_docs.py::test_html_builds_without_warnings[html]": 20.0,
    }
    assert slow_tests.main([str(tmp_path / "none.xml")]) == 1


def test_the_suites_durations_file_is_well_formed() -> None:
    doc = json.loads((REPO / "tests" / "durations.json").read_text())
    assert doc and all(isinstance(v, (int, float)) and v >= 1 for v in doc.values())
    assert all("::" in k and k.split("::")[0].endswith(".py") for k in doc)
