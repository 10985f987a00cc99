"""Bulk identities: provision_fleet, the ledger, resume, duplicates, images, the CLI."""

from __future__ import annotations

import argparse
import base64
import csv
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from host_tools.boards.registry import load_board
from host_tools.errors import UserError
from host_tools.identity import cli as provision_cli
from host_tools.paths import FIRMWARE
from provisioning import fleet as fleet_mod
from provisioning.bundle import CERT_FILE, CONFIG_FILE, KEY_FILE, SERVER_CA_FILE
from provisioning.ca import CertificateAuthority
from provisioning.fleet import FleetError, FleetSpec, provision_fleet
from provisioning.image import read_image
from provisioning.manifest import DeviceRecord, assign_names, generated_records
from provisioning.store import LEDGER, FleetStore

# esp32-devkitc runs the stock ESP32_GENERIC image: from v1.26 MicroPython creates its vfs
# at boot after 'factory' (0x200000) to the end of the 4 MB flash; v1.24/v1.25 have the
# same vfs in their partitions-4MiB.csv. The spec takes both from the board definition.
PART = 0x200000
SPEC = FleetSpec.for_board("abc-ats.iot.eu-west-1.amazonaws.com", load_board("esp32-devkitc"))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca") / "ca", "Fleet test")


def _recs(n: int, start: int = 1, model: str = "tk") -> list[DeviceRecord]:
    ok, err = assign_names(generated_records(n, model, "SN", start))
    assert err is None
    return ok


def _ledger(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / LEDGER).read_text().splitlines()]


def test_fleet_identities_configs_images_manifest(ca: CertificateAuthority, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = provision_fleet(
        ca,
        SPEC,
        _recs(150),
        out,
        ca.root_der,
        images=True,
        trees=True,
        extra_files={"board.json": b"{}"},
        jobs=2,
    )
    assert (res.issued, res.skipped, res.images, res.trees, res.refused) == (150, 0, 150, 150, [])
    assert "provisioned 150 devices (150 issued, 0 refused)" in res.summary()
    ledger = _ledger(out)
    assert len(ledger) == 150 and stat.S_IMODE((out / LEDGER).stat().st_mode) == 0o600
    assert len({e["fingerprint"] for e in ledger}) == 150
    assert len({e["cert_serial"] for e in ledger}) == 150
    assert len({e["spki"] for e in ledger}) == 150
    for e in ledger[:5]:
        cert = x509.load_der_x509_certificate(base64.b64decode(e["cert"]))
        key = serialization.load_der_private_key(base64.b64decode(e["key"]), None)
        assert cert.subject.rfc4514_string() == f"CN={e['thing_name']}"
        assert cert.public_key().public_numbers() == key.public_key().public_numbers()
        cert.verify_directly_issued_by(ca.issuing.cert)
        assert e["config"] == SPEC.device_config(e["thing_name"]).to_json()
        files = read_image((out / "images" / f"{e['thing_name']}.littlefs.bin").read_bytes(), PART)
        assert set(files) == {"board.json", CONFIG_FILE, CERT_FILE, KEY_FILE, SERVER_CA_FILE}
        assert files[CERT_FILE] == base64.b64decode(e["cert"])
        assert files[SERVER_CA_FILE] == ca.root_der
        tree = out / "devices" / e["thing_name"]
        assert (tree / KEY_FILE).read_bytes() == files[KEY_FILE]
        assert stat.S_IMODE((tree / KEY_FILE).stat().st_mode) == 0o600
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 150 and rows[0]["thing_name"] == "tk-SN00000001"
    assert rows[0]["fingerprint"] == ledger[0]["fingerprint"] or rows[0]["fingerprint"] in {
        e["fingerprint"] for e in ledger
    }
    assert rows[0]["image"] == "images/tk-SN00000001.littlefs.bin" and rows[0]["not_after"]
    doc = json.loads((out / "manifest.json").read_text())
    assert len(doc["devices"]) == 150 and "key" not in doc["devices"][0]


def test_rerun_resumes_and_never_issues_twice(ca: CertificateAuthority, tmp_path: Path) -> None:
    out = tmp_path / "out"
    provision_fleet(ca, SPEC, _recs(10), out, ca.root_der, jobs=1)
    first = (out / LEDGER).read_bytes()
    res = provision_fleet(ca, SPEC, _recs(10), out, ca.root_der, jobs=1)
    assert (res.issued, res.skipped) == (0, 10)
    assert (out / LEDGER).read_bytes() == first
    # More devices later: only the new ones are issued; images for all on request.
    res = provision_fleet(ca, SPEC, _recs(12), out, ca.root_der, images=True, jobs=1)
    assert (res.issued, res.skipped, res.images) == (2, 10, 12)
    assert (out / LEDGER).read_bytes().startswith(first)


def test_interrupted_run_resumes(
    ca: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.setattr(fleet_mod, "CHUNK", 8)

    def stop(phase: str, done: int, total: int) -> None:
        if done >= 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        provision_fleet(ca, SPEC, _recs(40), out, ca.root_der, jobs=1, progress=stop)
    before = _ledger(out)
    assert len(before) == 16
    # A line cut short by the interruption is not an identity, and is dropped.
    with open(out / LEDGER, "ab") as f:
        f.write(b'{"event":"issued","thing_name":"tk-SN000000')
    res = provision_fleet(ca, SPEC, _recs(40), out, ca.root_der, jobs=1)
    assert (res.issued, res.skipped) == (24, 16)
    after = _ledger(out)
    assert after[:16] == before and len(after) == 40
    assert len({e["thing_name"] for e in after}) == 40


def test_duplicates_against_the_ledger_write_nothing(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    spec = FleetSpec(endpoint="h", name_template="{model}-{serial}")
    first = [DeviceRecord(serial="S1", model="m", mac="aa:bb:cc:00:00:01", index=1)]
    provision_fleet(ca, spec, assign_names(first)[0], out, ca.root_der, jobs=1)
    again = [
        DeviceRecord(serial="S2", model="m", mac="aa:bb:cc:00:00:01", index=1),  # MAC of S1
        DeviceRecord(serial="S3", model="m", index=2),
    ]
    res = provision_fleet(ca, spec, assign_names(again)[0], out, ca.root_der, images=False, jobs=1)
    assert res.issued == 1 and res.refused_serials == {"S2"}
    assert (
        "duplicate MAC aa:bb:cc:00:00:01 (serial S2): already provisioned as m-S1" in res.refused[0]
    )
    assert "nothing written" in res.refused[0]
    assert {e["serial"] for e in _ledger(out)} == {"S1", "S3"}


def test_duplicate_key_is_refused(
    ca: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = fleet_mod.new_key()
    monkeypatch.setattr(fleet_mod, "new_key", lambda: key)  # a broken RNG, say
    res = provision_fleet(ca, SPEC, _recs(3), tmp_path / "out", ca.root_der, images=True, jobs=1)
    assert res.issued == 1 and len(res.refused) == 2
    assert all("duplicate key: already used by tk-SN00000001" in r for r in res.refused)
    assert len(_ledger(tmp_path / "out")) == 1
    assert [p.name for p in (tmp_path / "out/images").iterdir()] == ["tk-SN00000001.littlefs.bin"]


def test_other_fleet_settings_are_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    provision_fleet(ca, SPEC, _recs(1), tmp_path / "out", ca.root_der, jobs=1)
    other = FleetSpec(endpoint="elsewhere", board="esp32-devkitc", partition_size=PART)
    with pytest.raises(FleetError, match="endpoint"):
        provision_fleet(ca, other, _recs(1), tmp_path / "out", ca.root_der, jobs=1)
    with FleetStore(tmp_path / "out"), pytest.raises(Exception, match="in use"):
        provision_fleet(ca, SPEC, _recs(1), tmp_path / "out", ca.root_der, jobs=1)


def test_filesystem_layout_comes_from_the_board() -> None:
    assert (SPEC.fs_offset, SPEC.partition_size) == (0x200000, PART)
    # -OTA image: vfs after ota_1
    ota = FleetSpec.for_board("h", load_board("esp32-devkitc-ota"))
    assert (ota.fs_offset, ota.partition_size) == (0x310000, 0xF0000)
    # 16 MB flash: the rest after factory
    core2 = FleetSpec.for_board("h", load_board("m5stack-core2"))
    assert (core2.fs_offset, core2.partition_size) == (0x200000, 0xE00000)
    # thingkit's old custom layout is refused: the image would land inside the stock vfs.
    devkitc = load_board("esp32-devkitc")
    with pytest.raises(FleetError, match=r"0x320000\+0xe0000 is not board esp32-devkitc's"):
        FleetSpec.for_board("h", devkitc, partition_size=0xE0000, fs_offset=0x320000)


MOUNT = r"""
import os, sys, vfs
BS = 4096
class Dev:
    def __init__(self, data, n):
        self.b = bytearray(b"\x5a" * (n * BS))  # garbage past the image: free space
        self.b[: len(data)] = data
        self.n = n
    def readblocks(self, blk, buf, off=0):
        a = blk * BS + off
        buf[:] = self.b[a : a + len(buf)]
    def writeblocks(self, blk, buf, off=None):
        a = blk * BS + (off or 0)
        self.b[a : a + len(buf)] = buf
    def ioctl(self, op, arg):
        if op == 4: return self.n
        if op == 5: return BS
        if op == 6:
            self.b[arg * BS : (arg + 1) * BS] = b"\xff" * BS
        return 0
d = Dev(open(sys.argv[1], "rb").read(), int(sys.argv[2]) // BS)
vfs.mount(vfs.VfsLfs2(d), "/fs")   # MicroPython's own littlefs, default parameters
sys.path.insert(0, sys.argv[3])
os.chdir("/fs")
import tk.config as config
c = config.load()
print("CONFIG", c.thing_name, c.endpoint, c.port, c.cert_file)
with open("/fs/new.bin", "wb") as f:  # the device can write to it too
    f.write(b"x" * 20000)
print("STATVFS", os.statvfs("/fs")[2])
"""


def test_image_mounts_with_micropython_littlefs(ca: CertificateAuthority, tmp_path: Path) -> None:
    micropython = Path(sys.executable).parent / "micropython"
    if not micropython.exists():
        pytest.skip("MicroPython unix port not installed")
    out = tmp_path / "out"
    provision_fleet(ca, SPEC, _recs(1), out, ca.root_der, images=True, jobs=1)
    img = out / "images/tk-SN00000001.littlefs.bin"
    assert img.stat().st_size <= 128 * 1024 < PART  # trimmed: the files, not the partition
    (tmp_path / "mount.py").write_text(MOUNT)
    r = subprocess.run(
        # The RAM block device holds the whole 2 MiB partition: more than the default heap.
        [str(micropython), "-X", "heapsize=8M", str(tmp_path / "mount.py"), str(img), str(PART)]
        + [str(FIRMWARE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"CONFIG tk-SN00000001 {SPEC.endpoint} 8883 certs/device.crt.der" in r.stdout
    assert f"STATVFS {PART // 4096}" in r.stdout


# -- CLI ----------------------------------------------------------------------------------
def _run(capsys, *argv: str) -> tuple[int, str, str]:
    p = argparse.ArgumentParser(prog="thingkit")
    provision_cli.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(list(argv))
    try:
        rc = args.func(args)
    except UserError as exc:
        print(f"thingkit: {exc.line()}", file=sys.stderr)
        rc = 1
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def cli_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Path:
    monkeypatch.setenv("THINGKIT_CA_PASSPHRASE", "correct horse")
    d = tmp_path / "ca"
    rc, _out, err = _run(capsys, "ca", "init", "--dir", str(d), "--name", "CLI", "--yes")
    assert rc == 0, err
    return d


def _aws_provision(d: Path, ca: Path, *extra: str) -> list[str]:
    return [
        "provision",
        "--fleet",
        str(d),
        "--ca",
        str(ca),
        "--target",
        "aws",
        "--endpoint",
        "abc-ats.iot.eu-west-1.amazonaws.com",
        "--board",
        "esp32-devkitc",
        *extra,
    ]


def test_cli_manifest_with_duplicate_serial_writes_nothing(
    cli_ca: Path, tmp_path: Path, capsys
) -> None:
    m = tmp_path / "allow.csv"
    m.write_text("serial,model\nA1,tk\nA2,tk\nA1,tk\n")
    out = tmp_path / "fleet"
    rc, _o, err = _run(capsys, *_aws_provision(out, cli_ca, "--manifest", str(m), "--yes"))
    assert rc == 1 and "Traceback" not in err
    assert err.splitlines() == [err.strip()]
    assert "duplicate serial 'A1' in records 1, 3" in err and "nothing written" in err
    assert not (out / LEDGER).exists()
    # --skip-refused provisions the others; A1 gets nothing.
    rc, o, err = _run(
        capsys,
        *_aws_provision(out, cli_ca, "--manifest", str(m), "--yes", "--skip-refused", "--json"),
    )
    doc = json.loads(o)
    assert rc == 1 and doc["issued"] == 1 and doc["images"] == 1
    assert [e["serial"] for e in _ledger(out)] == ["A2"]
    assert [p.name for p in (out / "images").iterdir()] == ["tk-A2.littlefs.bin"]


def test_cli_count_dry_run_then_real(cli_ca: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "fleet"
    rc, o, _ = _run(capsys, *_aws_provision(out, cli_ca, "--count", "5", "--dry-run"))
    assert rc == 0 and "would issue 5 identities" in o and not out.exists()
    # Issuing on this host is local and resumable: no question, with or without a terminal.
    rc, o, err = _run(capsys, *_aws_provision(out, cli_ca, "--count", "5"))
    assert rc == 0, err
    assert "provisioned 5 devices (5 issued, 0 refused)" in o and "identities/s" in o
    assert "write-flash 0x200000" in o
    rc, o, _ = _run(capsys, *_aws_provision(out, cli_ca, "--count", "5", "--yes"))
    assert "0 issued, 5 already provisioned" in o


def test_cli_ca_show_and_rotate(cli_ca: Path, capsys) -> None:
    rc, _, err = _run(capsys, "ca", "rotate-intermediate", "--dir", str(cli_ca))
    assert rc == 1 and "without confirmation" in err and "add --yes" in err  # not a terminal
    rc, o, _ = _run(capsys, "ca", "show", "--dir", str(cli_ca), "--json")
    doc = json.loads(o)
    assert rc == 0 and doc["keys_encrypted"] and "CN=CLI Issuing CA 1" in doc["issuing"]["subject"]
    rc, o, _ = _run(capsys, "ca", "rotate-intermediate", "--dir", str(cli_ca), "--yes", "--json")
    doc = json.loads(o)
    assert rc == 0 and "Issuing CA 2" in doc["issuing"]["subject"] and len(doc["retired"]) == 1


def test_cli_wrong_passphrase_is_one_line(
    cli_ca: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THINGKIT_CA_PASSPHRASE", "wrong")
    rc, _o, err = _run(capsys, *_aws_provision(tmp_path / "f", cli_ca, "--count", "1", "--yes"))
    assert rc == 1 and "cannot open the issuing key" in err and "Traceback" not in err
