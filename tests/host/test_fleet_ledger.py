"""Bulk provisioning's fast paths: ledger lines and manifest rows made without json.dumps,
workers' segments, duplicates across workers, a run killed midway, the leaf profile."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from host_tools.boards.registry import load_board
from provisioning import fleet as fleet_mod
from provisioning.ca import CertificateAuthority, Usage, new_key
from provisioning.fleet import FleetSpec, provision_fleet
from provisioning.manifest import DeviceRecord, assign_names, generated_records
from provisioning.store import LEDGER, MANIFEST_COLUMNS, SEGMENT, FleetStore

SPEC = FleetSpec.for_board("abc-ats.iot.eu-west-1.amazonaws.com", load_board("esp32-devkitc"))
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca") / "ca", "Ledger test")


def _ledger(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / LEDGER).read_text().splitlines()]


# Records a caller may build directly (manifest.parse_records would refuse some of these):
# quotes, backslashes, commas, control characters, non-ASCII, a JSON-looking value.
ODD = [
    DeviceRecord(serial='Q"1', model="tk", thing_name="odd-1"),
    DeviceRecord(serial="B\\2", model="tk,csv", thing_name="odd-2", hw_rev="r\n2"),
    DeviceRecord(serial="U3", model="mod\u00e9le", thing_name="odd-3", mfg_date="\u2028"),
    DeviceRecord(serial="C4", model='{"a":1}', thing_name="odd-4", hw_rev="\x00\t"),
    DeviceRecord(serial=" sp5 ", model="tk", thing_name="odd-5", mac="aa:bb:cc:dd:ee:05"),
]


@pytest.mark.parametrize("jobs", [1, 2])
def test_escaping_sensitive_records_round_trip(
    ca: CertificateAuthority, tmp_path: Path, jobs: int
) -> None:
    plain, err = assign_names(generated_records(80, "tk"))
    assert err is None
    recs = plain[:40] + ODD + plain[40:]
    out = tmp_path / "out"
    res = provision_fleet(ca, SPEC, recs, out, ca.root_der, jobs=jobs)
    assert (res.issued, res.refused) == (85, [])
    text = (out / LEDGER).read_text()
    lines = text.splitlines()
    assert len(lines) == 85 and text.endswith("\n")
    by_thing = {}
    for line in lines:
        ev = json.loads(line)  # every line is valid JSON
        # ... and byte for byte what json.dumps writes (the line is made without it).
        assert line == json.dumps(ev, separators=(",", ":"))
        by_thing[ev["thing_name"]] = ev
    for rec in recs:
        ev = by_thing[rec.thing_name]
        for k in ("serial", "mac", "model", "hw_rev", "mfg_date"):
            assert ev[k] == getattr(rec, k)
        assert ev["config"] == SPEC.device_config(rec.thing_name).to_json()
        cert = x509.load_der_x509_certificate(base64.b64decode(ev["cert"]))
        assert f"{cert.serial_number:x}" == ev["cert_serial"]
        assert cert.fingerprint(hashes.SHA256()).hex() == ev["fingerprint"]
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == rec.thing_name
    # The manifests hold the same values, and are exactly what csv and json write.
    store = FleetStore(out)
    rows = store.manifest_rows()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    w.writerows([r[c] for c in MANIFEST_COLUMNS] for r in rows)
    assert (out / "manifest.csv").read_text() == buf.getvalue()
    body = ",\n".join(json.dumps(r, separators=(", ", ": ")) for r in rows)
    assert (out / "manifest.json").read_text() == '{"devices": [\n' + body + "\n]}\n"
    got = {r["thing_name"]: r for r in csv.DictReader((out / "manifest.csv").open())}
    assert got["odd-2"]["hw_rev"] == "r\n2" and got["odd-2"]["model"] == "tk,csv"
    assert json.loads((out / "manifest.json").read_text())["devices"] == rows
    assert not list(out.glob(SEGMENT.format("*")))


def test_duplicate_identities_across_workers_are_refused(
    ca: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()
    monkeypatch.setattr(fleet_mod, "new_key", lambda: key)  # inherited by the workers
    recs, _ = assign_names(generated_records(120, "tk"))
    res = provision_fleet(ca, SPEC, recs, tmp_path / "out", ca.root_der, jobs=2)
    assert res.issued == 1 and len(res.refused) == 119
    assert all("duplicate key: already used by" in r for r in res.refused)
    (only,) = _ledger(tmp_path / "out")
    manifest = list(csv.DictReader((tmp_path / "out/manifest.csv").open()))
    assert [r["thing_name"] for r in manifest] == [only["thing_name"]]


def test_entries_read_back_lazily_equal_the_loaded_ones(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    recs, _ = assign_names(generated_records(70, "tk"))
    out = tmp_path / "out"
    # The trees are written from the entries the run read back from its own ledger lines.
    res = provision_fleet(ca, SPEC, recs, out, ca.root_der, trees=True, jobs=2)
    assert (res.issued, res.trees) == (70, 70)
    loaded = FleetStore(out).devices  # parsed from the ledger by a new store
    assert len(loaded) == 70
    for thing, e in loaded.items():
        tree = out / "devices" / thing
        assert (tree / "certs/device.crt.der").read_bytes() == base64.b64decode(e.cert)
        assert (tree / "certs/device.key.der").read_bytes() == base64.b64decode(e.key)
        assert (tree / "config.json").read_bytes() == e.config_bytes()
    res = provision_fleet(ca, SPEC, recs, out, ca.root_der, jobs=2)
    assert (res.issued, res.skipped) == (0, 70)


def test_stale_segments_are_deleted_when_the_fleet_is_opened(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale = out / SEGMENT.format(0)
    stale.write_text('{"event":"issued","thing_name":"never-recorded"}\n')
    assert FleetStore(out).devices == {}  # read-only open: not touched
    assert stale.exists()
    with FleetStore(out):
        assert not stale.exists()


KILL = r"""
import sys, time
from pathlib import Path
from host_tools.boards.registry import load_board
from provisioning import fleet
from provisioning.ca import CertificateAuthority
from provisioning.fleet import FleetSpec, provision_fleet
from provisioning.manifest import assign_names, generated_records
fleet.CHUNK = 8
ca = CertificateAuthority.load(Path(sys.argv[1]))
spec = FleetSpec.for_board("abc-ats.iot.eu-west-1.amazonaws.com", load_board("esp32-devkitc"))
recs, _ = assign_names(generated_records(int(sys.argv[3]), "tk"))
def slow(phase, done, total):
    time.sleep(0.02)  # give the test time to kill the run midway
provision_fleet(ca, spec, recs, Path(sys.argv[2]), ca.root_der, jobs=2, progress=slow)
print("FINISHED")
"""


def test_run_killed_midway_resumes_without_duplicates(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    n = 400
    out = tmp_path / "out"
    (tmp_path / "kill.py").write_text(KILL)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "kill.py"), str(ca.directory), str(out), str(n)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    ledger = out / LEDGER
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if ledger.exists() and ledger.read_bytes().count(b"\n") >= 40:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers, mid-write or not
    proc.wait(timeout=30)
    # The workers die too, but not at once: until the last is gone it holds the store's
    # lock (seen: BlockingIOError on resume once).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    before = ledger.read_bytes()
    kept = before.count(b"\n")
    assert 40 <= kept < n
    res = provision_fleet(ca, SPEC, assign_names(generated_records(n, "tk"))[0], out, ca.root_der)
    assert res.skipped == kept and res.issued == n - kept and not res.refused
    after = _ledger(out)
    assert len(after) == n and len({e["thing_name"] for e in after}) == n
    assert len({e["fingerprint"] for e in after}) == n
    assert (out / LEDGER).read_bytes().startswith(before[: before.rfind(b"\n") + 1])
    for e in after[kept - 2 : kept + 2]:
        cert = x509.load_der_x509_certificate(base64.b64decode(e["cert"]))
        cert.verify_directly_issued_by(ca.issuing.cert)
    assert not list(out.glob(SEGMENT.format("*")))
    assert len(list(csv.DictReader((out / "manifest.csv").open()))) == n


def test_leaf_profile_is_the_typed_extensions_profile(ca: CertificateAuthority) -> None:
    issue = ca.leaf_issuer(Usage.CLIENT)
    key = new_key()
    fast = issue("kit-1", key.public_key())  # one-step builder, extensions as bytes
    checked = issue("kit-1", key, fast.serial_number)  # the builder's checked path
    ikey = ca.issuing.key
    typed = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kit-1")]))
        .issuer_name(ca.issuing.cert.subject)
        .public_key(key.public_key())
        .serial_number(fast.serial_number)
        .not_valid_before(fast.not_valid_before_utc)
        .not_valid_after(fast.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, True, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ikey.public_key()), critical=False
        )
        .sign(ikey, hashes.SHA256())
    )
    assert fast.tbs_certificate_bytes == checked.tbs_certificate_bytes
    assert fast.tbs_certificate_bytes == typed.tbs_certificate_bytes
    fast.verify_directly_issued_by(ca.issuing.cert)
    ku = fast.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_agreement and not ku.value.key_cert_sign
    assert fast.not_valid_before_utc < dt.datetime.now(dt.UTC) < fast.not_valid_after_utc
    # A server leaf with names takes the same path (ca.issue).
    srv = ca.issue("broker", Usage.SERVER, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    san = srv.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert srv.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == srv.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
