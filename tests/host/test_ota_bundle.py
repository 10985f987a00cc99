"""Host side of OTA bundles: keys, build, sign, inspect (library and ``thingkit ota``)."""

from __future__ import annotations

import hashlib
import json
import stat
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from host_tools import cli
from host_tools.errors import UserError
from host_tools.ota import bundle, keys
from provisioning.bundle import OTA_PUBKEY_FILE, BundleError, write_ota_pubkey

SOURCE = {
    "tk/__init__.py": "",
    "tk/version.py": '# Firmware version.\nVERSION = "0.1.0"\n',
    "tk/hello.py": "def hi():\n    return 'hi'\n",
    "hal/__init__.py": "NAME = 'sim'\n",
    "main.py": "import tk.main\n",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_error(err: str, starts: str) -> str:
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if not ln.endswith("…")]  # progress: work under way
    assert len(lines) == 1 and lines[0].startswith("thingkit: " + starts), err
    return lines[0]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for rel, text in SOURCE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    p = tmp_path / "keys" / "signing-key.pem"
    keys.generate_key(p)
    return p


@pytest.fixture(autouse=True)
def reproducible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


# -- keys ---------------------------------------------------------------------------------
def test_keygen_writes_private_0600_and_public_der(tmp_path: Path, capsys) -> None:
    p = tmp_path / "k" / "signing-key.pem"
    rc, out, _ = run(capsys, "ota", "keygen", "--key", str(p))
    assert rc == 0
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    der = p.with_suffix(".der").read_bytes()
    assert len(der) == 91
    pub = serialization.load_der_public_key(der)
    priv = serialization.load_pem_private_key(p.read_bytes(), None)
    assert pub.public_numbers() == priv.public_key().public_numbers()  # type: ignore[union-attr]
    assert keys.key_id(der) == hashlib.sha256(der).hexdigest()[:16] and keys.key_id(der) in out
    # A new key would orphan provisioned devices: a second keygen keeps the key (the one
    # `kit create` made, in the README's order) and says so; only --force replaces it.
    rc, out, _ = run(capsys, "ota", "keygen", "--key", str(p))
    assert rc == 0 and "kept" in out and keys.key_id(der) in out
    assert p.with_suffix(".der").read_bytes() == der
    rc, _, _ = run(capsys, "ota", "keygen", "--key", str(p), "--force")
    assert rc == 0 and p.with_suffix(".der").read_bytes() != der


def test_keygen_default_location(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("THINGKIT_HOME", str(tmp_path))
    assert run(capsys, "ota", "keygen")[0] == 0
    assert (tmp_path / "ota" / "signing-key.pem").exists()
    assert (tmp_path / "ota" / "signing-key.der").exists()


def test_open_or_create_is_stable(tmp_path: Path) -> None:
    p = keys.bench_key_path(tmp_path / "bench")
    a = keys.public_der(keys.open_or_create(p))
    b = keys.public_der(keys.open_or_create(p))
    assert a == b == p.with_suffix(".der").read_bytes()


def test_signature_is_raw_r_s_that_openssl_verifies(key_path: Path) -> None:
    key = keys.load_key(key_path)
    d = hashlib.sha256(b"msg").digest()
    sig = keys.sign_digest(key, d)
    assert len(sig) == 64
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    key.public_key().verify(
        utils.encode_dss_signature(r, s), b"msg", ec.ECDSA(hashes.SHA256())
    )  # raises if invalid
    assert keys.verify_digest(keys.public_der(key), d, sig)
    assert not keys.verify_digest(keys.public_der(key), hashlib.sha256(b"x").digest(), sig)


@pytest.mark.parametrize(
    "content, expect",
    [
        (b"not a key", "is not an unencrypted PEM private key"),
        (None, "cannot read signing key"),
        ("p384", "is not an ECDSA P-256 key"),
    ],
)
def test_bad_signing_keys(tmp_path: Path, content, expect: str) -> None:
    p = tmp_path / "k.pem"
    if content == "p384":
        k = ec.generate_private_key(ec.SECP384R1())
        content = k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(UserError, match=expect):
        keys.load_key(p)


def test_provisioning_writes_the_public_key(tmp_path: Path, key_path: Path) -> None:
    der = keys.public_der(keys.load_key(key_path))
    write_ota_pubkey(tmp_path / "flash", der)
    assert (tmp_path / "flash" / OTA_PUBKEY_FILE).read_bytes() == der
    assert OTA_PUBKEY_FILE == "certs/ota-signing.der"
    with pytest.raises(BundleError):
        write_ota_pubkey(tmp_path / "flash", der[:-1])


# -- build --------------------------------------------------------------------------------
def test_build_compiles_app_without_main_and_sets_version(src: Path) -> None:
    files = bundle.compile_app(src, "1.2.3")
    assert "main.py" not in files and "main.mpy" not in files
    assert {"tk/__init__.mpy", "tk/version.mpy", "tk/hello.mpy", "hal/__init__.mpy"} <= set(files)
    assert "lib/umqtt/simple.mpy" in files  # pinned device package, as a kit gets it
    assert all(p.endswith(".mpy") and d[:1] == b"M" for p, d in files.items())
    assert b"1.2.3" in files["tk/version.mpy"] and b"0.1.0" not in files["tk/version.mpy"]


def test_manifest_format_and_payload(src: Path) -> None:
    files = bundle.compile_app(src, "1.2.0")
    data = bundle.build(files, version="1.2.0", boards=["sim"], min_version="1.0.0")
    assert data[:8] == b"TKOTA1\n\0"
    (mlen,) = struct.unpack(">I", data[8:12])
    mb = data[12 : 12 + mlen]
    m = json.loads(mb)
    assert mb == json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
    assert data[12 + mlen : 12 + mlen + 64] == bytes(64)  # unsigned
    payload = data[12 + mlen + 64 :]
    assert payload == b"".join(files.values())
    assert m == {
        "format": 1,
        "kind": "app",
        "version": "1.2.0",
        "min_version": "1.0.0",
        "boards": ["sim"],
        "key_id": "",
        "files": [
            {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
            for p, d in files.items()
        ],
        "payload_size": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "created": 1700000000,
    }


def test_cli_build_sign_inspect_round_trip(
    tmp_path: Path, src: Path, key_path: Path, capsys
) -> None:
    unsigned, out_file = tmp_path / "b.unsigned", tmp_path / "b.tkota"
    rc, out, _ = run(
        capsys, "ota", "build", "--version", "1.2.0", "--min-version", "1.0.0",
        "--boards", "sim,esp32-devkitc", "--source", str(src), "-o", str(unsigned),
    )  # fmt: skip
    assert rc == 0 and "unsigned" in out
    rc, out, _ = run(
        capsys, "ota", "sign", "--key", str(key_path), str(unsigned), "-o", str(out_file)
    )
    der = key_path.with_suffix(".der").read_bytes()
    assert rc == 0 and keys.key_id(der) in out
    rc, out, _ = run(
        capsys,
        "ota",
        "inspect",
        str(out_file),
        "--json",
        "--pubkey",
        str(key_path.with_suffix(".der")),
    )
    rep = json.loads(out)
    assert rc == 0 and rep["ok"] and rep["signature"] == "valid" and rep["payload_ok"]
    assert rep["manifest"]["key_id"] == keys.key_id(der)
    assert rep["manifest"]["boards"] == ["sim", "esp32-devkitc"] and "chips" not in rep["manifest"]
    assert rep["sizes"]["total"] == out_file.stat().st_size
    assert rep["sizes"]["total"] == rep["sizes"]["header"] + rep["sizes"]["payload"]
    # The signature is ECDSA over SHA-256(manifest bytes), checked here with OpenSSL directly.
    b = bundle.read_bundle(out_file)
    r, s = int.from_bytes(b.signature[:32], "big"), int.from_bytes(b.signature[32:], "big")
    serialization.load_der_public_key(der).verify(  # type: ignore[union-attr]
        utils.encode_dss_signature(r, s),
        b.manifest_bytes,
        ec.ECDSA(hashes.SHA256()),  # type: ignore[call-arg]
    )
    # Payload unchanged by signing.
    assert b.payload == bundle.read_bundle(unsigned).payload
    # Human output: manifest, sizes, verdict.
    rc, out, _ = run(capsys, "ota", "inspect", str(out_file), "--pubkey", str(key_path))
    assert rc == 0 and "signature  valid" in out and "tk/hello.mpy" in out and "1.2.0" in out
    # Without a key the signature is reported as not checked, still exit 0.
    rc, out, _ = run(capsys, "ota", "inspect", str(out_file), "--json")
    assert rc == 0 and json.loads(out)["signature"] == "not_checked"


def test_firmware_kind_takes_an_app_image_and_its_descriptor_version(
    tmp_path: Path, src: Path, capsys
) -> None:
    # No MicroPython .app-bin can be downloaded here: a stand-in ESP32 app image made by
    # esptool's elf2image from a generated ELF whose app descriptor says v1.29.0.
    from esptool.bin_image import LoadFirmwareImage

    from host_tools.ota.app_image import stand_in_image

    img = tmp_path / "ESP32_GENERIC-OTA-v1.29.0.app-bin"
    img.write_bytes(stand_in_image("v1.29.0", padding=5000))
    loaded = LoadFirmwareImage("esp32", img.read_bytes())  # esptool's own parser agrees
    assert loaded.checksum == loaded.calculate_checksum() and loaded.append_digest
    out_file = tmp_path / "fw.unsigned"
    args = ("ota", "build", "--boards", "sim", "--kind", "firmware")
    rc, out, _ = run(capsys, *args, "--source", str(img), "-o", str(out_file))
    assert rc == 0 and "firmware 1.29.0 (micropython v1.29.0, esp32 app image)" in out, out
    b = bundle.read_bundle(out_file)
    m = b.manifest
    assert m["kind"] == "firmware" and m["version"] == "1.29.0" and m["chips"] == ["sim"]
    assert m["runtime"] == {"version": "v1.29.0", "project_name": "micropython", "chip": "esp32"}
    assert (
        b.files() == [(m["files"][0], img.read_bytes())] and m["files"][0]["path"] == "firmware.bin"
    )
    rc, out, _ = run(capsys, "ota", "inspect", str(out_file))
    assert "runtime    micropython v1.29.0" in out
    # A --version that disagrees with the descriptor is refused; the same one is fine.
    assert (
        run(capsys, *args, "--version", "1.29.0", "--source", str(img), "-o", str(out_file))[0] == 0
    )
    rc, _, err = run(capsys, *args, "--version", "2.0.0", "--source", str(img), "-o", str(out_file))
    assert rc != 0 and "image's app descriptor says v1.29.0" in err


@pytest.mark.parametrize(
    "content, expect",
    [
        (b"\xd2\xcd\x31" + bytes(500), "is a ROMFS image, not an ESP-IDF app image"),
        (b"hello, not an image" * 10, "is not an ESP-IDF app image (first byte 68"),
        (None, "checksum does not match (corrupt image)"),
        ("dir", "is a directory; a firmware bundle takes one ESP-IDF app image file"),
    ],
    ids=["romfs", "garbage", "corrupt", "tree"],
)
def test_firmware_kind_refuses_anything_but_an_app_image(
    tmp_path: Path, src: Path, capsys, content, expect: str
) -> None:
    from host_tools.ota.app_image import stand_in_image

    if content == "dir":
        source = src
    else:
        if content is None:
            b = bytearray(stand_in_image("v1.29.0"))
            b[200] ^= 0x40
            content = bytes(b)
        source = tmp_path / "image.bin"
        source.write_bytes(content)
    args = ("ota", "build", "--boards", "sim", "--kind", "firmware", "--source", str(source))
    rc, _, err = run(capsys, *args, "-o", str(tmp_path / "x.unsigned"))
    assert rc != 0 and expect in err, err
    assert len([ln for ln in err.splitlines() if not ln.endswith("…")]) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "x.unsigned").exists()


# -- every error ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--version", "1.2"], "version '1.2' is not MAJOR.MINOR.PATCH"),
        (
            ["--version", "1.2.0", "--min-version", "1.3.0"],
            "min_version 1.3.0 is above version 1.2.0",
        ),
        (["--version", "1.2.0", "--boards", "nosuchboard"], "no board nosuchboard"),
        (["--version", "1.2.0", "--boards", ","], "a bundle needs at least one compatible board"),
    ],
)
def test_build_errors(tmp_path: Path, src: Path, capsys, argv: list[str], expect: str) -> None:
    full = [
        "ota",
        "build",
        "--boards",
        "sim",
        "--source",
        str(src),
        "-o",
        str(tmp_path / "o"),
        *argv,
    ]
    rc, _, err = run(capsys, *full)
    assert rc == 1
    one_error(err, expect)
    assert not (tmp_path / "o").exists()


def test_build_reports_mpy_cross_errors(tmp_path: Path, src: Path, capsys) -> None:
    (src / "tk" / "broken.py").write_text("def f(:\n")
    rc, _, err = run(
        capsys,
        "ota",
        "build",
        "--version",
        "1.0.0",
        "--boards",
        "sim",
        "--source",
        str(src),
        "-o",
        str(tmp_path / "o"),
    )
    assert rc == 1
    one_error(err, "mpy-cross failed on")


def test_build_needs_a_version_line(tmp_path: Path, src: Path) -> None:
    (src / "tk" / "version.py").write_text("V = 1\n")
    with pytest.raises(UserError, match="no line VERSION"):
        bundle.compile_app(src, "1.0.0")


def test_too_many_files_for_the_manifest_limit() -> None:
    files = {f"tk/m{i:04d}.mpy": b"x" for i in range(100)}
    with pytest.raises(UserError, match="over the 8192-byte limit"):
        bundle.build(files, version="1.0.0", boards=["sim"])


@pytest.mark.parametrize(
    "path, kind",
    [("../x.mpy", "app"), ("/tk/x.mpy", "app"), ("tk/./x.mpy", "app"), ("tk//x.mpy", "app"),
     ("tk/x.py", "app"), ("main.py", "app"), ("tk/a b.mpy", "app"), ("other.bin", "firmware")],
)  # fmt: skip
def test_unsafe_paths_are_refused(path: str, kind: str) -> None:
    with pytest.raises(UserError):
        bundle.make_manifest({path: b"x"}, version="1.0.0", boards=["sim"], kind=kind)


@pytest.fixture
def signed_file(tmp_path: Path, src: Path, key_path: Path) -> Path:
    data = bundle.build_from_source(src, version="1.2.0", boards=["sim"])
    p = tmp_path / "s.tkota"
    p.write_bytes(bundle.sign(data, keys.load_key(key_path)))
    return p


def _mutations(data: bytes) -> dict[str, tuple[bytes, str]]:
    (mlen,) = struct.unpack(">I", data[8:12])
    hlen = 12 + mlen + 64
    bad_json = data[:12] + b"[" * mlen + data[12 + mlen :]
    m = json.loads(data[12 : 12 + mlen])
    m["format"] = 2
    mb = bundle.canonical_json(m)
    wrong_format = data[:8] + struct.pack(">I", len(mb)) + mb + data[12 + mlen :]
    return {
        "empty": (b"", "is truncated: 0 bytes, no header"),
        "magic_only": (data[:10], "is truncated inside the header"),
        "in_manifest": (data[: 12 + mlen // 2], f"is truncated: {12 + mlen // 2} bytes, header needs {hlen}"),
        "in_signature": (data[: hlen - 1], "is truncated"),
        "in_payload": (data[:-10], f"is truncated: payload has {len(data) - hlen - 10} of"),
        "bad_magic": (b"PK\x03\x04" + data[4:], "is not an OTA bundle (bad magic"),
        "huge_manifest": (data[:8] + struct.pack(">I", 1 << 20) + data[12:], "manifest length 1048576 is over 8192"),
        "bad_json": (bad_json, "manifest is not valid JSON"),
        "wrong_format": (wrong_format, "manifest is invalid: manifest format 2 is not 1"),
        "trailing": (data + b"zz", "has 2 bytes after the payload"),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["empty", "magic_only", "in_manifest", "in_signature", "in_payload", "bad_magic",
     "huge_manifest", "bad_json", "wrong_format", "trailing"],
)  # fmt: skip
@pytest.mark.parametrize("command", ["inspect", "sign"])
def test_malformed_bundles_give_one_line(
    tmp_path: Path, signed_file: Path, key_path: Path, capsys, case: str, command: str
) -> None:
    data, expect = _mutations(signed_file.read_bytes())[case]
    bad = tmp_path / "bad.tkota"
    bad.write_bytes(data)
    if command == "inspect":
        rc, _, err = run(capsys, "ota", "inspect", str(bad))
    else:
        rc, _, err = run(
            capsys, "ota", "sign", "--key", str(key_path), str(bad), "-o", str(tmp_path / "o")
        )
        assert not (tmp_path / "o").exists()
    assert rc == 1
    line = one_error(err, "")
    assert expect in line


def test_inspect_verdicts(tmp_path: Path, signed_file: Path, key_path: Path, capsys) -> None:
    data = signed_file.read_bytes()
    pub = key_path.with_suffix(".der")
    b = bundle.parse(data)
    other = tmp_path / "other.pem"
    keys.generate_key(other)

    def verdict(blob: bytes, *extra: str) -> tuple[int, dict]:
        f = tmp_path / "x.tkota"
        f.write_bytes(blob)
        rc, out, _ = run(capsys, "ota", "inspect", str(f), "--json", *extra)
        return rc, json.loads(out)

    # Signed by another key.
    rc, rep = verdict(bundle.sign(data, keys.load_key(other)), "--pubkey", str(pub))
    assert (rc, rep["signature"], rep["ok"]) == (1, "wrong_key", False)
    # Manifest edited after signing (same length): invalid.
    i = 12 + b.manifest_bytes.index(b'"1.2.0"') + 5
    rc, rep = verdict(data[:i] + b"9" + data[i + 1 :], "--pubkey", str(pub))
    assert (rc, rep["signature"]) == (1, "invalid")
    # A payload byte flipped after signing: the file and the whole payload are named.
    j = b.header_len + b.manifest["files"][0]["size"] + 1
    rc, rep = verdict(data[:j] + bytes([data[j] ^ 1]) + data[j + 1 :], "--pubkey", str(pub))
    assert (rc, rep["signature"], rep["payload_ok"]) == (1, "valid", False)
    assert rep["payload_problems"] == [b.manifest["files"][1]["path"], "(whole payload)"]
    # Unsigned, checked against a key: not ok.
    rc, rep = verdict(
        bundle.build_from_source(Path(tmp_path / "src"), version="1.2.0", boards=["sim"]),
        "--pubkey",
        str(pub),
    )
    assert (rc, rep["signature"], rep["signed"]) == (1, "unsigned", False)


def test_inspect_and_sign_input_errors(tmp_path: Path, signed_file: Path, capsys) -> None:
    rc, _, err = run(capsys, "ota", "inspect", str(tmp_path / "missing.tkota"))
    assert rc == 1
    one_error(err, f"cannot read bundle {tmp_path / 'missing.tkota'}")
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"\x30\x03\x02\x01\x00")
    rc, _, err = run(capsys, "ota", "inspect", str(signed_file), "--pubkey", str(junk))
    assert rc == 1
    one_error(err, f"{junk} is not a public key")
    rc, _, err = run(
        capsys, "ota", "sign", "--key", str(junk), str(signed_file), "-o", str(tmp_path / "o")
    )
    assert rc == 1
    one_error(err, f"{junk} is not an unencrypted PEM private key")


@pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="mosquitto not installed")
def test_kits_on_a_bench_get_the_bench_signing_key(tmp_path: Path) -> None:
    from host_tools.bench.bench import Bench
    from host_tools.kit.provision import create_sim_kit

    bench = Bench(tmp_path / "bench")
    bench.up()
    try:
        kit = create_sim_kit(bench, tmp_path / "kits", "ota-key-kit")
        other = tmp_path / "other.pem"
        kit2 = create_sim_kit(bench, tmp_path / "kits", "ota-key-kit2", ota_key=other)
    finally:
        bench.down()
    pem = keys.bench_key_path(bench.layout.root)
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    der = (kit.flash / OTA_PUBKEY_FILE).read_bytes()
    assert der == keys.public_der(keys.load_key(pem))
    assert (kit2.flash / OTA_PUBKEY_FILE).read_bytes() == keys.public_der(keys.load_key(other))
    assert der != (kit2.flash / OTA_PUBKEY_FILE).read_bytes()
