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
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning.errors import ProvisioningError

ROOT_CERT = "root.crt"
ROOT_KEY = "root.key"
ISSUING_CERT = "issuing.crt"
ISSUING_KEY = "issuing.key"
# Intermediates replaced by ``rotate_intermediate`` stay here, certificate and key: the
# devices they issued keep working until rotated, and their CRLs are still signed by them.
RETIRED_DIR = "retired"
POLICY_FILE = "policy.json"

ROOT_DAYS = 20 * 365
ISSUING_DAYS = 10 * 365
LEAF_DAYS = 5 * 365
# Certificates start a little in the past so that small clock differences between the
# host that issues them and the broker or device that checks them do not matter.
_BACKDATE = dt.timedelta(hours=1)


class CAError(ProvisioningError):
    """A CA directory is missing, incomplete, or its key cannot be opened."""


@dataclass(frozen=True)
class ValidityPolicy:
    """How long each kind of certificate lives, and when device certificates are renewed.

    Written to ``policy.json`` in the CA directory by ``thingkit ca init``; a CA without
    the file uses these defaults.

    Attributes:
        root_days: lifetime of the root (offline) CA.
        issuing_days: lifetime of an issuing intermediate (never past the root's).
        leaf_days: lifetime of a device certificate (never past its intermediate's).
        renew_before_days: rotate a device certificate this long before it expires.
        crl_days: how long a published CRL stays valid (re-publish before then).
    """

    root_days: int = ROOT_DAYS
    issuing_days: int = ISSUING_DAYS
    leaf_days: int = LEAF_DAYS
    renew_before_days: int = 30
    crl_days: int = 30

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise CAError(f"validity policy: {f.name} must be a positive number of days")
        if not self.leaf_days <= self.issuing_days <= self.root_days:
            raise CAError("validity policy: need leaf_days <= issuing_days <= root_days")
        if self.renew_before_days >= self.leaf_days:
            raise CAError("validity policy: renew_before_days must be less than leaf_days")

    @classmethod
    def load(cls, directory: Path) -> ValidityPolicy:
        """The policy in ``directory/policy.json``, or the defaults if there is none."""
        try:
            doc = json.loads((directory / POLICY_FILE).read_text())
        except FileNotFoundError:
            return cls()
        except ValueError as exc:
            raise CAError(f"{directory / POLICY_FILE} is not valid JSON: {exc}") from exc
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise CAError(f"{directory / POLICY_FILE}: unknown field(s) {', '.join(unknown)}")
        return cls(**doc)

    def save(self, directory: Path) -> None:
        (directory / POLICY_FILE).write_text(json.dumps(asdict(self), indent=1) + "\n")


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
        retired: Iterable[x509.Certificate] = (),
        policy: ValidityPolicy | None = None,
    ) -> None:
        self.directory = directory
        self._root = root
        self.root_cert = root_cert
        self.issuing = issuing
        self.retired = list(retired)
        self.policy = policy or ValidityPolicy()

    @classmethod
    def create(
        cls,
        directory: Path,
        name: str,
        passphrase: bytes | None = None,
        organization: str | None = "thingkit",
        policy: ValidityPolicy | None = None,
    ) -> CertificateAuthority:
        """Make a new root and issuing CA in ``directory`` (which must not hold one already).

        Args:
            policy: lifetimes; written to ``policy.json`` when given (defaults otherwise).

        Raises:
            CAError: the directory already holds a CA.
        """
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / ROOT_CERT).exists():
            raise CAError(f"{directory} already holds a CA; refusing to overwrite it")
        pol = policy or ValidityPolicy()
        root_key, issuing_key = new_key(), new_key()
        root_name = _name(f"{name} Root CA", organization)
        issuing_name = _name(f"{name} Issuing CA 1", organization)
        root = KeyPair(
            root_key, _ca_cert(root_name, root_key, root_name, root_key, pol.root_days, 1)
        )
        issuing = KeyPair(
            issuing_key,
            _ca_cert(issuing_name, issuing_key, root_name, root_key, pol.issuing_days, 0),
        )
        _write_private(directory / ROOT_KEY, root.key_pem(passphrase))
        _write_private(directory / ISSUING_KEY, issuing.key_pem(passphrase))
        (directory / ROOT_CERT).write_bytes(root.cert_pem)
        (directory / ISSUING_CERT).write_bytes(issuing.cert_pem)
        if policy is not None:
            policy.save(directory)
        return cls(directory, root.cert, issuing, root, policy=pol)

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
        retired = [
            x509.load_pem_x509_certificate(p.read_bytes())
            for p in sorted((directory / RETIRED_DIR).glob("*.crt"))
        ]
        return cls(
            directory,
            root_cert,
            KeyPair(key, cert),
            retired=retired,
            policy=ValidityPolicy.load(directory),
        )

    @classmethod
    def load_public(cls, directory: Path) -> CertificateAuthority:
        """Open the CA's certificates only (no key, no passphrase): it cannot issue.

        For what needs only certificates: plans, chains, ``issuer_of``.

        Raises:
            CAError: files missing.
        """
        try:
            root_cert = x509.load_pem_x509_certificate((directory / ROOT_CERT).read_bytes())
            cert = x509.load_pem_x509_certificate((directory / ISSUING_CERT).read_bytes())
        except FileNotFoundError as exc:
            raise CAError(f"no CA in {directory}: {exc.filename} is missing") from exc
        retired = [
            x509.load_pem_x509_certificate(p.read_bytes())
            for p in sorted((directory / RETIRED_DIR).glob("*.crt"))
        ]
        return cls(
            directory,
            root_cert,
            KeyPair(None, cert),  # type: ignore[arg-type]
            retired=retired,
            policy=ValidityPolicy.load(directory),
        )

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
        """Issuing then root certificate, PEM: what a verifier of our leaves needs.

        Retired intermediates that have not expired come between the two, so devices they
        issued keep connecting until their certificates are rotated.
        """
        now = _now()
        retired = b"".join(
            c.public_bytes(serialization.Encoding.PEM)
            for c in self.retired
            if c.not_valid_after_utc > now
        )
        return (
            self.issuing.cert_pem
            + retired
            + self.root_cert.public_bytes(serialization.Encoding.PEM)
        )

    @property
    def intermediates(self) -> list[x509.Certificate]:
        """The current issuing certificate, then the retired ones (oldest first)."""
        return [self.issuing.cert, *self.retired]

    def issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        """The intermediate (current or retired) that issued ``cert``, or None."""
        for inter in self.intermediates:
            if cert.issuer == inter.subject:
                try:
                    cert.verify_directly_issued_by(inter)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                return inter
        return None

    def intermediate_key(
        self, inter: x509.Certificate, passphrase: bytes | None = None
    ) -> ec.EllipticCurvePrivateKey:
        """The private key of a current or retired intermediate (to sign its CRL).

        Raises:
            CAError: the key is missing or cannot be opened.
        """
        if inter == self.issuing.cert:
            return self.issuing.key
        path = self.directory / RETIRED_DIR / f"{_retired_stem(inter)}.key"
        return _load_key(path, passphrase)

    def rotate_intermediate(
        self, passphrase: bytes | None = None, new_passphrase: bytes | None = None
    ) -> CertificateAuthority:
        """Issue a new intermediate from the root; retire the current one.

        The root key is opened for this only (it is the one operation that needs it). The
        retired intermediate keeps its certificate and key under ``retired/``: devices it
        issued stay trusted (see :attr:`chain_pem`) and their CRL is still signed by it.

        Args:
            passphrase: the CA's passphrase (root and issuing keys).
            new_passphrase: passphrase for the new issuing key (default: the same).

        Returns:
            The CA, loaded again, now issuing from the new intermediate.

        Raises:
            CAError: the root key cannot be opened.
        """
        root_key = _load_key(self.directory / ROOT_KEY, passphrase)
        if root_key.public_key().public_numbers() != (
            self.root_cert.public_key().public_numbers()  # type: ignore[union-attr]
        ):
            raise CAError(f"{self.directory / ROOT_KEY} does not match {ROOT_CERT}")
        old = self.issuing.cert
        cn = old.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        m = re.fullmatch(r"(.*) Issuing CA (\d+)", str(cn))
        base, gen = (m.group(1), int(m.group(2))) if m else (str(cn), len(self.retired) + 1)
        orgs = self.root_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        org = str(orgs[0].value) if orgs else None
        key = new_key()
        days = min(
            self.policy.issuing_days,
            max(1, (self.root_cert.not_valid_after_utc - _now()).days),
        )
        cert = _ca_cert(
            _name(f"{base} Issuing CA {gen + 1}", org),
            key,
            self.root_cert.subject,
            root_key,
            days,
            0,
        )
        retired = self.directory / RETIRED_DIR
        retired.mkdir(exist_ok=True)
        stem = _retired_stem(old)
        (retired / f"{stem}.crt").write_bytes(old.public_bytes(serialization.Encoding.PEM))
        os.replace(self.directory / ISSUING_KEY, retired / f"{stem}.key")
        pw = new_passphrase if new_passphrase is not None else passphrase
        _write_private(self.directory / ISSUING_KEY, _key_pem(key, pw))
        (self.directory / ISSUING_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return CertificateAuthority.load(self.directory, pw)

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
        serial: int | None = None,
    ) -> KeyPair:
        """Issue a leaf certificate (CN = ``common_name``) from the issuing CA.

        ``serial`` defaults to a fresh 159-bit random number (RFC 5280 unique serials).
        """
        key = key or new_key()
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        cert = self.leaf_issuer(usage, days, sans)(common_name, key, serial)
        return KeyPair(key, cert)

    def leaf_issuer(
        self, usage: Usage, days: int = LEAF_DAYS, sans: list[x509.GeneralName] | None = None
    ) -> LeafIssuer:
        """A :class:`LeafIssuer`: ``issuer(common_name, key, serial=None) -> certificate``,
        and ``issuer.many(common_names, public_keys)`` for bulk issuance.

        Everything but the subject, key and serial is built once (validity from now), so
        bulk issuance signs each certificate with no other work; :meth:`issue` uses it too,
        so there is one certificate profile. ``key`` is the subject's public key, or any
        object whose ``public_key()`` gives it (its private key).

        The extensions are encoded once, by ``cryptography`` itself
        (``ExtensionType.public_bytes``), and added to every certificate as those bytes:
        the certificate is byte for byte the one the typed extensions give (a test checks
        it) and is read back with its typed extensions, but signing does not encode the
        same four extensions again for every device.
        """
        now = _now()
        eku = (
            ExtendedKeyUsageOID.CLIENT_AUTH
            if usage is Usage.CLIENT
            else ExtendedKeyUsageOID.SERVER_AUTH
        )
        issuer = self.issuing.cert.subject
        aware_after = min(now + dt.timedelta(days=days), self.issuing.cert.not_valid_after_utc)
        base = (
            x509.CertificateBuilder()
            .issuer_name(issuer)
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(aware_after)
        )
        exts = []
        for ext, critical in leaf_extensions(self.issuing.key.public_key(), eku, sans):
            raw = x509.UnrecognizedExtension(ext.oid, ext.public_bytes())
            base = base.add_extension(raw, critical)
            exts.append(x509.Extension(ext.oid, critical, raw))
        # The builder keeps times as naive UTC.
        not_before = (now - _BACKDATE).astimezone(dt.UTC).replace(tzinfo=None)
        not_after = aware_after.astimezone(dt.UTC).replace(tzinfo=None)
        return LeafIssuer(base, issuer, exts, self.issuing.key, not_before, not_after)


class LeafIssuer:
    """Issues leaf certificates of one profile: see :meth:`CertificateAuthority.leaf_issuer`.

    Attributes:
        not_valid_before, not_valid_after: the validity of every certificate (UTC).
    """

    def __init__(  # made by CertificateAuthority.leaf_issuer
        self,
        base: x509.CertificateBuilder,
        issuer: x509.Name,
        extensions: list[x509.Extension],
        signer: ec.EllipticCurvePrivateKey,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> None:
        self._base, self._issuer, self._exts, self._signer = base, issuer, extensions, signer
        self._nb, self._na = not_before, not_after  # naive UTC, as the builder keeps them
        self.not_valid_before = not_before.replace(tzinfo=dt.UTC)
        self.not_valid_after = not_after.replace(tzinfo=dt.UTC)
        self._sha256 = hashes.SHA256()

    def __call__(self, common_name: str, key, serial: int | None = None) -> x509.Certificate:
        """A certificate for ``key`` (a public key, or an object whose ``public_key()``
        gives it), CN ``common_name``; ``serial`` defaults to a fresh random one."""
        pub = key if isinstance(key, ec.EllipticCurvePublicKey) else key.public_key()
        if serial is None and isinstance(pub, ec.EllipticCurvePublicKey):
            return self.many([common_name], [pub])[0]
        return (
            self._base.subject_name(_name(common_name))
            .public_key(pub)
            .serial_number(serial or x509.random_serial_number())
            .sign(self._signer, self._sha256)
        )

    def many(
        self, common_names: list[str], public_keys: list[ec.EllipticCurvePublicKey]
    ) -> list[x509.Certificate]:
        """One certificate per (CN, EC P-256 public key), each with a fresh random serial.

        Each step runs over the whole list (names, then builders, then signatures), which
        keeps its code in the CPU caches: bulk issuance's path. Every field is known good
        here (names made by ``x509.Name``, EC keys, random serials, this profile's times
        and extensions), so each builder is made in one step rather than through the
        builder's setters, which would check them again.
        """
        if not all(isinstance(k, ec.EllipticCurvePublicKey) for k in public_keys):
            return [self(cn, k) for cn, k in zip(common_names, public_keys, strict=True)]
        issuer, nb, na, exts = self._issuer, self._nb, self._na, self._exts
        names = [_name(cn) for cn in common_names]
        serial = x509.random_serial_number
        builder = x509.CertificateBuilder
        builders = [
            builder(issuer, name, key, serial(), nb, na, exts)
            for name, key in zip(names, public_keys, strict=True)
        ]
        signer, sha256 = self._signer, self._sha256
        return [b.sign(signer, sha256) for b in builders]


def leaf_extensions(
    issuer_key: ec.EllipticCurvePublicKey,
    eku: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> list[tuple[x509.ExtensionType, bool]]:
    """The extensions of a device (leaf) certificate, with their criticality, in order."""
    exts: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
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
            True,
        ),
        (x509.ExtendedKeyUsage([eku]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), False),
    ]
    if sans:
        exts.append((x509.SubjectAlternativeName(sans), False))
    return exts


def _retired_stem(cert: x509.Certificate) -> str:
    return f"issuing-{cert.serial_number:040x}"


def _load_key(path: Path, passphrase: bytes | None) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    except FileNotFoundError as exc:
        raise CAError(f"{path} is missing") from exc
    except (TypeError, ValueError) as exc:
        raise CAError(f"cannot open {path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError(f"{path} is not an EC key")
    return key


def is_encrypted(path: Path) -> bool:
    """Whether a PEM private key file is encrypted (needs a passphrase)."""
    return b"ENCRYPTED" in path.read_bytes()[:64]


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
