"""Revoked device certificates of one CA, and the CRLs that publish them.

The revocation list lives beside the CA (``revoked.json`` in the CA directory): one entry
per revoked certificate, with the intermediate that issued it. :func:`build_crls` signs
one CRL per intermediate (current and retired), so a verifier that checks the leaf's
issuer (mosquitto ``crlfile``: OpenSSL ``X509_V_FLAG_CRL_CHECK``) finds a CRL for every
device certificate this CA ever issued.

Example::

    db = RevocationList(ca.directory)
    db.revoke(cert, thing="acme-00017", reason="key_compromise")
    Path("fleet.crl.pem").write_bytes(build_crls(ca, db))
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from provisioning.ca import CAError, CertificateAuthority

REVOKED_FILE = "revoked.json"

# RFC 5280 reason codes thingkit uses (others map to "unspecified").
REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
}


@dataclass(frozen=True)
class Revoked:
    """One revoked certificate.

    Attributes:
        serial: certificate serial number, lower-case hex.
        fingerprint: SHA-256 of the DER certificate, lower-case hex (AWS's certificate id).
        thing: the thing the certificate belonged to (its CN).
        issuer: the issuing intermediate's subject (RFC 4514).
        revoked_at: ISO 8601 UTC time of revocation.
        reason: one of :data:`REASONS`.
    """

    serial: str
    fingerprint: str
    thing: str
    issuer: str
    revoked_at: str
    reason: str = "unspecified"


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


class RevocationList:
    """The revoked certificates of the CA in ``directory`` (``revoked.json``)."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / REVOKED_FILE
        self._doc = self._read()

    def _read(self) -> dict:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"crl_number": 0, "revoked": []}
        except ValueError as exc:
            raise CAError(f"{self.path} is not valid JSON: {exc}") from exc
        return doc

    @property
    def entries(self) -> list[Revoked]:
        return [Revoked(**e) for e in self._doc["revoked"]]

    def is_revoked(self, fp: str) -> bool:
        return any(e["fingerprint"] == fp.lower() for e in self._doc["revoked"])

    def revoke(
        self, cert: x509.Certificate, thing: str = "", reason: str = "unspecified"
    ) -> tuple[Revoked, bool]:
        """Add ``cert`` to the list; idempotent.

        Returns:
            The entry, and whether it is new (False: it was already revoked).

        Raises:
            CAError: unknown reason.
        """
        if reason not in REASONS:
            raise CAError(f"unknown revocation reason {reason!r}; use one of {', '.join(REASONS)}")
        fp = fingerprint(cert)
        for e in self.entries:
            if e.fingerprint == fp:
                return e, False
        entry = Revoked(
            serial=f"{cert.serial_number:x}",
            fingerprint=fp,
            thing=thing,
            issuer=cert.issuer.rfc4514_string(),
            revoked_at=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            reason=reason,
        )
        self._doc["revoked"].append(asdict(entry))
        self._save()
        return entry, True

    def next_crl_number(self) -> int:
        self._doc["crl_number"] = int(self._doc.get("crl_number", 0)) + 1
        self._save()
        return self._doc["crl_number"]

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._doc, indent=1) + "\n")
        os.replace(tmp, self.path)


def build_crl(
    issuer: x509.Certificate,
    issuer_key,
    entries: list[Revoked],
    number: int,
    days: int,
) -> x509.CertificateRevocationList:
    """One CRL signed by ``issuer`` listing ``entries`` (those it issued)."""
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),
            critical=False,
        )
    )
    for e in entries:
        when = dt.datetime.fromisoformat(e.revoked_at)
        rc = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(e.serial, 16))
            .revocation_date(when)
            .add_extension(x509.CRLReason(REASONS.get(e.reason, REASONS["unspecified"])), False)
            .build()
        )
        b = b.add_revoked_certificate(rc)
    return b.sign(issuer_key, hashes.SHA256())


def build_crls(
    ca: CertificateAuthority,
    db: RevocationList | None = None,
    passphrase: bytes | None = None,
    days: int | None = None,
) -> bytes:
    """PEM CRLs, one per intermediate of ``ca`` (current and retired), concatenated.

    Raises:
        CAError: a retired intermediate's key cannot be opened.
    """
    db = db or RevocationList(ca.directory)
    number = db.next_crl_number()
    days = days or ca.policy.crl_days
    out = []
    for inter in ca.intermediates:
        mine = [e for e in db.entries if e.issuer == inter.subject.rfc4514_string()]
        key = ca.intermediate_key(inter, passphrase)
        crl = build_crl(inter, key, mine, number, days)
        out.append(crl.public_bytes(serialization.Encoding.PEM))
    return b"".join(out)
