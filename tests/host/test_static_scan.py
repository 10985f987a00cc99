"""Tests for the validator's host side: the static scan of firmware files, checklist
results and the report renderers."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from host_tools import device_deps
from host_tools.errors import UserError
from host_tools.kit.sim import firmware_files
from host_tools.validate.checklist import MET, NOT_MET, TITLES, Result, met, not_met
from host_tools.validate.report import render_json, render_text
from host_tools.validate.static_scan import scan


# -- static scan --------------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    out = {}
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        out[rel] = p
    return out


def test_scan_findings_with_path_and_line(tmp_path: Path) -> None:
    files = _tree(
        tmp_path,
        {
            "tk/net.py": (
                "import socket\n"  # 1
                "URL = 'https://example.com/api?x=1'\n"  # 2
                'HOST = "a1b2c3-ats.iot.eu-west-1.amazonaws.com"\n'  # 3
                "\n"  # 4
                "ADDR = ('192.168.1.20', 8883)\n"  # 5
                "NAME = 'mybench-host'\n"  # 6
                "x = 1  # nothing here\n"  # 7
            ),
            "main.py": "print('ok')\nbroker = 'mqtts://10.0.0.1:8883'\n",
        },
    )
    # the audit's rules, strict: one finding per piece of text, the most specific rule;
    # an example host counts in device code
    assert scan(files, ["mybench", "localhost"]) == [
        "main.py:2: appb.hardcoded_endpoint: IP address written in a file (use config): 10.0.0.1",
        "tk/net.py:2: appb.hardcoded_url: direct URL written in a file (use config): https://example.com/api?x=1",
        "tk/net.py:3: appb.hardcoded_endpoint: AWS IoT endpoint written in a file (use config): a1b2c3-ats.iot.eu-west-1.amazonaws.com",
        "tk/net.py:5: appb.hardcoded_endpoint: IP address written in a file (use config): 192.168.1.20",
        "tk/net.py:6: appb.configured_value: configured value in code: mybench",
    ]


def test_scan_aws_endpoint_variants(tmp_path: Path) -> None:
    files = _tree(
        tmp_path,
        {
            "a.py": (
                "h1 = 'data.iot.cn-north-1.amazonaws.com.cn'\n"
                "h2 = 'XYZ-ATS.IOT.US-EAST-1.AMAZONAWS.COM'\n"
                "h3 = 'amazonaws.com'\n"  # no host part: not an endpoint
            )
        },
    )
    assert scan(files, []) == [
        "a.py:1: appb.hardcoded_endpoint: AWS IoT endpoint written in a file (use config): data.iot.cn-north-1.amazonaws.com.cn",
        "a.py:2: appb.hardcoded_endpoint: AWS IoT endpoint written in a file (use config): XYZ-ATS.IOT.US-EAST-1.AMAZONAWS.COM",
    ]


def test_scan_url_with_aws_endpoint_is_the_endpoint(tmp_path: Path) -> None:
    files = _tree(tmp_path, {"a.py": "u = 'https://x.iot.eu-west-1.amazonaws.com:8443/mqtt'\n"})
    assert scan(files, []) == [
        "a.py:1: appb.hardcoded_endpoint: AWS IoT endpoint written in a file (use config): x.iot.eu-west-1.amazonaws.com"
    ]


def test_scan_credentials_and_loopback_in_device_code(tmp_path: Path) -> None:
    """The same rules as ``thingkit audit``: a credential in device code is found by
    validate too; strict mode counts loopback and example hosts that audit excuses."""
    from host_tools.audit.rules import scan_text

    text = "wifi_psk = 'hunter2secret'\nBROKER = 'mqtts://localhost:8883'\n"
    files = _tree(tmp_path, {"a.py": text})
    assert scan(files, []) == [
        (
            "a.py:1: appb.hardcoded_credential: credential value written in a file: "
            "wifi_psk = 'hunter2secret'"
        ),
        "a.py:2: appb.hardcoded_url: direct URL written in a file (use config): mqtts://localhost:8883",
    ]
    assert [f.rule for f in scan_text("a.py", text)] == ["appb.hardcoded_credential"]


def test_scan_several_hits_on_one_line_and_each_needle(tmp_path: Path) -> None:
    files = _tree(tmp_path, {"a.py": "S = ['1.2.3.4', '5.6.7.8']  # localhost, bench\n"})
    assert scan(files, ["bench", "localhost", ""]) == [
        "a.py:1: appb.hardcoded_endpoint: IP address written in a file (use config): 1.2.3.4",
        "a.py:1: appb.hardcoded_endpoint: IP address written in a file (use config): 5.6.7.8",
        "a.py:1: appb.configured_value: configured value in code: bench",
        "a.py:1: appb.configured_value: configured value in code: localhost",
    ]


def test_scan_clean_code_has_no_findings(tmp_path: Path) -> None:
    files = _tree(
        tmp_path,
        {
            "tk/ok.py": (
                "import config\n"
                "host = cfg.endpoint  # from config.json\n"
                "port = 8883\n"
                "ratio = 1.5\n"
                "version = (1, 2, 3)\n"
                "path = 'certs/device.crt.der'\n"
            )
        },
    )
    assert scan(files, ["mybench"]) == []


def test_scan_only_python_files(tmp_path: Path) -> None:
    files = _tree(
        tmp_path,
        {
            "config.json": '{"endpoint": "x.iot.eu-west-1.amazonaws.com"}\n',
            "README.txt": "see https://example.com\n",
            "a.py": "ok = True\n",
        },
    )
    assert scan(files, ["amazonaws"]) == []


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a, **kw):
        raise OSError("tests do not use the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_real_firmware_tree_has_no_findings(no_network: None) -> None:
    try:
        device_deps.fetch()
    except UserError as exc:
        pytest.skip(f"device packages not in the cache (run `thingkit deps fetch`): {exc}")
    files = firmware_files()
    assert {"main.py", "tk/config.py", "tk/mqtt.py", "lib/umqtt/simple.py"} <= set(files)
    assert "deps.json" not in files
    assert all(p.exists() for p in files.values())
    assert scan(files, ["bench", "localhost", "127.0.0.1"]) == []


# -- checklist results ---------------------------------------------------------------------
def test_result_titles() -> None:
    assert met("hw.tls12").title == TITLES["hw.tls12"]
    assert not_met("hw.cert_auth", "e").title == TITLES["hw.cert_auth"]
    assert Result("custom.item", MET).title == "custom.item"
    assert Result("hw.tls12", MET, title="Mine").title == "Mine"


def test_met_and_not_met() -> None:
    r = met("hw.tls12", "a", "b")
    assert (r.id, r.status, r.evidence) == ("hw.tls12", "met", ["a", "b"])
    r = not_met("hw.tls12")
    assert (r.id, r.status, r.evidence) == ("hw.tls12", "not_met", [])
    assert (MET, NOT_MET) == ("met", "not_met")


# -- report ---------------------------------------------------------------------------------
META = {"board": "sim", "thing": "kit-0001", "duration_s": 12.3}


def _results() -> list[Result]:
    return [
        met("hw.tls12", "negotiated TLSv1.2", "TLS 1.3 refused"),
        not_met("hw.cert_auth", "no client certificate seen"),
        met("hw.no_hardcoded_urls"),
    ]


def test_render_json_items_and_summary() -> None:
    doc = json.loads(render_json(_results(), META))
    assert set(doc) == {"board", "thing", "duration_s", "items", "summary", "ok"}
    assert (doc["board"], doc["thing"], doc["duration_s"]) == ("sim", "kit-0001", 12.3)
    for item in doc["items"]:
        assert set(item) == {"id", "title", "status", "evidence"}
        assert item["status"] in {"met", "not_met"}
        assert isinstance(item["evidence"], list)
    assert doc["items"] == [
        {
            "id": "hw.tls12",
            "title": TITLES["hw.tls12"],
            "status": "met",
            "evidence": ["negotiated TLSv1.2", "TLS 1.3 refused"],
        },
        {
            "id": "hw.cert_auth",
            "title": TITLES["hw.cert_auth"],
            "status": "not_met",
            "evidence": ["no client certificate seen"],
        },
        {
            "id": "hw.no_hardcoded_urls",
            "title": TITLES["hw.no_hardcoded_urls"],
            "status": "met",
            "evidence": [],
        },
    ]
    assert doc["summary"] == {"met": 2, "not_met": 1, "total": 3}
    assert doc["ok"] is False


def test_render_json_all_met_is_ok() -> None:
    doc = json.loads(render_json([met("hw.tls12"), met("hw.cert_auth")], META))
    assert doc["summary"] == {"met": 2, "not_met": 0, "total": 2}
    assert doc["ok"] is True


def test_render_text_marks() -> None:
    text = render_text(_results(), META)
    lines = text.splitlines()
    assert lines[0] == "thingkit validate: board sim, thing kit-0001"
    assert lines[1] == ""
    assert lines[2] == f"[MET    ] {'hw.tls12':26} {TITLES['hw.tls12']}"
    assert lines[3] == "            - negotiated TLSv1.2"
    assert lines[4] == "            - TLS 1.3 refused"
    assert lines[5] == f"[NOT MET] {'hw.cert_auth':26} {TITLES['hw.cert_auth']}"
    assert lines[6] == "            - no client certificate seen"
    assert lines[7].startswith("[MET    ] hw.no_hardcoded_urls")
    assert lines[-1] == "2/3 items met in 12.3 s"
    assert sum("[NOT MET]" in ln for ln in lines) == 1
    assert sum("[MET    ]" in ln for ln in lines) == 2
