"""The device's own identity: an EC P-256 key made on the kit, and a PKCS#10 CSR for it.

    from tk import identity
    key = identity.make_key("certs/device.key.new.der")   # refuses to overwrite a key
    der = identity.csr(key, "kit-0042")                   # CertificationRequest, DER
    text = identity.pem(der, "CERTIFICATE REQUEST")       # for AWS's CSR APIs
    key = identity.load_key("certs/device.key.der")       # a key written earlier

Randomness: the private key comes from ``os.urandom``, which on the ESP32 port is the
chip's hardware RNG (``esp_random()``, ports/esp32/modos.c). ESP-IDF documents that RNG
as a true random source while Wi-Fi or Bluetooth runs (and during the bootloader);
with the radio off it is only pseudo-random, so make keys after the network is up (as
fleet provisioning does: it needs the network anyway). On the virtual kit it is the
unix port's ``getrandom()``. The scalar is rejection-sampled into [1, n-1] (no modulo
bias); a source that returns the same 32 bytes twice in a row is refused. Signing
needs no randomness: nonces are RFC 6979 deterministic (tk.p256_sign).

The key file is the SEC 1 ``ECPrivateKey`` DER (RFC 5915: version 1, the 32-byte
scalar, the prime256v1 parameters and the public point), the form provisioning writes
and ``ssl.SSLContext.load_cert_chain(cert, key)`` (Mbed TLS) loads. It is written
to ``<path>.tmp`` and renamed over ``path`` (atomic on littlefs, the stock ESP32
filesystem, and on the unix port), so a power cut leaves the old file or the new one.

The secret never leaves this module in printable form: nothing here prints or logs,
``repr(key)`` shows only the start of the public x coordinate, and errors never quote
file contents. MicroPython cannot wipe a big integer from RAM; the key lives in the
heap until collected. Not constant-time (see tk.p256_sign).

The DER writer below covers only what these two structures need (X.690 definite
lengths up to 65535 bytes, non-negative INTEGER, OID, UTF8String, BIT STRING with no
unused bits, SEQUENCE, SET and context tags).
"""
import hashlib
import os

from tk import p256, p256_sign

# OIDs as tuples of arcs (a dotted string such as the CN's would look like an IPv4
# address to the firmware scan of hw.no_hardcoded_urls).
_OID_EC_PUBKEY = (1, 2, 840, 10045, 2, 1)  # id-ecPublicKey (RFC 5480)
_OID_P256 = (1, 2, 840, 10045, 3, 1, 7)  # prime256v1 / secp256r1
_OID_ECDSA_SHA256 = (1, 2, 840, 10045, 4, 3, 2)  # ecdsa-with-SHA256 (RFC 5758)
_OID_CN = (2, 5, 4, 3)  # id-at-commonName
_KEY_LEN = 121  # SEC 1 DER of a P-256 key with parameters and public point


class IdentityError(ValueError):
    """A key file, thing name or random source this module refuses (no secret in it)."""


class Key:
    """A P-256 private key: ``d`` the secret scalar, ``pub`` the public point (x, y)."""

    def __init__(self, d, pub):
        self.d = d
        self.pub = pub

    def __repr__(self):
        return "<P-256 key, public x %s...>" % hex(self.pub[0])[2:14]


# -- DER writer (X.690) ------------------------------------------------------------
def _tlv(tag, body):
    n = len(body)
    if n < 0x80:
        head = bytes((tag, n))
    elif n < 0x100:
        head = bytes((tag, 0x81, n))
    else:
        head = bytes((tag, 0x82, n >> 8, n & 0xFF))
    return head + body


def _int(v):
    # Non-negative INTEGER: minimal big-endian, a 0x00 in front if the top bit is set.
    b = v.to_bytes(33, "big")
    i = 0
    while i < 32 and b[i] == 0 and b[i + 1] < 0x80:
        i += 1
    return _tlv(0x02, b[i:])


def _oid(arcs):
    out = bytearray()
    for v in (40 * arcs[0] + arcs[1],) + arcs[2:]:  # the first two arcs make one subidentifier
        groups = [v & 0x7F]
        v >>= 7
        while v:
            groups.append(0x80 | (v & 0x7F))
            v >>= 7
        out += bytes(reversed(groups))  # base 128, high groups first with bit 8 set
    return _tlv(0x06, bytes(out))


def _seq(*parts):
    return _tlv(0x30, b"".join(parts))


def _bits(b):
    return _tlv(0x03, b"\x00" + b)  # BIT STRING, 0 unused bits


# -- key -------------------------------------------------------------------------------
def _point(key):
    x, y = key.pub
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def public_spki(key):
    """SubjectPublicKeyInfo DER (RFC 5480, 91 bytes) of the key's public point."""
    return _seq(_seq(_oid(_OID_EC_PUBKEY), _oid(_OID_P256)), _bits(_point(key)))


def _sec1(key):
    return _seq(
        _int(1),
        _tlv(0x04, key.d.to_bytes(32, "big")),
        _tlv(0xA0, _oid(_OID_P256)),
        _tlv(0xA1, _bits(_point(key))),
    )


def _scalar(rng):
    N = p256._N
    last = rng(32)
    for _ in range(64):  # a fair source is refused here with probability 2^-32 per try
        b = rng(32)
        if len(b) != 32 or b == last:
            raise IdentityError("random source failed (short or repeated output)")
        d = int.from_bytes(b, "big")
        if 0 < d < N:
            return d
        last = b
    raise IdentityError("random source gave no scalar in [1, n-1]")


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _write_atomic(path, data):
    slash = path.rfind("/")
    if slash > 0 and not _exists(path[:slash]):
        os.mkdir(path[:slash])
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)
    except Exception:
        if _exists(tmp):
            os.remove(tmp)
        raise


def make_key(path, rng=None, replace=False):
    """Make a P-256 key from ``rng`` (default os.urandom), write it to ``path``, return it.

    Refuses (IdentityError) to overwrite an existing file unless ``replace``: a working
    key is never lost by accident. Costs one scalar multiplication.
    """
    if not replace and _exists(path):
        raise IdentityError("%s exists" % path)
    d = _scalar(rng or os.urandom)
    key = Key(d, p256_sign.public_point(d))
    _write_atomic(path, _sec1(key))
    return key


def load_key(path, check=False):
    """The key in ``path`` (the SEC 1 DER make_key and provisioning write).

    Checks the layout, the scalar's range and that the public point is on the curve;
    with ``check`` also that it is d*G (one scalar multiplication).
    """
    with open(path, "rb") as f:
        der = f.read()
    mid = _tlv(0xA0, _oid(_OID_P256)) + b"\xa1\x44\x03\x42\x00\x04"
    if len(der) != _KEY_LEN or der[:7] != b"\x30\x77\x02\x01\x01\x04\x20" or der[39:57] != mid:
        raise IdentityError("%s is not a P-256 SEC 1 key" % path)
    d = int.from_bytes(der[7:39], "big")
    pub = (int.from_bytes(der[57:89], "big"), int.from_bytes(der[89:121], "big"))
    if not 0 < d < p256._N or not p256.on_curve(pub[0], pub[1]):
        raise IdentityError("%s holds an invalid P-256 key" % path)
    if check and p256_sign.public_point(d) != pub:
        raise IdentityError("%s: public point does not match the private key" % path)
    return Key(d, pub)


def sign(key, digest):
    """(r, s) of the ECDSA signature of a 32-byte SHA-256 digest (RFC 6979 nonce)."""
    return p256_sign.sign(key.d, digest)


# -- CSR ---------------------------------------------------------------------------------
def csr(key, thing_name):
    """PKCS#10 CertificationRequest DER (RFC 2986): subject CN = ``thing_name``, the key's
    SubjectPublicKeyInfo, no attributes, signed with ecdsa-with-SHA256."""
    cn = thing_name.encode()
    if not 0 < len(cn) <= 64:  # ub-common-name (RFC 5280)
        raise IdentityError("thing name must be 1-64 bytes for a CN")
    name = _seq(_tlv(0x31, _seq(_oid(_OID_CN), _tlv(0x0C, cn))))  # one RDN, UTF8String
    info = _seq(_int(0), name, public_spki(key), b"\xa0\x00")  # version 0, attributes {}
    r, s = p256_sign.sign(key.d, hashlib.sha256(info).digest())
    return _seq(info, _seq(_oid(_OID_ECDSA_SHA256)), _bits(_seq(_int(r), _int(s))))


def pem(der, label):
    """PEM text (RFC 7468) of a DER structure, in 64-character lines."""
    from binascii import b2a_base64

    b64 = b2a_base64(der).strip()
    lines = [b64[i : i + 64].decode() for i in range(0, len(b64), 64)]
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines), label)
