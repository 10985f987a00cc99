"""ECDSA P-256 signing in pure MicroPython: public key of a private scalar, signatures
with deterministic nonces (RFC 6979, HMAC-SHA256).

Written from the standards: signing is SEC 1 v2 section 4.1.3 (FIPS 186-4 section 6.4),
the nonce k is derived from the private key and the digest as RFC 6979 section 3.2
says, so a weak or stuck random source at signing time cannot leak the key (two
signatures with the same k reveal it). The curve arithmetic (Jacobian doubling, mixed
addition, conversion to affine) is tk.p256's, the one the OTA verifier already loads;
this module is separate so the verifier does not grow, and is loaded only by
tk.identity when the device makes a key or a CSR.

    from tk import p256_sign
    q = p256_sign.public_point(d)                          # (x, y) of d*G
    r, s = p256_sign.sign(d, hashlib.sha256(msg).digest())

Not constant-time: the scalar multiplication is left-to-right double-and-add (its
time depends on the bits of the scalar) and Python big-int arithmetic is
variable-time. This is used a few times in a device's life (a key, a CSR per
certificate), on the device, with no one timing it from the network; a board whose
threat model includes local side channels needs a secure element instead.
"""
import hashlib

from micropython import const

from tk.p256 import _GX, _GY, _N, _add, _affine, _dbl

_BLOCK = const(64)  # SHA-256 block size, for HMAC


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104): MicroPython has hashlib.sha256 but no hmac module."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    ipad = bytearray(_BLOCK)
    opad = bytearray(_BLOCK)
    for i in range(_BLOCK):
        b = key[i] if i < len(key) else 0
        ipad[i] = b ^ 0x36
        opad[i] = b ^ 0x5C
    h = hashlib.sha256(ipad)
    h.update(msg)
    h2 = hashlib.sha256(opad)
    h2.update(h.digest())
    return h2.digest()


def mul_g(k):
    """(x, y) of k*G for 1 <= k < n (left-to-right double-and-add, Jacobian)."""
    if not 0 < k < _N:
        raise ValueError("scalar out of range")
    X, Y, Z = 0, 1, 0
    for byte in k.to_bytes(32, "big"):
        for i in range(7, -1, -1):
            X, Y, Z = _dbl(X, Y, Z)
            if (byte >> i) & 1:
                X, Y, Z = _add(X, Y, Z, _GX, _GY)
    # Every partial sum is a multiple of G below n, so Z is never 0 here.
    return _affine(X, Y, Z)


def public_point(d):
    """The public key (x, y) = d*G of the private scalar d."""
    return mul_g(d)


def nonces(d, digest):
    """RFC 6979 section 3.2 candidates k for private key d and a SHA-256 digest.

    For P-256 with SHA-256, qlen = hlen = 256: bits2int(h) is the whole digest,
    bits2octets(h) is that integer reduced mod n, and one HMAC block gives a
    candidate. Yields every candidate in [1, n-1]; the caller takes the next one
    only if r or s came out 0 (step h.3 then updates K and V).
    """
    N = _N
    x = d.to_bytes(32, "big")
    h = (int.from_bytes(digest, "big") % N).to_bytes(32, "big")
    V = b"\x01" * 32
    K = hmac_sha256(b"\x00" * 32, V + b"\x00" + x + h)
    V = hmac_sha256(K, V)
    K = hmac_sha256(K, V + b"\x01" + x + h)
    V = hmac_sha256(K, V)
    while True:
        V = hmac_sha256(K, V)
        k = int.from_bytes(V, "big")
        if 0 < k < N:
            yield k
        K = hmac_sha256(K, V + b"\x00")
        V = hmac_sha256(K, V)


def sign(d, digest):
    """(r, s) of the ECDSA signature of a 32-byte SHA-256 digest with private key d.

    Deterministic (RFC 6979): the same key and digest always give the same (r, s).
    s is not normalised to the lower half (the RFC's test vectors are not).
    """
    N = _N
    if len(digest) != 32:
        raise ValueError("digest must be 32 bytes (SHA-256)")
    if not 0 < d < N:
        raise ValueError("private key out of range")
    e = int.from_bytes(digest, "big")  # the leftmost 256 bits of the hash, mod n below
    for k in nonces(d, digest):
        r = mul_g(k)[0] % N
        if not r:
            continue
        s = pow(k, N - 2, N) * (e + r * d) % N  # k^-1 by Fermat: n is prime
        if s:
            return r, s
