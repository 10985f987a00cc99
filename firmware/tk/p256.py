"""ECDSA P-256 signature verification in pure MicroPython (big ints).

Written from the standards: the curve is secp256r1 / NIST P-256 (SEC 2 v2 section 2.4.2,
FIPS 186-4 appendix D.1.2.3), verification is SEC 1 v2 section 4.1.4 (FIPS 186-4
section 6.4). Only what a device needs to check a code signature: no signing, no
secret data, so nothing here has to run in constant time.

    from tk import p256
    q = p256.load_pubkey(open("certs/ota-signing.der", "rb").read())
    ok = p256.verify(q, hashlib.sha256(msg).digest(), sig64)   # sig: raw r || s

How: R = u1*G + u2*Q by simultaneous double-and-add (Shamir's trick, a joint table of
G, Q and G+Q in affine coordinates) over Jacobian coordinates (x = X/Z^2, y = Y/Z^3),
so the main loop has no modular inversion; the final x-coordinate check is done
projectively (r*Z^2 == X), so verification costs two inversions in all. Working memory
is a handful of 256..512-bit integers at a time.
"""

# Curve parameters, SEC 2 v2 section 2.4.2: y^2 = x^3 - 3x + b over GF(p), order n.
_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
_GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

# SubjectPublicKeyInfo for an uncompressed P-256 key (RFC 5480): everything before the
# 65-byte point is fixed: SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 },
# BIT STRING (0 unused bits) }.
_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
SPKI_LEN = 91


class BadKey(ValueError):
    """The public key is not an uncompressed P-256 point on the curve."""


def on_curve(x, y):
    """True if (x, y) is an affine point of P-256 (coordinates reduced mod p)."""
    if not (0 <= x < _P and 0 <= y < _P):
        return False
    return (y * y - (x * x * x - 3 * x + _B)) % _P == 0


def load_pubkey(der):
    """(x, y) of a P-256 public key given as SubjectPublicKeyInfo DER (91 bytes).

    Raises BadKey if it is another algorithm or curve, a compressed point, or a point
    that is not on the curve (SEC 1 section 3.2.2 public key validation: the point is not
    infinity, its coordinates are in [0, p-1], it satisfies the curve equation; P-256 has
    cofactor 1, so n*Q = O holds for every such point).
    """
    der = bytes(der)
    if len(der) != SPKI_LEN or der[: len(_SPKI_PREFIX)] != _SPKI_PREFIX:
        raise BadKey("not an uncompressed P-256 SubjectPublicKeyInfo")
    pt = der[len(_SPKI_PREFIX) :]
    if pt[0] != 4:
        raise BadKey("not an uncompressed point")
    x = int.from_bytes(pt[1:33], "big")
    y = int.from_bytes(pt[33:65], "big")
    if not on_curve(x, y):
        raise BadKey("point is not on the P-256 curve")
    return (x, y)


def _dbl(X, Y, Z):
    # Jacobian doubling for a = -3 (3(X - Z^2)(X + Z^2) = 3X^2 + aZ^4).
    P = _P
    if not Z:
        return X, Y, Z
    d = Z * Z % P
    g = Y * Y % P
    be = X * g % P
    al = 3 * (X - d) * (X + d) % P
    X3 = (al * al - 8 * be) % P
    Z3 = ((Y + Z) * (Y + Z) - g - d) % P
    Y3 = (al * (4 * be - X3) - 8 * g * g) % P
    return X3, Y3, Z3


def _add(X, Y, Z, x2, y2):
    # Mixed addition: Jacobian (X, Y, Z) + affine (x2, y2). Z = 0 is the point at infinity.
    P = _P
    if not Z:
        return x2, y2, 1
    zz = Z * Z % P
    h = (x2 * zz - X) % P
    r = (y2 * zz * Z - Y) % P
    if not h:
        if not r:
            return _dbl(X, Y, Z)
        return 0, 1, 0  # P + (-P)
    hh = h * h % P
    hhh = hh * h % P
    v = X * hh % P
    X3 = (r * r - hhh - 2 * v) % P
    Y3 = (r * (v - X3) - Y * hhh) % P
    return X3, Y3, Z * h % P


def _affine(X, Y, Z):
    P = _P
    zi = pow(Z, P - 2, P)
    zi2 = zi * zi % P
    return X * zi2 % P, Y * zi2 * zi % P


def verify(pub, digest, sig):
    """True if ``sig`` (64 bytes: r || s, big-endian) signs ``digest`` under ``pub``.

    ``pub`` is (x, y) from load_pubkey(); ``digest`` is the 32-byte SHA-256 of the
    message. False for anything that is not a valid signature, including r or s
    outside [1, n-1] (SEC 1 section 4.1.4 step 1).
    """
    N = _N
    P = _P
    if len(sig) != 64 or len(digest) != 32:
        return False
    r = int.from_bytes(bytes(sig[:32]), "big")
    s = int.from_bytes(bytes(sig[32:]), "big")
    if not (0 < r < N and 0 < s < N):
        return False
    # e: the leftmost 256 bits of the hash are the whole hash for P-256 (section 4.1.4
    # steps 2-4); it is used mod n.
    e = int.from_bytes(bytes(digest), "big")
    w = pow(s, N - 2, N)
    u1 = e * w % N
    u2 = r * w % N
    qx, qy = pub
    # Joint table: index = bit of u1 + 2 * bit of u2 -> G, Q, G + Q (affine or None).
    X, Y, Z = _add(_GX, _GY, 1, qx, qy)
    gq = _affine(X, Y, Z) if Z else None
    tab = (None, (_GX, _GY), (qx, qy), gq)
    a = u1.to_bytes(32, "big")
    b = u2.to_bytes(32, "big")
    X, Y, Z = 0, 1, 0
    for i in range(32):
        ai = a[i]
        bi = b[i]
        for k in range(7, -1, -1):
            X, Y, Z = _dbl(X, Y, Z)
            pt = tab[((ai >> k) & 1) | (((bi >> k) & 1) << 1)]
            if pt is not None:
                X, Y, Z = _add(X, Y, Z, pt[0], pt[1])
    if not Z:
        return False
    # Accept iff x(R) mod n == r. x(R) = X / Z^2 lies in [0, p-1] and p < 2n, so
    # x(R) mod n == r means x(R) == r or x(R) == r + n (the latter only if r + n < p).
    zz = Z * Z % P
    if X == r * zz % P:
        return True
    return r + N < P and X == (r + N) * zz % P
