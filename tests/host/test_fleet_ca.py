"""CA lifecycle: validity policy, intermediate rotation, revocation list and CRLs."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from provisioning.ca import (
    CAError,
    CertificateAuthority,
    Usage,
    ValidityPolicy,
    is_encrypted,
)
from provisioning.revocation import RevocationList, build_crls, fingerprint

PASS = b"fleet passphrase"


def _crls(pem: bytes) -> list[x509.CertificateRevocationList]:
    end = b"-----END X509 CRL-----"
    return [x509.load_pem_x509_crl(p + end) for p in pem.split(end) if p.strip()]


def test_policy_defaults_and_checks(tmp_path: Path) -> None:
    p = ValidityPolicy()
    assert (p.leaf_days, p.issuing_days, p.root_days) == (5 * 365, 10 * 365, 20 * 365)
    for bad in (
        {"leaf_days": 0},
        {"leaf_days": 4000, "issuing_days": 3650},
        {"renew_before_days": 2000, "leaf_days": 1000},
    ):
        with pytest.raises(CAError):
            ValidityPolicy(**bad)
    assert ValidityPolicy.load(tmp_path) == ValidityPolicy()
    (tmp_path / "policy.json").write_text('{"leaf_days": 3, "bogus": 1}')
    with pytest.raises(CAError, match="unknown field"):
        ValidityPolicy.load(tmp_path)


def test_create_with_policy_applies_and_saves_it(tmp_path: Path) -> None:
    pol = ValidityPolicy(root_days=3000, issuing_days=1000, leaf_days=90, renew_before_days=10)
    ca = CertificateAuthority.create(tmp_path / "ca", "P", PASS, policy=pol)
    assert json.loads((tmp_path / "ca/policy.json").read_text())["leaf_days"] == 90
    life = ca.issuing.cert.not_valid_after_utc - ca.issuing.cert.not_valid_before_utc
    assert abs(life - dt.timedelta(days=1000, hours=1)) < dt.timedelta(seconds=5)
    loaded = CertificateAuthority.load(tmp_path / "ca", PASS)
    assert loaded.policy == pol
    assert is_encrypted(tmp_path / "ca/root.key") and is_encrypted(tmp_path / "ca/issuing.key")


def test_rotate_intermediate_keeps_old_devices_trusted(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    ca = CertificateAuthority.create(d, "R", PASS)
    old_leaf = ca.issue("kit-1", Usage.CLIENT)
    with pytest.raises(CAError):
        ca.rotate_intermediate(b"wrong")
    new = ca.rotate_intermediate(PASS)
    assert "CN=R Issuing CA 2" in new.issuing.cert.subject.rfc4514_string()
    assert new.issuing.cert.issuer == ca.root_cert.subject
    assert new.retired == [ca.issuing.cert]
    assert new.issuer_of(old_leaf.cert) == ca.issuing.cert
    leaf2 = new.issue("kit-2", Usage.CLIENT)
    assert new.issuer_of(leaf2.cert) == new.issuing.cert
    chain = x509.load_pem_x509_certificates(new.chain_pem)
    assert chain == [new.issuing.cert, ca.issuing.cert, ca.root_cert]
    # Both leaves verify against the new chain with openssl, as the broker would.
    (tmp_path / "chain.pem").write_bytes(new.chain_pem)
    for i, leaf in enumerate((old_leaf, leaf2)):
        (tmp_path / f"l{i}.pem").write_bytes(leaf.cert_pem)
        r = subprocess.run(
            [
                "openssl",
                "verify",
                "-purpose",
                "sslclient",
                "-CAfile",
                str(tmp_path / "chain.pem"),
                str(tmp_path / f"l{i}.pem"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    # The retired intermediate's key is still there (CRLs) and still encrypted.
    assert is_encrypted(next((d / "retired").glob("*.key")))
    assert new.intermediate_key(ca.issuing.cert, PASS)
    # A third generation.
    assert "Issuing CA 3" in new.rotate_intermediate(PASS).issuing.cert.subject.rfc4514_string()


def test_load_public_needs_no_passphrase(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", "X", PASS)
    pub = CertificateAuthority.load_public(tmp_path / "ca")
    assert pub.issuing.cert == ca.issuing.cert and pub.issuing.key is None
    with pytest.raises(CAError):
        CertificateAuthority.load_public(tmp_path / "none")


def test_revocation_list_and_crls(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    ca = CertificateAuthority.create(d, "C", PASS)
    a, b = ca.issue("kit-a", Usage.CLIENT), ca.issue("kit-b", Usage.CLIENT)
    db = RevocationList(d)
    entry, new = db.revoke(a.cert, "kit-a", "key_compromise")
    assert (
        new and entry.fingerprint == a.fingerprint and entry.serial == f"{a.cert.serial_number:x}"
    )
    assert db.revoke(a.cert, "kit-a")[1] is False  # idempotent
    with pytest.raises(CAError, match="unknown revocation reason"):
        db.revoke(b.cert, "kit-b", "bored")
    assert RevocationList(d).is_revoked(a.fingerprint)
    assert not RevocationList(d).is_revoked(b.fingerprint)

    ca2 = ca.rotate_intermediate(PASS)
    c = ca2.issue("kit-c", Usage.CLIENT)
    RevocationList(d).revoke(c.cert, "kit-c", "superseded")
    crls = _crls(build_crls(ca2, passphrase=PASS))
    assert len(crls) == 2  # one per intermediate
    by_issuer = {crl.issuer: crl for crl in crls}
    old_crl, new_crl = by_issuer[ca.issuing.cert.subject], by_issuer[ca2.issuing.cert.subject]
    assert old_crl.is_signature_valid(ca.issuing.cert.public_key())
    assert new_crl.is_signature_valid(ca2.issuing.cert.public_key())
    assert old_crl.get_revoked_certificate_by_serial_number(a.cert.serial_number) is not None
    assert old_crl.get_revoked_certificate_by_serial_number(b.cert.serial_number) is None
    assert new_crl.get_revoked_certificate_by_serial_number(c.cert.serial_number) is not None
    assert old_crl.next_update_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)
    n1 = old_crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    again = _crls(build_crls(ca2, passphrase=PASS))[0]
    assert again.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == n1 + 1
    # openssl agrees: a is revoked, b is not.
    (tmp_path / "chain.pem").write_bytes(ca2.chain_pem)
    (tmp_path / "crl.pem").write_bytes(build_crls(ca2, passphrase=PASS))
    for pair, ok in ((a, False), (b, True)):
        (tmp_path / "leaf.pem").write_bytes(pair.cert_pem)
        r = subprocess.run(
            [
                "openssl",
                "verify",
                "-crl_check",
                "-CAfile",
                str(tmp_path / "chain.pem"),
                "-CRLfile",
                str(tmp_path / "crl.pem"),
                str(tmp_path / "leaf.pem"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (r.returncode == 0) is ok, r.stdout + r.stderr
        if not ok:
            assert "revoked" in (r.stdout + r.stderr)
    assert fingerprint(a.cert) == a.fingerprint
