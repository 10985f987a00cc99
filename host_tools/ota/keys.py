"""The OTA code-signing key: ECDSA P-256, private half on the host, public half on devices.

The private key is a PKCS#8 PEM file with mode 0600 (never leaves the host); devices get
the public key as SubjectPublicKeyInfo DER (91 bytes) at ``certs/ota-signing.der``,
written at provisioning. A bundle names the key that signed it by ``key_id``, the first
16 hex digits of SHA-256(public key DER), so a device can tell "signed by another key"
from "signature does not verify".

    key = generate_key(Path("ota/signing-key.pem"))     # also writes ota/signing-key.der
    sig = sign_digest(key, hashlib.sha256(manifest).digest())
    verify_digest(public_der(key), digest, sig)          # -> True
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from host_tools.errors import UserError
from host_tools.paths import state_home

SIG_LEN = 64
PUBKEY_DER_LEN = 91
# Where `thingkit ota keygen` puts the key unless told otherwise.
KEY_NAME = "signing-key.pem"


def default_key_path() -> Path:
    """The host's default signing key: ``$THINGKIT_HOME/ota/signing-key.pem``."""
    return state_home() / "ota" / KEY_NAME


def bench_key_path(bench_root: Path) -> Path:
    """The workspace's signing key for a bench: ``<bench_root>/../ota/signing-key.pem``.

    One key per workspace: kits made on the bench (``kit create``), ``ota sign`` and
    ``validate`` all use it. For the default bench (``$THINGKIT_HOME/bench``) this is
    :func:`default_key_path`, the key ``thingkit ota keygen`` makes.
    """
    return Path(bench_root).parent / "ota" / KEY_NAME


def pubkey_path(key_path: Path) -> Path:
    """The public key DER written next to a private key: same name, ``.der``."""
    return Path(key_path).with_suffix(".der")


def generate_key(path: Path, overwrite: bool = False) -> ec.EllipticCurvePrivateKey:
    """Create a P-256 key: PEM at ``path`` (mode 0600) and its public DER beside it.

    Raises:
        UserError: the file exists and ``overwrite`` is false (a new key would orphan
            every device provisioned with the old one).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(
            f"signing key {path} already exists",
            "devices provisioned with it would refuse bundles signed by a new key",
            "--force to replace it",
        )
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(tmp, 0o600)
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if another process made the key meanwhile
    except FileExistsError:
        raise UserError(f"signing key {path} already exists", "made concurrently") from None
    finally:
        tmp.unlink(missing_ok=True)
    _write_public(path, key)
    return key


def _write_public(key_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    dest = pubkey_path(key_path)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    tmp.write_bytes(public_der(key))
    os.replace(tmp, dest)


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load a private signing key (PEM, unencrypted, P-256).

    Raises:
        UserError: missing, unreadable, not a key, or not P-256.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read signing key {path}", exc.strerror or str(exc)) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path} is not an unencrypted PEM private key", str(exc)) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise UserError(f"{path} is not an ECDSA P-256 key", "thingkit ota keygen makes one")
    return key


def open_or_create(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load the key at ``path``, creating it (and its public DER) first if missing."""
    path = Path(path)
    if not path.exists():
        try:
            return generate_key(path)
        except UserError:
            if not path.exists():
                raise
    key = load_key(path)
    if not pubkey_path(path).exists():
        _write_public(path, key)
    return key


def public_der(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """SubjectPublicKeyInfo DER of the (public half of the) key: what devices hold."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public(path: Path) -> bytes:
    """Public key DER from a file holding a public key (DER or PEM) or a private key PEM.

    Raises:
        UserError: unreadable or not a P-256 key.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read public key {path}", exc.strerror or str(exc)) from exc
    pub: object
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            if b"PRIVATE KEY" in data:
                pub = serialization.load_pem_private_key(data, password=None).public_key()
            else:
                pub = serialization.load_pem_public_key(data)
        else:
            pub = serialization.load_der_public_key(data)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path} is not a public key (DER or PEM)", str(exc)) from exc
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        raise UserError(f"{path} is not an ECDSA P-256 public key")
    return public_der(pub)


def key_id(pub_der: bytes) -> str:
    """The key's id in manifests: first 16 hex digits of SHA-256(public key DER)."""
    return hashlib.sha256(pub_der).hexdigest()[:16]


def sign_digest(key: ec.EllipticCurvePrivateKey, digest: bytes) -> bytes:
    """ECDSA signature of a SHA-256 digest, as raw r || s (32 + 32 bytes, big-endian)."""
    der = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    r, s = utils.decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_digest(pub_der: bytes, digest: bytes, sig: bytes) -> bool:
    """True if ``sig`` (raw r || s) is a valid signature of ``digest`` under the key."""
    if len(sig) != SIG_LEN:
        return False
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    pub = serialization.load_der_public_key(pub_der)
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    try:
        pub.verify(
            utils.encode_dss_signature(r, s), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256()))
        )
    except (InvalidSignature, ValueError):
        return False
    return True
