"""A two-level certificate authority: an offline root and an issuing intermediate.

Device certificates are issued by the intermediate (IoT Lens BP 6.1), so the root key can
stay offline and the intermediate can be rotated. Keys are EC P-256 and, when a
passphrase is given, encrypted at rest.

Example::

    ca = CertificateAuthority.create(Path("ca"), name="Acme fleet")
    key, cert = ca.issue("kit-0001", usage=Usage.CLIENT)
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT_CERT = "root.crt"
ROOT_KEY = "root.key"
ISSUING_CERT = "issuing.crt"
ISSUING_KEY = "issuing.key"

ROOT_DAYS = 20 * 365
ISSUING_DAYS = 10 * 365
LEAF_DAYS = 5 * 365
# Certificates start a little in the past so that small clock differences between the
# host that issues them and the broker or device that checks them do not matter.
_BACKDATE = dt.timedelta(hours=1)


class CAError(Exception):
    """A CA directory is missing, incomplete, or its key cannot be opened."""


class Usage(enum.Enum):
    """What a leaf certificate is for."""

    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True)
class KeyPair:
    """A private key and the certificate issued for it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_der(self) -> bytes:
        """The private key as unencrypted SEC1 DER, the form Mbed TLS loads on the device."""
        return self.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    def key_pem(self, passphrase: bytes | None = None) -> bytes:
        return _key_pem(self.key, passphrase)

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the certificate, lower-case hex (AWS's certificate id form)."""
        return self.cert.fingerprint(hashes.SHA256()).hex()


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ca_cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
    path_length: int,
) -> x509.Certificate:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


class CertificateAuthority:
    """A root plus issuing intermediate kept in one directory.

    Use :meth:`create` to make a new one and :meth:`load` to open an existing one.
    """

    def __init__(
        self,
        directory: Path,
        root_cert: x509.Certificate,
        issuing: KeyPair,
        root: KeyPair | None = None,
    ) -> None:
        self.directory = directory
        self._root = root
        self.root_cert = root_cert
        self.issuing = issuing

    @classmethod
    def create(
        cls,
        directory: Path,
        name: str,
        passphrase: bytes | None = None,
        organization: str | None = "thingkit",
    ) -> CertificateAuthority:
        """Make a new root and issuing CA in ``directory`` (which must not hold one already).

        Raises:
            CAError: the directory already holds a CA.
        """
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / ROOT_CERT).exists():
            raise CAError(f"{directory} already holds a CA; refusing to overwrite it")
        root_key, issuing_key = new_key(), new_key()
        root_name = _name(f"{name} Root CA", organization)
        issuing_name = _name(f"{name} Issuing CA 1", organization)
        root = KeyPair(root_key, _ca_cert(root_name, root_key, root_name, root_key, ROOT_DAYS, 1))
        issuing = KeyPair(
            issuing_key,
            _ca_cert(issuing_name, issuing_key, root_name, root_key, ISSUING_DAYS, 0),
        )
        _write_private(directory / ROOT_KEY, root.key_pem(passphrase))
        _write_private(directory / ISSUING_KEY, issuing.key_pem(passphrase))
        (directory / ROOT_CERT).write_bytes(root.cert_pem)
        (directory / ISSUING_CERT).write_bytes(issuing.cert_pem)
        return cls(directory, root.cert, issuing, root)

    @classmethod
    def load(cls, directory: Path, passphrase: bytes | None = None) -> CertificateAuthority:
        """Open the CA in ``directory``; only the issuing key is loaded (the root stays offline).

        Raises:
            CAError: files missing, or the key cannot be decrypted.
        """
        try:
            root_cert = x509.load_pem_x509_certificate((directory / ROOT_CERT).read_bytes())
            cert = x509.load_pem_x509_certificate((directory / ISSUING_CERT).read_bytes())
            key = serialization.load_pem_private_key(
                (directory / ISSUING_KEY).read_bytes(), password=passphrase
            )
        except FileNotFoundError as exc:
            raise CAError(f"no CA in {directory}: {exc.filename} is missing") from exc
        except (TypeError, ValueError) as exc:
            raise CAError(f"cannot open the issuing key in {directory}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError(f"{directory / ISSUING_KEY} is not an EC key")
        return cls(directory, root_cert, KeyPair(key, cert))

    @classmethod
    def open_or_create(
        cls, directory: Path, name: str, passphrase: bytes | None = None
    ) -> CertificateAuthority:
        """Load the CA in ``directory``, creating it first if there is none."""
        if (directory / ISSUING_CERT).exists():
            return cls.load(directory, passphrase)
        return cls.create(directory, name, passphrase)

    @property
    def chain_pem(self) -> bytes:
        """Issuing then root certificate, PEM: what a verifier of our leaves needs."""
        return self.issuing.cert_pem + self.root_cert.public_bytes(serialization.Encoding.PEM)

    @property
    def root_der(self) -> bytes:
        return self.root_cert.public_bytes(serialization.Encoding.DER)

    def issue(
        self,
        common_name: str,
        usage: Usage,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
        days: int = LEAF_DAYS,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> KeyPair:
        """Issue a leaf certificate (CN = ``common_name``) from the issuing CA."""
        key = key or new_key()
        now = _now()
        eku = (
            ExtendedKeyUsageOID.CLIENT_AUTH
            if usage is Usage.CLIENT
            else ExtendedKeyUsageOID.SERVER_AUTH
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.issuing.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(
                min(now + dt.timedelta(days=days), self.issuing.cert.not_valid_after_utc)
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.issuing.key.public_key()),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return KeyPair(key, builder.sign(self.issuing.key, hashes.SHA256()))


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
