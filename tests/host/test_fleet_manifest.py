"""The allow list: parsing, checks, thing naming convention, duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioning.manifest import (
    ManifestError,
    assign_names,
    check_template,
    generated_records,
    load_manifest,
    normalise_mac,
)

CSV = """serial,mac,model,hw_rev,mfg_date
A0001,AA:BB:CC:00:00:01,tk1,rev2,2026-11-01
A0002,aabbcc000002,tk1,rev2,2026-11-01
A0003,AA-BB-CC-00-00-03,tk1,,
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_manifest_and_names(tmp_path: Path) -> None:
    recs = load_manifest(_write(tmp_path, "m.csv", CSV))
    assert [r.serial for r in recs] == ["A0001", "A0002", "A0003"]
    assert recs[1].mac == "aa:bb:cc:00:00:02" and recs[2].mac == "aa:bb:cc:00:00:03"
    named, err = assign_names(recs)
    assert err is None
    assert [r.thing_name for r in named] == ["tk1-A0001", "tk1-A0002", "tk1-A0003"]
    assert named[0].attributes() == {
        "serial": "A0001",
        "model": "tk1",
        "mac": "aabbcc000001",
        "hw_rev": "rev2",
        "mfg_date": "2026-11-01",
    }
    named, _ = assign_names(recs, "acme-{mac}")
    assert named[0].thing_name == "acme-aabbcc000001"
    named, _ = assign_names(recs, "{model}_{index:04d}")
    assert named[2].thing_name == "tk1_0003"


def test_json_manifest_both_shapes(tmp_path: Path) -> None:
    rows = [{"serial": "J1", "model": "m"}, {"serial": "J2"}]
    a = load_manifest(_write(tmp_path, "a.json", json.dumps(rows)), default_model="dflt")
    b = load_manifest(_write(tmp_path, "b.json", json.dumps({"devices": rows})), "dflt")
    assert [r.model for r in a] == ["m", "dflt"] == [r.model for r in b]


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ("X1,zz:bb:cc:00:00:01,tk1,,", "MAC"),
        ("X1,,tk1,,2026-13-01", "mfg_date"),
        (",,tk1,,", "serial is empty"),
        ("X1,,,,", "model is empty"),
    ],
)
def test_bad_records_are_named(tmp_path: Path, row: str, why: str) -> None:
    p = _write(tmp_path, "m.csv", "serial,mac,model,hw_rev,mfg_date\n" + row + "\n")
    with pytest.raises(ManifestError, match=why) as ei:
        load_manifest(p)
    assert "record 1" in str(ei.value)


def test_unknown_column_and_missing_header(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="unknown field"):
        load_manifest(_write(tmp_path, "m.csv", "serial,model,password\nA,b,c\n"))
    with pytest.raises(ManifestError, match="'serial' column"):
        load_manifest(_write(tmp_path, "n.csv", "model\nx\n"))
    with pytest.raises(ManifestError, match="no devices"):
        load_manifest(_write(tmp_path, "e.csv", "serial,model\n"))


def test_duplicate_serial_refuses_both_records_and_only_them(tmp_path: Path) -> None:
    text = CSV + "A0002,AA:BB:CC:00:00:09,tk1,rev2,2026-11-02\n"
    recs = load_manifest(_write(tmp_path, "m.csv", text))
    ok, err = assign_names(recs)
    assert [r.serial for r in ok] == ["A0001", "A0003"]
    assert err is not None and err.rejected == {"A0002"}
    assert "duplicate serial 'A0002' in records 2, 4" in str(err)


def test_duplicate_mac_and_thing_name(tmp_path: Path) -> None:
    text = CSV + "A0004,aa:bb:cc:00:00:01,tk1,,\n"
    _ok, err = assign_names(load_manifest(_write(tmp_path, "m.csv", text)))
    assert err is not None and "duplicate MAC 'aa:bb:cc:00:00:01'" in str(err)
    assert err.rejected == {"A0001", "A0004"}
    # Different serials, one thing name (the template drops the serial).
    _ok, err = assign_names(load_manifest(_write(tmp_path, "n.csv", CSV)), "{model}-{hw_rev}")
    assert err is not None and "duplicate thing name 'tk1-rev2'" in str(err)


def test_invalid_thing_name_is_refused_not_rewritten(tmp_path: Path) -> None:
    p = _write(tmp_path, "m.csv", "serial,model\nAB/12,tk1\nAB12,tk1\n")
    ok, err = assign_names(load_manifest(p))
    assert [r.thing_name for r in ok] == ["tk1-AB12"]
    assert err is not None and "'tk1-AB/12' is not valid" in str(err)


def test_templates_and_generated_records() -> None:
    with pytest.raises(ManifestError):
        check_template("{model}-{password}")
    with pytest.raises(ManifestError):
        check_template("fixed-name")
    recs = generated_records(3, "esp32-devkitc", "SN", 7)
    assert [r.serial for r in recs] == ["SN00000007", "SN00000008", "SN00000009"]
    with pytest.raises(ManifestError):
        generated_records(0, "m")
    with pytest.raises(ValueError):
        normalise_mac("aa:bb")
