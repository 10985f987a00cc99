"""Tests for provisioning: the two-level CA, the device bundle and provision_device."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import stat
from pathlib import Path
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    DNSName,
    ExtensionPolicy,
    IPAddress,
    PolicyBuilder,
    Store,
    VerificationError,
)

from host_tools import doc_urls
from host_tools.paths import FIRMWARE
from provisioning import ca as ca_mod
from provisioning.bundle import (
    CERT_FILE,
    CONFIG_FILE,
    KEY_FILE,
    SERVER_CA_FILE,
    BundleError,
    DeviceConfig,
    check_thing_name,
    write_bundle,
)
from provisioning.ca import CAError, CertificateAuthority, KeyPair, Usage
from provisioning.device import provision_device

PASS = b"correct horse battery staple"


# -- fixtures and helpers ----------------------------------------------------------
@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca") / "fleet", name="Test fleet")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca2") / "other", name="Other")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _client_verifier(root: x509.Certificate):
    """A verifier for client certificates: device certificates carry no SAN, which the
    web-PKI end-entity defaults would otherwise require."""
    ee = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    return (
        PolicyBuilder()
        .store(Store([root]))
        .time(_now())
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
        .build_client_verifier()
    )


def _server_verifier(root: x509.Certificate, subject):
    return PolicyBuilder().store(Store([root])).time(_now()).build_server_verifier(subject)


def _cn(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def _eku(cert: x509.Certificate) -> list:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _bc(cert: x509.Certificate) -> x509.BasicConstraints:
    return cert.extensions.get_extension_for_class(x509.BasicConstraints).value


def _firmware_config() -> ModuleType:
    """firmware/tk/config.py loaded under CPython (it only needs json and os)."""
    spec = importlib.util.spec_from_file_location(
        "tk_config_under_test", FIRMWARE / "tk" / "config.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# -- CA: chain and certificate contents -------------------------------------------
def test_client_leaf_chain_verifies_to_root(ca: CertificateAuthority) -> None:
    leaf = ca.issue("kit-0001", Usage.CLIENT)
    verified = _client_verifier(ca.root_cert).verify(leaf.cert, [ca.issuing.cert])
    assert verified.chain == [leaf.cert, ca.issuing.cert, ca.root_cert]
    # Each link also checked directly.
    leaf.cert.verify_directly_issued_by(ca.issuing.cert)
    ca.issuing.cert.verify_directly_issued_by(ca.root_cert)
    ca.root_cert.verify_directly_issued_by(ca.root_cert)


def test_server_leaf_chain_verifies_for_dns_and_ip(ca: CertificateAuthority) -> None:
    import ipaddress

    leaf = ca.issue("localhost", Usage.SERVER, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    chain = [leaf.cert, ca.issuing.cert, ca.root_cert]
    v_dns = _server_verifier(ca.root_cert, DNSName("localhost"))
    assert v_dns.verify(leaf.cert, [ca.issuing.cert]) == chain
    v_ip = _server_verifier(ca.root_cert, IPAddress(ipaddress.ip_address("127.0.0.1")))
    assert v_ip.verify(leaf.cert, [ca.issuing.cert]) == chain
    with pytest.raises(VerificationError):
        _server_verifier(ca.root_cert, DNSName("example.com")).verify(leaf.cert, [ca.issuing.cert])


def test_leaf_from_another_ca_does_not_verify(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    foreign = other_ca.issue("kit-0001", Usage.CLIENT)
    with pytest.raises(VerificationError):
        _client_verifier(ca.root_cert).verify(foreign.cert, [other_ca.issuing.cert])


def test_client_and_server_eku_are_not_interchangeable(ca: CertificateAuthority) -> None:
    client = ca.issue("kit-0001", Usage.CLIENT)
    server = ca.issue("localhost", Usage.SERVER, dns_names=["localhost"])
    assert _eku(client.cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _eku(server.cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    with pytest.raises(VerificationError):
        _client_verifier(ca.root_cert).verify(server.cert, [ca.issuing.cert])
    with pytest.raises(VerificationError):
        _server_verifier(ca.root_cert, DNSName("localhost")).verify(client.cert, [ca.issuing.cert])


def test_common_names(ca: CertificateAuthority) -> None:
    assert _cn(ca.issue("kit-0042", Usage.CLIENT).cert) == "kit-0042"
    assert ca.issue("kit-0042", Usage.CLIENT).cert.subject.rfc4514_string() == "CN=kit-0042"
    assert _cn(ca.root_cert) == "Test fleet Root CA"
    assert _cn(ca.issuing.cert) == "Test fleet Issuing CA 1"
    assert ca.issuing.cert.issuer == ca.root_cert.subject


def test_basic_constraints(ca: CertificateAuthority) -> None:
    root_bc, issuing_bc = _bc(ca.root_cert), _bc(ca.issuing.cert)
    leaf_bc = _bc(ca.issue("kit-0001", Usage.CLIENT).cert)
    assert (root_bc.ca, root_bc.path_length) == (True, 1)
    assert (issuing_bc.ca, issuing_bc.path_length) == (True, 0)
    assert (leaf_bc.ca, leaf_bc.path_length) == (False, None)
    for cert in (ca.root_cert, ca.issuing.cert):
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).critical is True


def test_server_san_dns_and_ip(ca: CertificateAuthority) -> None:
    import ipaddress

    leaf = ca.issue(
        "broker", Usage.SERVER, dns_names=["localhost", "broker.test"], ip_addresses=["127.0.0.1"]
    )
    san = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "broker.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_client_cert_has_no_san(ca: CertificateAuthority) -> None:
    leaf = ca.issue("kit-0001", Usage.CLIENT)
    with pytest.raises(x509.ExtensionNotFound):
        leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_serials_unique_across_50_issues(ca: CertificateAuthority) -> None:
    serials = {ca.issue(f"kit-{i:04d}", Usage.CLIENT).cert.serial_number for i in range(50)}
    assert len(serials) == 50


def test_leaf_validity_default_and_backdate(ca: CertificateAuthority) -> None:
    before = _now()
    leaf = ca.issue("kit-0001", Usage.CLIENT).cert
    after = _now()
    assert before - dt.timedelta(hours=1, seconds=1) <= leaf.not_valid_before_utc
    assert leaf.not_valid_before_utc <= after - dt.timedelta(hours=1)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert abs(lifetime - dt.timedelta(days=ca_mod.LEAF_DAYS, hours=1)) < dt.timedelta(seconds=5)


def test_leaf_validity_capped_by_issuing_ca(ca: CertificateAuthority) -> None:
    leaf = ca.issue("kit-0001", Usage.CLIENT, days=100 * 365).cert
    assert leaf.not_valid_after_utc == ca.issuing.cert.not_valid_after_utc
    assert ca.issuing.cert.not_valid_after_utc < ca.root_cert.not_valid_after_utc


def test_key_pair_encodings(ca: CertificateAuthority) -> None:
    pair = ca.issue("kit-0001", Usage.CLIENT)
    key = serialization.load_der_private_key(pair.key_der, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert key.private_numbers() == pair.key.private_numbers()
    # SEC1 ("EC PRIVATE KEY") DER: SEQUENCE { INTEGER 1, OCTET STRING (32) ... }
    assert pair.key_der[:2] == b"\x30\x77" and pair.key_der[2:7] == b"\x02\x01\x01\x04\x20"
    assert x509.load_der_x509_certificate(pair.cert_der) == pair.cert
    assert pair.fingerprint == pair.cert.fingerprint(ca_mod.hashes.SHA256()).hex()
    assert len(pair.fingerprint) == 64 and pair.fingerprint == pair.fingerprint.lower()
    pub = pair.cert.public_key()
    assert pub.public_numbers() == pair.key.public_key().public_numbers()


def test_key_pem_with_passphrase(ca: CertificateAuthority) -> None:
    pair = ca.issue("kit-0001", Usage.CLIENT)
    pem = pair.key_pem(PASS)
    assert b"ENCRYPTED PRIVATE KEY" in pem
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, password=b"wrong")
    key = serialization.load_pem_private_key(pem, password=PASS)
    assert key.private_numbers() == pair.key.private_numbers()
    assert pair.key_pem().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_issue_with_given_key(ca: CertificateAuthority) -> None:
    key = ca_mod.new_key()
    pair = ca.issue("kit-0001", Usage.CLIENT, key=key)
    assert pair.key is key
    assert pair.cert.public_key().public_numbers() == key.public_key().public_numbers()


# -- CA: files on disk -------------------------------------------------------------
def test_create_writes_files_with_private_keys_0600(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    CertificateAuthority.create(d, name="X")
    assert sorted(p.name for p in d.iterdir()) == [
        "issuing.crt",
        "issuing.key",
        "root.crt",
        "root.key",
    ]
    for name in ("root.key", "issuing.key"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600


def test_create_refuses_existing_ca(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    first = CertificateAuthority.create(d, name="X")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(CAError, match="already holds a CA"):
        CertificateAuthority.create(d, name="Y")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert CertificateAuthority.load(d).issuing.cert == first.issuing.cert


def test_load_issues_from_same_issuing_ca(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    created = CertificateAuthority.create(d, name="X")
    loaded = CertificateAuthority.load(d)
    assert loaded.issuing.cert == created.issuing.cert
    assert loaded.root_cert == created.root_cert
    assert loaded.root_der == created.root_der
    assert loaded.chain_pem == created.chain_pem
    assert loaded.issuing.key.private_numbers() == created.issuing.key.private_numbers()
    leaf = loaded.issue("kit-1", Usage.CLIENT)
    assert _client_verifier(created.root_cert).verify(leaf.cert, [created.issuing.cert]).chain[
        -1
    ] == (created.root_cert)


def test_chain_pem_is_issuing_then_root(ca: CertificateAuthority) -> None:
    certs = x509.load_pem_x509_certificates(ca.chain_pem)
    assert certs == [ca.issuing.cert, ca.root_cert]


def test_passphrase_protected_ca(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    created = CertificateAuthority.create(d, name="X", passphrase=PASS)
    assert b"ENCRYPTED PRIVATE KEY" in (d / "issuing.key").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in (d / "root.key").read_bytes()
    with pytest.raises(CAError, match="cannot open the issuing key"):
        CertificateAuthority.load(d)
    with pytest.raises(CAError, match="cannot open the issuing key"):
        CertificateAuthority.load(d, passphrase=b"not it")
    loaded = CertificateAuthority.load(d, passphrase=PASS)
    assert loaded.issuing.cert == created.issuing.cert
    with pytest.raises(CAError):
        CertificateAuthority.open_or_create(d, "X")
    assert CertificateAuthority.open_or_create(d, "X", PASS).issuing.cert == created.issuing.cert


def test_passphrase_given_for_unencrypted_ca(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    CertificateAuthority.create(d, name="X")
    with pytest.raises(CAError):
        CertificateAuthority.load(d, passphrase=PASS)


def test_load_empty_dir_is_ca_error(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="no CA in"):
        CertificateAuthority.load(tmp_path)


def test_load_without_root_cert_is_ca_error(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    CertificateAuthority.create(d, name="X")
    (d / "root.crt").unlink()
    with pytest.raises(CAError):
        CertificateAuthority.load(d)


def test_load_rejects_non_ec_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    d = tmp_path / "ca"
    CertificateAuthority.create(d, name="X")
    other = ed25519.Ed25519PrivateKey.generate()
    (d / "issuing.key").write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CAError, match="is not an EC key"):
        CertificateAuthority.load(d)


def test_open_or_create(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    first = CertificateAuthority.open_or_create(d, "X")
    again = CertificateAuthority.open_or_create(d, "Y")
    assert again.issuing.cert == first.issuing.cert
    assert _cn(again.issuing.cert) == "X Issuing CA 1"


# -- bundle --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a", "kit-0001", "Kit_01-x", "0", "A" * 64, "-_-"])
def test_check_thing_name_valid(name: str) -> None:
    assert check_thing_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "A" * 65, "kit/1", "kit+1", "kit#1", "kit:1", "kit 1", " kit", "kit.1", "kité", "$aws"],
)
def test_check_thing_name_invalid(name: str) -> None:
    with pytest.raises(BundleError, match="is not valid"):
        check_thing_name(name)


@pytest.mark.parametrize("name", ["kit-1\n", "A" * 64 + "\n"])
def test_check_thing_name_rejects_trailing_newline(name: str) -> None:
    with pytest.raises(BundleError):
        check_thing_name(name)


def test_firmware_refuses_thing_name_with_newline() -> None:
    # Why the trailing-newline case above matters: the device would not boot with it.
    fw = _firmware_config()
    doc = DeviceConfig(thing_name="kit-1\n", endpoint="localhost").to_json()
    with pytest.raises(fw.ConfigError, match="thing_name must be 1-64"):
        fw.Config(doc)


def test_device_config_to_json_exact() -> None:
    cfg = DeviceConfig(
        thing_name="kit-0001",
        endpoint="abc-ats.iot.eu-west-1.example",
        port=8884,
        ntp_servers=["127.0.0.1:12300", "pool.ntp.org"],
        keepalive_s=60,
        topic_prefix="acme",
        backoff_base_ms=500,
        backoff_cap_ms=60000,
        backoff_reset_s=15,
        log_level="debug",
        docs_url="https://docs.example/kit",
        telemetry_interval_s=5,
        diag_interval_s=120,
    )
    assert cfg.to_json() == {
        "schema": 1,
        "thing_name": "kit-0001",
        "mqtt": {
            "endpoint": "abc-ats.iot.eu-west-1.example",
            "port": 8884,
            "keepalive_s": 60,
            "topic_prefix": "acme",
        },
        "tls": {
            "cert": "certs/device.crt.der",
            "key": "certs/device.key.der",
            "ca": "certs/server-ca.der",
        },
        "ntp": {"servers": ["127.0.0.1:12300", "pool.ntp.org"]},
        "backoff": {"base_ms": 500, "cap_ms": 60000, "reset_after_s": 15},
        "log_level": "debug",
        "docs_url": "https://docs.example/kit",
        "app2": {"interval_s": 5},
        "diag": {"interval_s": 120},
    }


def test_device_config_defaults() -> None:
    doc = DeviceConfig(thing_name="kit-1", endpoint="localhost").to_json()
    assert doc["mqtt"] == {
        "endpoint": "localhost",
        "port": 8883,
        "keepalive_s": 30,
        "topic_prefix": "thingkit",
    }
    assert doc["ntp"] == {"servers": ["pool.ntp.org"]}
    assert doc["backoff"] == {"base_ms": 1000, "cap_ms": 120000, "reset_after_s": 30}
    # The documentation link comes from the one configured value (docs/urls.toml).
    assert (doc["log_level"], doc["docs_url"]) == ("info", doc_urls.base_url())
    # No credential fields the firmware would refuse.
    assert set(doc["mqtt"]) == {"endpoint", "port", "keepalive_s", "topic_prefix"}


def test_write_bundle_writes_exactly_four_files(ca: CertificateAuthority, tmp_path: Path) -> None:
    ident = ca.issue("kit-0007", Usage.CLIENT)
    cfg = DeviceConfig(thing_name="kit-0007", endpoint="localhost", port=1234)
    server_ca = b"\x30\x82server-ca-der"
    write_bundle(tmp_path, ident, server_ca, cfg)
    assert _all_files(tmp_path) == {CONFIG_FILE, CERT_FILE, KEY_FILE, SERVER_CA_FILE}
    assert (tmp_path / CERT_FILE).read_bytes() == ident.cert_der
    assert (tmp_path / KEY_FILE).read_bytes() == ident.key_der
    assert (tmp_path / SERVER_CA_FILE).read_bytes() == server_ca
    text = (tmp_path / CONFIG_FILE).read_text()
    assert text.endswith("}\n")
    assert json.loads(text) == cfg.to_json()
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


def test_write_bundle_overwrites_previous_bundle(ca: CertificateAuthority, tmp_path: Path) -> None:
    cfg = DeviceConfig(thing_name="kit-0007", endpoint="localhost")
    write_bundle(tmp_path, ca.issue("kit-0007", Usage.CLIENT), b"old", cfg)
    new = ca.issue("kit-0007", Usage.CLIENT)
    write_bundle(tmp_path, new, b"new", cfg)
    assert _all_files(tmp_path) == {CONFIG_FILE, CERT_FILE, KEY_FILE, SERVER_CA_FILE}
    assert (tmp_path / CERT_FILE).read_bytes() == new.cert_der
    assert (tmp_path / SERVER_CA_FILE).read_bytes() == b"new"


@pytest.mark.parametrize("cn", ["kit-0008", "kit-00071", "kit-000"])
def test_write_bundle_refuses_cn_mismatch(
    ca: CertificateAuthority, tmp_path: Path, cn: str
) -> None:
    ident = ca.issue(cn, Usage.CLIENT)
    with pytest.raises(BundleError, match="does not match thing kit-0007"):
        write_bundle(tmp_path, ident, b"ca", DeviceConfig(thing_name="kit-0007", endpoint="h"))
    assert list(tmp_path.iterdir()) == []


def test_write_bundle_refuses_invalid_thing_name(ca: CertificateAuthority, tmp_path: Path) -> None:
    ident = ca.issue("kit/1", Usage.CLIENT)
    with pytest.raises(BundleError, match="is not valid"):
        write_bundle(tmp_path, ident, b"ca", DeviceConfig(thing_name="kit/1", endpoint="h"))
    assert list(tmp_path.iterdir()) == []


def test_write_bundle_refuses_cert_with_extra_subject_attributes(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    # The issuing CA's own certificate has CN plus O: not a device identity.
    with pytest.raises(BundleError):
        write_bundle(tmp_path, ca.issuing, b"ca", DeviceConfig(thing_name="x", endpoint="h"))
    assert list(tmp_path.iterdir()) == []


# -- provision_device ------------------------------------------------------------------
def test_provision_device_end_to_end(
    ca: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_ca = ca.root_der
    cfg = DeviceConfig(
        thing_name="kit-0100", endpoint="localhost", port=18883, ntp_servers=["127.0.0.1:12300"]
    )
    fs = tmp_path / "flash"
    ident = provision_device(ca, cfg, fs, server_ca)

    assert isinstance(ident, KeyPair)
    assert _cn(ident.cert) == "kit-0100"
    assert _eku(ident.cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (
        _client_verifier(ca.root_cert).verify(ident.cert, [ca.issuing.cert]).chain[0] == ident.cert
    )
    assert _all_files(fs) == {CONFIG_FILE, CERT_FILE, KEY_FILE, SERVER_CA_FILE}
    assert (fs / CERT_FILE).read_bytes() == ident.cert_der
    assert (fs / KEY_FILE).read_bytes() == ident.key_der
    assert (fs / SERVER_CA_FILE).read_bytes() == server_ca
    key = serialization.load_der_private_key((fs / KEY_FILE).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"

    # The firmware's own loader accepts the bundle (it resolves paths from the fs root).
    fw = _firmware_config()
    monkeypatch.chdir(fs)
    conf = fw.load()
    assert (conf.thing_name, conf.endpoint, conf.port) == ("kit-0100", "localhost", 18883)
    assert (conf.cert_file, conf.key_file, conf.ca_file) == (CERT_FILE, KEY_FILE, SERVER_CA_FILE)
    assert conf.ntp_servers == ["127.0.0.1:12300"]
    assert (conf.keepalive_s, conf.topic_prefix) == (30, "thingkit")
    assert (conf.backoff_base_ms, conf.backoff_cap_ms, conf.backoff_reset_s) == (1000, 120000, 30)


def test_provision_device_invalid_name_issues_nothing(
    ca: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued: list[str] = []
    real_issue = CertificateAuthority.issue

    def spy(self, common_name, *a, **kw):
        issued.append(common_name)
        return real_issue(self, common_name, *a, **kw)

    monkeypatch.setattr(CertificateAuthority, "issue", spy)
    with pytest.raises(BundleError):
        provision_device(ca, DeviceConfig(thing_name="kit#1", endpoint="h"), tmp_path / "fs", b"")
    assert issued == []
    assert not (tmp_path / "fs").exists()


def test_provision_device_fresh_key_each_time(ca: CertificateAuthority, tmp_path: Path) -> None:
    cfg = DeviceConfig(thing_name="kit-0101", endpoint="localhost")
    a = provision_device(ca, cfg, tmp_path / "a", b"ca")
    b = provision_device(ca, cfg, tmp_path / "b", b"ca")
    assert a.key_der != b.key_der
    assert a.cert.serial_number != b.cert.serial_number
    assert a.fingerprint != b.fingerprint
