"""tk.p256 on the MicroPython unix port, against signatures made by ``cryptography``.

The oracle for every case is ``cryptography`` (OpenSSL): a vector's expected result is
what OpenSSL's ECDSA verification says, so the device must agree on valid signatures,
on each kind of tampering and on out-of-range r and s.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from host_tools.kit.sim import mpy_cross_binary

from .harness import FIRMWARE, micropython_binary

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF

VERIFY_ALL = """
import json, hashlib
from binascii import unhexlify
from tk import p256
from tkfakes import out
vecs = json.load(open("vectors.json"))
keys = {}
res = []
for v in vecs:
    k = v["key"]
    if k not in keys:
        keys[k] = p256.load_pubkey(unhexlify(k))
    res.append(p256.verify(keys[k], unhexlify(v["digest"]), unhexlify(v["sig"])))
out(res)
"""


def spki(pub: ec.EllipticCurvePublicKey) -> bytes:
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def raw_sig(key: ec.EllipticCurvePrivateKey, msg: bytes) -> tuple[int, int]:
    return utils.decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))


def openssl_says(pub_der: bytes, digest: bytes, r: int, s: int) -> bool:
    """OpenSSL's verdict on (r, s); out-of-range values are invalid by definition."""
    if not (0 < r < N and 0 < s < N):
        return False
    pub = serialization.load_der_public_key(pub_der)
    try:
        pub.verify(  # type: ignore[union-attr]
            utils.encode_dss_signature(r, s),
            digest,
            ec.ECDSA(utils.Prehashed(hashes.SHA256())),  # type: ignore[call-arg]
        )
    except InvalidSignature:
        return False
    return True


def vector(pub_der: bytes, digest: bytes, r: int, s: int) -> dict:
    return {
        "key": pub_der.hex(),
        "digest": digest.hex(),
        "sig": (r % 2**256).to_bytes(32, "big").hex() + (s % 2**256).to_bytes(32, "big").hex(),
        "expect": openssl_says(pub_der, digest, r, s),
    }


def run_vectors(mpy, vecs: list[dict], timeout: float = 120) -> None:
    mpy.write("vectors.json", json.dumps(vecs))
    got = mpy.one(VERIFY_ALL, timeout=timeout)
    assert len(got) == len(vecs)
    wrong = [(i, v, g) for i, (v, g) in enumerate(zip(vecs, got, strict=True)) if v["expect"] != g]
    assert not wrong, f"{len(wrong)} verdicts differ from OpenSSL, first: {wrong[0]}"


def test_random_keys_and_messages_verify(mpy) -> None:
    rng = random.Random(5)
    vecs = []
    for _ in range(24):
        key = ec.generate_private_key(ec.SECP256R1())
        der = spki(key.public_key())
        for _ in range(3):
            msg = rng.randbytes(rng.randrange(0, 300))
            r, s = raw_sig(key, msg)
            vecs.append(vector(der, hashlib.sha256(msg).digest(), r, s))
    assert all(v["expect"] for v in vecs)
    run_vectors(mpy, vecs)


def test_tampering_is_refused_like_openssl(mpy) -> None:
    rng = random.Random(6)
    vecs = []
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(6)]
    for i, key in enumerate(keys):
        der = spki(key.public_key())
        other = spki(keys[(i + 1) % len(keys)].public_key())
        msg = rng.randbytes(64)
        d = hashlib.sha256(msg).digest()
        r, s = raw_sig(key, msg)
        bit = 1 << rng.randrange(256)
        flipped = bytearray(msg)
        flipped[rng.randrange(len(msg))] ^= 1 << rng.randrange(8)
        vecs += [
            vector(der, d, r, s),  # valid
            vector(der, d, r, N - s),  # the other valid s (ECDSA malleability): OpenSSL accepts
            vector(other, d, r, s),  # wrong key
            vector(der, hashlib.sha256(bytes(flipped)).digest(), r, s),  # flipped message bit
            vector(der, d, r ^ bit, s),  # flipped bit in r
            vector(der, d, r, s ^ bit),  # flipped bit in s
            vector(der, d, 0, s),
            vector(der, d, r, 0),
            vector(der, d, N, s),
            vector(der, d, r, N),
            vector(der, d, r + N, s) if r + N < 2**256 else vector(der, d, N + 1, s),
            vector(der, d, r, 2**256 - 1),
            vector(der, d, s, r),  # swapped
        ]
    assert sum(v["expect"] for v in vecs) == 2 * len(keys)
    run_vectors(mpy, vecs)


def test_s_plus_n_is_refused(mpy) -> None:
    """s and s + n have the same inverse mod n: only the range check refuses s + n.

    A signature with a small s is made by hand (any digest can be signed when the
    verifier is given the digest): pick k and s, then e = s*k - r*d mod n.
    """
    rng = random.Random(7)
    vecs = []
    for _ in range(4):
        d, k = rng.randrange(1, N), rng.randrange(1, N)
        key = ec.derive_private_key(d, ec.SECP256R1())
        r = ec.derive_private_key(k, ec.SECP256R1()).public_key().public_numbers().x % N
        s = rng.randrange(1, 1 << 200)
        e = (s * k - r * d) % N
        der = spki(key.public_key())
        digest = e.to_bytes(32, "big")
        vecs += [vector(der, digest, r, s), vector(der, digest, r, s + N)]
    assert [v["expect"] for v in vecs] == [True, False] * 4
    run_vectors(mpy, vecs)


@pytest.mark.parametrize("d", [1, 2, 3, N - 1, N - 2])
def test_special_private_keys(mpy, d: int) -> None:
    # Q = G or Q = -G exercise the doubling and point-at-infinity paths of G + Q.
    key = ec.derive_private_key(d, ec.SECP256R1())
    der = spki(key.public_key())
    vecs = []
    for i in range(4):
        msg = b"special %d %d" % (d, i)
        r, s = raw_sig(key, msg)
        vecs.append(vector(der, hashlib.sha256(msg).digest(), r, s))
        vecs.append(vector(der, hashlib.sha256(msg + b"!").digest(), r, s))
    run_vectors(mpy, vecs)


def bad_keys() -> dict[str, bytes]:
    good = spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    x, y = int.from_bytes(good[27:59], "big"), int.from_bytes(good[59:91], "big")
    prefix = good[:26]
    compressed = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    )
    p384 = spki(ec.generate_private_key(ec.SECP384R1()).public_key())
    return {
        "y_plus_1": prefix + b"\x04" + x.to_bytes(32, "big") + ((y + 1) % P).to_bytes(32, "big"),
        "x_equals_p": prefix + b"\x04" + P.to_bytes(32, "big") + y.to_bytes(32, "big"),
        "y_plus_p": prefix + b"\x04" + x.to_bytes(32, "big") + (y + P).to_bytes(33, "big")[1:]
        if y + P < 2**256
        else prefix + b"\x04" + x.to_bytes(32, "big") + (2**256 - 1).to_bytes(32, "big"),
        "zero_point": prefix + b"\x04" + bytes(64),
        "compressed_tag": prefix + b"\x02" + good[27:],
        "compressed_point_only": compressed,
        "p384": p384,
        "short": good[:-1],
        "long": good + b"\x00",
        "other_oid": good[:8] + b"\x2b" + good[9:],
    }


def test_public_keys_off_the_curve_or_malformed_are_refused(mpy) -> None:
    cases = bad_keys()
    mpy.write("keys.json", json.dumps({k: v.hex() for k, v in cases.items()}))
    got = mpy.one("""
        import json
        from binascii import unhexlify
        from tk import p256
        from tkfakes import out
        res = {}
        for name, der in json.load(open("keys.json")).items():
            try:
                p256.load_pubkey(unhexlify(der))
                res[name] = "accepted"
            except p256.BadKey as e:
                res[name] = "refused: " + str(e)
        out(res)
    """)
    assert set(got) == set(cases)
    accepted = [k for k, v in got.items() if not v.startswith("refused")]
    assert not accepted, got
    assert "not on the P-256 curve" in got["y_plus_1"]
    assert "not on the P-256 curve" in got["zero_point"]


def test_on_curve_matches_generator_and_key(mpy) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    nums = key.public_key().public_numbers()
    got = mpy.one(f"""
        from tk import p256
        from tkfakes import out
        out([p256.on_curve(p256._GX, p256._GY), p256.on_curve({nums.x}, {nums.y}),
             p256.on_curve({nums.x}, {nums.y} + 1), p256.on_curve({nums.x} + {P}, {nums.y})])
    """)
    assert got == [True, True, False, False]


def _compiled(tmp_path: Path) -> Path:
    """tk/p256.mpy compiled as a release ships it."""
    root = tmp_path / "rel"
    (root / "tk").mkdir(parents=True)
    (root / "tk" / "__init__.py").write_text("")
    subprocess.run(
        [
            mpy_cross_binary(),
            "-o",
            str(root / "tk" / "p256.mpy"),
            "-s",
            "tk/p256.py",
            str(FIRMWARE / "tk" / "p256.py"),
        ],
        check=True,
    )
    return root


TIMING = """
import hashlib, time, gc
from binascii import unhexlify
from tk import p256
vecs = %s
q = p256.load_pubkey(unhexlify(vecs[0]["key"]))
d, s = unhexlify(vecs[0]["digest"]), unhexlify(vecs[0]["sig"])
us = 0
for i in range(%d):
    # One verification at a time on a collected heap, as the firmware verifies (once per
    # update). Ten back to back left the 12 KiB heap fragmented: with module paths 120
    # characters longer (a clean clone in a temp directory) 24 of 60 random signatures
    # ended in MemoryError; collected between them, 0 of 60.
    gc.collect()
    t = time.ticks_us()
    assert p256.verify(q, d, s)
    us += time.ticks_diff(time.ticks_us(), t)
print("ms_per_verify", us / %d / 1000)
"""


def test_verifies_in_a_small_heap_and_reports_its_time(tmp_path: Path) -> None:
    """Compiled to .mpy, a verification fits a 12 KiB GC heap; the time is printed."""
    key = ec.generate_private_key(ec.SECP256R1())
    r, s = raw_sig(key, b"timing")
    vecs = [vector(spki(key.public_key()), hashlib.sha256(b"timing").digest(), r, s)]
    root = _compiled(tmp_path)
    n = 10
    (tmp_path / "timing.py").write_text(TIMING % (repr(vecs), n, n))
    env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
    env["MICROPYPATH"] = str(root)
    out = subprocess.run(
        [micropython_binary(), "-X", "heapsize=12k", str(tmp_path / "timing.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    line = [x for x in out.stdout.splitlines() if x.startswith("ms_per_verify")]
    assert line, out.stdout
    print(line[0], "(unix port, .mpy, 12 KiB heap)")
