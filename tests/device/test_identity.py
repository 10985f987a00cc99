"""tk.identity and tk.p256_sign on the MicroPython unix port, checked with ``cryptography``.

The device makes its key and CSR; the host checks them with OpenSSL (through
``cryptography``): the CSR parses, its signature is valid, its subject is the thing name
and its key is the one on the device's flash; deterministic signatures equal OpenSSL's
RFC 6979 ones and the RFC's own vectors; the key file is the SEC 1 DER provisioning
writes, loads in MicroPython's ``ssl`` and authenticates a TLS 1.2 connection; the key
never appears on the console.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import os
import random
import re
import socket
import ssl
import statistics
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from host_tools.kit import wasm32
from host_tools.kit.sim import mpy_cross_binary

from .harness import FIRMWARE, micropython_binary

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
THING = "kit-0042"
SEC1 = (
    serialization.Encoding.DER,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption(),
)

# RFC 6979 appendix A.2.5: P-256, private key x, public key (Ux, Uy); SHA-256 rows.
RFC_X = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
RFC_UX = 0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
RFC_UY = 0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299
RFC_ROWS = {
    "sample": (
        0xA6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60,
        0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716,
        0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8,
    ),
    "test": (
        0xD16B6AE827F17175E040871A1C7EC3500192C4C92677336EC2537ACAEE0008E0,
        0xF1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367,
        0x019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083,
    ),
}

MAKE = """
from tk import identity
from tkfakes import out
key = identity.make_key("certs/device.key.der")
open("csr.der", "wb").write(identity.csr(key, %r))
print(key)
print("%%s" %% key, repr(key), [key])
out({"repr": repr(key)})
"""


def secret_forms(key_der: bytes) -> list[str]:
    """Ways the private key could show up in text: scalar in hex (either case) and
    decimal, the key file in hex and base64."""
    d = serialization.load_der_private_key(key_der, None).private_numbers().private_value  # type: ignore[union-attr]
    raw = d.to_bytes(32, "big")
    return [
        raw.hex(),
        raw.hex().upper(),
        f"{d:x}",
        str(d),
        key_der.hex(),
        base64.b64encode(key_der).decode(),
        base64.b64encode(raw).decode(),
        repr(raw)[2:-1],
    ]


@pytest.fixture
def made(mpy):
    """A key and CSR made on the device: (stdout, csr, key file bytes)."""
    stdout = mpy.run(MAKE % THING, timeout=60)
    return (
        stdout,
        (mpy.cwd / "csr.der").read_bytes(),
        (mpy.cwd / "certs/device.key.der").read_bytes(),
    )


# -- the CSR and key, checked by OpenSSL ------------------------------------------------
def test_csr_parses_and_is_signed_by_the_key_on_flash(made) -> None:
    _, csr_der, key_der = made
    csr = x509.load_der_x509_csr(csr_der)
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == f"CN={THING}"
    assert b"\x0c\x08" + THING.encode() in csr_der  # CN as UTF8String (RFC 5280)
    assert csr.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert list(csr.attributes) == [] and len(csr.extensions) == 0
    key = serialization.load_der_private_key(key_der, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == csr.public_key()
    # Byte for byte the SEC 1 DER that provisioning writes (KeyPair.key_der).
    assert key.private_bytes(*SEC1) == key_der
    # And the CSR is canonical DER: re-encoding it changes nothing.
    assert csr.public_bytes(serialization.Encoding.DER) == csr_der


def test_key_never_on_the_console(made) -> None:
    stdout, _, key_der = made
    assert "P-256 key, public x" in stdout  # the snippet did print the key object
    for form in secret_forms(key_der):
        assert form not in stdout


def test_two_kits_make_different_keys(mpy, made) -> None:
    _, _, first = made
    mpy.run(MAKE.replace("certs/device.key.der", "certs/other.der") % THING, timeout=60)
    assert (mpy.cwd / "certs/other.der").read_bytes()[7:39] != first[7:39]


def test_csr_pem_parses(mpy) -> None:
    got = mpy.one(
        """
        from tk import identity
        from tkfakes import out
        key = identity.make_key("k.der")
        out(identity.pem(identity.csr(key, "kit-pem"), "CERTIFICATE REQUEST"))
    """,
        timeout=60,
    )
    lines = got.splitlines()
    assert lines[0] == "-----BEGIN CERTIFICATE REQUEST-----"
    assert lines[-1] == "-----END CERTIFICATE REQUEST-----"
    assert all(len(line) <= 64 for line in lines[1:-1])
    csr = x509.load_pem_x509_csr(got.encode())
    assert csr.is_signature_valid and csr.subject.rfc4514_string() == "CN=kit-pem"


@pytest.mark.parametrize("name", ["a", "k" * 64, "Kit_0-9"])
def test_thing_names_up_to_64_bytes_make_valid_csrs(mpy, name: str) -> None:
    key = ec.derive_private_key(12345, ec.SECP256R1())
    mpy.write("k.der", key.private_bytes(*SEC1))
    got = mpy.one(
        f"""
        from tk import identity
        from tkfakes import out, hx
        out(hx(identity.csr(identity.load_key("k.der"), {name!r})))
    """,
        timeout=30,
    )
    csr = x509.load_der_x509_csr(bytes.fromhex(got))
    assert csr.is_signature_valid and csr.subject.rfc4514_string() == f"CN={name}"
    assert csr.public_key() == key.public_key()


def test_bad_thing_names_are_refused(mpy) -> None:
    got = mpy.one("""
        from tk import identity
        from tkfakes import out
        key = identity.Key(5, (1, 2))
        res = []
        for name in ("", "k" * 65):
            try:
                identity.csr(key, name)
                res.append("made")
            except identity.IdentityError as e:
                res.append(str(e))
        out(res)
    """)
    assert got == ["thing name must be 1-64 bytes for a CN"] * 2


# -- signatures --------------------------------------------------------------------------
def test_rfc6979_vectors_p256_sha256(mpy) -> None:
    got = mpy.one(f"""
        import hashlib
        from tk import p256_sign
        from tkfakes import out
        d = {RFC_X}
        res = {{"pub": list(p256_sign.public_point(d))}}
        for msg in ("sample", "test"):
            h = hashlib.sha256(msg.encode()).digest()
            res[msg] = [next(p256_sign.nonces(d, h))] + list(p256_sign.sign(d, h))
        out(res)
    """)
    assert got["pub"] == [RFC_UX, RFC_UY]
    for msg, (k, r, s) in RFC_ROWS.items():
        assert got[msg] == [k, r, s], msg


def test_signatures_equal_openssl_deterministic_ones(mpy) -> None:
    """Random keys and digests: (r, s) equal OpenSSL's RFC 6979 signature exactly."""
    rng = random.Random(16)
    cases = [(rng.randrange(1, N), rng.randbytes(32)) for _ in range(12)]
    cases += [(1, bytes(32)), (N - 1, b"\xff" * 32), (2, N.to_bytes(32, "big"))]
    mpy.write("cases.json", json.dumps([[d, h.hex()] for d, h in cases]))
    got = mpy.one(
        """
        import json
        from binascii import unhexlify
        from tk import p256_sign
        from tkfakes import out
        out([list(p256_sign.sign(d, unhexlify(h))) for d, h in json.load(open("cases.json"))])
    """,
        timeout=60,
    )
    algo = ec.ECDSA(utils.Prehashed(hashes.SHA256()), deterministic_signing=True)
    for (d, h), (r, s) in zip(cases, got, strict=True):
        key = ec.derive_private_key(d, ec.SECP256R1())
        assert utils.decode_dss_signature(key.sign(h, algo)) == (r, s)


def test_hmac_sha256_matches_python(mpy) -> None:
    rng = random.Random(2104)
    cases = [
        (rng.randbytes(n), rng.randbytes(m))
        for n, m in [(0, 0), (32, 3), (64, 64), (65, 1), (200, 77)]
    ]
    mpy.write("h.json", json.dumps([[k.hex(), m.hex()] for k, m in cases]))
    got = mpy.one("""
        import json
        from binascii import unhexlify
        from tk import p256_sign
        from tkfakes import out, hx
        out([hx(p256_sign.hmac_sha256(unhexlify(k), unhexlify(m))) for k, m in json.load(open("h.json"))])
    """)
    assert got == [hmac.new(k, m, hashlib.sha256).hexdigest() for k, m in cases]


def test_der_integers_are_minimal(mpy) -> None:
    """_int against OpenSSL's DER of an ECDSA-Sig-Value for edge values."""
    vals = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 2**255, 2**255 - 1, N - 1, 2**248 - 1]
    got = mpy.one(f"""
        from tk import identity
        from tkfakes import out, hx
        vals = {vals}
        out([hx(identity._seq(identity._int(a), identity._int(b))) for a, b in zip(vals, vals[::-1])])
    """)
    want = [utils.encode_dss_signature(a, b).hex() for a, b in zip(vals, vals[::-1], strict=True)]
    assert got == want


def test_der_long_lengths_and_oids(mpy) -> None:
    got = mpy.one("""
        from tk import identity
        from tkfakes import out, hx
        out([hx(identity._tlv(4, bytes(n))[:4]) for n in (127, 128, 255, 256, 1000)]
            + [hx(identity._oid(o)) for o in ((2, 5, 4, 3), (1, 2, 840, 10045, 3, 1, 7), (2, 999, 16384))])
    """)
    assert got == [
        "047f0000", "04818000", "0481ff00", "04820100", "048203e8",  # X.690 8.1.3
        "0603550403", "06082a8648ce3d030107", "06058837818000",
    ]  # fmt: skip


# -- key file ----------------------------------------------------------------------------
def test_rejection_sampling_and_a_broken_random_source(mpy) -> None:
    valid = (12345).to_bytes(32, "big")
    got = mpy.one(
        f"""
        from tk import identity
        from tkfakes import out
        def script(*outs):
            it = iter(outs)
            return lambda n: next(it)
        res = []
        # first draw only primes the repeat check; 0, n and 2^256-1 are out of range
        k = identity.make_key("a.der", rng=script(b"\\x01" * 32, bytes(32), {N.to_bytes(32, "big")!r},
                                                   b"\\xff" * 32, {valid!r}))
        res.append(k.d)
        for name, outs in (("repeat", [b"\\x07" * 32, b"\\x07" * 32]), ("short", [b"\\x01", b"\\x02"]),
                           ("never", [bytes(32), b"\\xff" * 32] * 33)):
            try:
                identity.make_key(name + ".der", rng=script(*outs))
                res.append("made")
            except identity.IdentityError as e:
                import os
                res.append([str(e), name + ".der" in os.listdir(), name + ".der.tmp" in os.listdir()])
        out(res)
    """,
        timeout=30,
    )
    assert got[0] == 12345
    assert got[1:] == [["random source failed (short or repeated output)", False, False]] * 2 + [
        ["random source gave no scalar in [1, n-1]", False, False]
    ]


def test_make_key_never_overwrites_by_accident(mpy) -> None:
    got = mpy.one(
        """
        import os
        from tk import identity
        from tkfakes import out
        a = identity.make_key("certs/device.key.der")
        before = open("certs/device.key.der", "rb").read()
        try:
            identity.make_key("certs/device.key.der")
            refused = None
        except identity.IdentityError as e:
            refused = str(e)
        same = open("certs/device.key.der", "rb").read() == before
        b = identity.make_key("certs/device.key.der", replace=True)
        changed = open("certs/device.key.der", "rb").read() != before
        loaded = identity.load_key("certs/device.key.der", check=True)
        os.mkdir("certs/dir.der")  # rename onto a directory fails after the write
        try:
            identity.make_key("certs/dir.der", replace=True)
            failed = None
        except OSError as e:
            failed = type(e).__name__
        out([refused, same, changed, loaded.pub == b.pub, failed, sorted(os.listdir("certs"))])
    """,
        timeout=60,
    )
    # No key.tmp is left behind, neither after a success nor after a failed rename.
    assert got == [
        "certs/device.key.der exists",
        True,
        True,
        True,
        "OSError",
        ["device.key.der", "dir.der"],
    ]


def test_load_key_reads_provisioning_keys_and_refuses_others(mpy) -> None:
    host = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    good = host.private_bytes(*SEC1)
    mpy.write("good.der", good)
    mpy.write("pkcs8.der", host.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))  # fmt: skip
    mpy.write("p384.der", ec.generate_private_key(ec.SECP384R1()).private_bytes(*SEC1))
    mpy.write("swapped.der", good[:57] + other.private_bytes(*SEC1)[57:])  # another key's point
    off = bytearray(good)
    off[-1] ^= 1  # a point off the curve
    mpy.write("off.der", bytes(off))
    got = mpy.one(
        """
        from tk import identity
        from tkfakes import out
        res = {}
        for name, check in (("good", True), ("pkcs8", False), ("p384", False), ("swapped", False),
                            ("swapped", True), ("off", False)):
            try:
                k = identity.load_key(name + ".der", check=check)
                res[name + str(check)] = list(k.pub)
            except identity.IdentityError as e:
                res[name + str(check)] = str(e)
        out(res)
    """,
        timeout=30,
    )
    nums = host.public_key().public_numbers()
    assert got["goodTrue"] == [nums.x, nums.y]
    assert got["pkcs8False"] == "pkcs8.der is not a P-256 SEC 1 key"
    assert got["p384False"] == "p384.der is not a P-256 SEC 1 key"
    # The layout is fine and the point is on the curve: only check=True sees the mismatch.
    onum = other.public_key().public_numbers()
    assert got["swappedFalse"] == [onum.x, onum.y]
    assert got["swappedTrue"] == "swapped.der: public point does not match the private key"
    assert got["offFalse"] == "off.der holds an invalid P-256 key"
    for form in secret_forms(good):
        assert form not in json.dumps(got)


# -- the identity in use: MicroPython's ssl and a TLS 1.2 mutual-auth connection ----------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, pub, issuer: str, ca_key, ca: bool = False, san: bool = False):
    now = datetime.now(UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return b.sign(ca_key, hashes.SHA256())


def _tls_server(tmp: Path, ca_cert, ca_key):
    """A TLS 1.2-only server on 127.0.0.1 that requires a client certificate from the
    test CA and answers with the client certificate it saw (DER, hex)."""
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp / "srv.pem").write_bytes(
        _cert("localhost", key.public_key(), "test CA", ca_key, san=True).public_bytes(
            serialization.Encoding.PEM
        )
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca_cert.public_bytes(serialization.Encoding.DER))
    ctx.load_cert_chain(tmp / "srv.pem")
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(30)
    seen: dict = {}

    def serve() -> None:
        try:
            conn, _ = lsock.accept()
            with ctx.wrap_socket(conn, server_side=True) as t:
                seen["version"] = t.version()
                seen["peer"] = t.getpeercert(binary_form=True)
                seen["said"] = t.recv(64)
                t.sendall(b"hello device")
        except Exception as e:  # noqa: BLE001  (reported by the test)
            seen["error"] = repr(e)
        finally:
            lsock.close()

    th = threading.Thread(target=serve, name="tls-server", daemon=True)
    th.start()
    return lsock.getsockname()[1], th, seen


CONNECT = """
import socket
import ussl
from tkfakes import out
def rd(p):
    with open(p, "rb") as f:
        return f.read()
ctx = ussl.make_context(rd("certs/device.crt.der"), rd("certs/device.key.der"), rd("certs/ca.der"))
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", %d)[0][-1])
t = ctx.wrap_socket(s, server_hostname="localhost")
t.write(b"hi from %s")
out(t.read(64).decode())
t.close()
"""


def test_identity_loads_in_micropython_ssl_and_authenticates_tls12(mpy, made) -> None:
    """A test CA issues a certificate from the device's CSR; the device loads it with its
    key through the firmware's ussl.make_context (SSLContext.load_cert_chain) and
    completes a TLS 1.2 mutual-auth handshake; the server saw that certificate."""
    _, csr_der, key_der = made
    csr = x509.load_der_x509_csr(csr_der)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _cert("test CA", ca_key.public_key(), "test CA", ca_key, ca=True)
    cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    leaf = _cert(str(cn), csr.public_key(), "test CA", ca_key)
    mpy.write("certs/device.crt.der", leaf.public_bytes(serialization.Encoding.DER))
    mpy.write("certs/ca.der", ca_cert.public_bytes(serialization.Encoding.DER))
    port, th, seen = _tls_server(mpy.cwd, ca_cert, ca_key)
    try:
        stdout = mpy.run(CONNECT % (port, THING), timeout=30)
    finally:
        th.join(timeout=30)
    assert "error" not in seen, seen
    assert seen["version"] == "TLSv1.2"
    assert seen["said"] == f"hi from {THING}".encode()
    assert x509.load_der_x509_certificate(seen["peer"]) == leaf
    assert 'JSON "hello device"' in stdout
    for form in secret_forms(key_der):
        assert form not in stdout


MOSQUITTO = Path("/usr/sbin/mosquitto")


@pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed")
def test_identity_connects_to_the_bench_broker(mpy, made, tmp_path_factory) -> None:
    """The bench's fleet CA issues the certificate for the device's CSR; the kit's MQTT
    client (umqtt.simple over the firmware's ussl) connects to mosquitto, which requires
    a client certificate and takes the CN as the user name."""
    from host_tools.bench.bench import Bench
    from provisioning.ca import Usage

    _, csr_der, _ = made
    csr = x509.load_der_x509_csr(csr_der)
    bench = Bench(tmp_path_factory.mktemp("idbench") / "bench")
    bench.up()
    try:
        ca = bench.fleet_ca()

        class _Public:  # leaf_issuer takes a key object; only its public half is used
            def public_key(self):
                return csr.public_key()

        leaf = ca.leaf_issuer(Usage.CLIENT)(THING, _Public())
        mpy.write("certs/device.crt.der", leaf.public_bytes(serialization.Encoding.DER))
        mpy.write("certs/ca.der", bench.layout.server_ca_der.read_bytes())
        bench.register(THING, leaf.fingerprint(hashes.SHA256()).hex())
        got = mpy.one(
            f"""
            from umqtt.simple import MQTTClient
            from tkfakes import out
            def rd(p):
                with open(p, "rb") as f:
                    return f.read()
            c = MQTTClient({THING!r}, "127.0.0.1", {bench.port}, keepalive=30, ssl=True,
                           ssl_params={{"cert": rd("certs/device.crt.der"),
                                        "key": rd("certs/device.key.der"),
                                        "cadata": rd("certs/ca.der"),
                                        "server_hostname": "localhost"}})
            out(c.connect())
            c.disconnect()
        """,
            timeout=30,
        )
        assert got == 0  # CONNACK accepted (return code 0), no session present
        log = bench.broker_log()
        assert re.search(
            rf"New client connected from 127\.0\.0\.1:\d+ as {THING} .*u'{THING}'", log
        ), log[-2000:]
    finally:
        bench.down()


# -- loading and cost --------------------------------------------------------------------
def _module_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_identity_modules_are_not_loaded_at_boot() -> None:
    """Only tk.identity imports tk.p256_sign, and no firmware module imports either at
    module level (a later caller imports them inside the function that needs them)."""
    for path in sorted(FIRMWARE.rglob("*.py")):
        if path.name in ("identity.py", "p256_sign.py"):
            continue
        found = _module_level_imports(path) & {"tk.identity", "tk.p256_sign"}
        assert not found, f"{path.relative_to(FIRMWARE)} imports {found} at load"
    assert "tk.p256_sign" not in _module_level_imports(FIRMWARE / "tk" / "p256.py")


def _compiled(tmp_path: Path) -> Path:
    """tk/{p256,p256_sign,identity}.mpy compiled as a release ships them."""
    root = tmp_path / "rel"
    (root / "tk").mkdir(parents=True)
    (root / "tk" / "__init__.py").write_text("")
    for name in ("p256", "p256_sign", "identity"):
        subprocess.run(
            [mpy_cross_binary(), "-o", str(root / "tk" / f"{name}.mpy"), "-s", f"tk/{name}.py",
             str(FIRMWARE / "tk" / f"{name}.py")],
            check=True,
        )  # fmt: skip
    return root


TIMING = """
import gc, time
from tk import identity
ts = []
for i in range(5):
    gc.collect()
    t0 = time.ticks_us()
    key = identity.make_key("k%d.der" % i, rng=RNG)
    t1 = time.ticks_us()
    der = identity.csr(key, "kit-0042")
    t2 = time.ticks_us()
    ts.append([time.ticks_diff(t1, t0) // 1000, time.ticks_diff(t2, t1) // 1000])
print("JSON", ts)
"""
HEAP_KIB = 24


def _median(ts: list[list[int]]) -> tuple[float, float, float]:
    return (
        statistics.median(t[0] for t in ts),
        statistics.median(t[1] for t in ts),
        statistics.median(t[0] + t[1] for t in ts),
    )


def test_cost_on_the_unix_port_in_a_small_heap(tmp_path: Path) -> None:
    """Compiled to .mpy, key + CSR fit a 24 KiB GC heap (64-bit objects; a bare script
    needed 20 KiB); the median of five runs is printed (``pytest -s``)."""
    root = _compiled(tmp_path)
    (tmp_path / "timing.py").write_text("import os\nRNG = os.urandom\n" + TIMING)
    env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
    env["MICROPYPATH"] = str(root) + ":.frozen"
    out = subprocess.run(
        [micropython_binary(), "-X", f"heapsize={HEAP_KIB}k", str(tmp_path / "timing.py")],
        capture_output=True, text=True, timeout=120, env=env, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    ts = json.loads(out.stdout.split("JSON", 1)[1])
    key_ms, csr_ms, total = _median(ts)
    print(f"unix port (64-bit, .mpy, {HEAP_KIB} KiB heap): key {key_ms} ms, CSR {csr_ms} ms, "
          f"total {total} ms (median of 5)")  # fmt: skip


@pytest.mark.skipif(wasm32.unavailable() is not None, reason=str(wasm32.unavailable()))
def test_cost_on_the_32_bit_webassembly_port(tmp_path: Path) -> None:
    """The same on MicroPython's 32-bit WebAssembly port. It has no os.urandom, so the
    key's bytes come from a SHA-256 counter here (the cost is the curve arithmetic)."""
    root = _compiled(tmp_path)
    rng = (
        "import hashlib\n_c = [0]\ndef RNG(n):\n    _c[0] += 1\n"
        "    return hashlib.sha256(b'seed%d' % _c[0]).digest()[:n]\n"
    )
    steps = wasm32.run_steps([rng, TIMING], heap=64 * 1024, files=root)
    assert steps[-1].ok, steps[-1].error
    ts = json.loads(steps[-1].out.split("JSON", 1)[1])
    key_ms, csr_ms, total = _median(ts)
    print(f"wasm32 ({wasm32.runtime_info()['version']}, .mpy): key {key_ms} ms, "
          f"CSR {csr_ms} ms, total {total} ms (median of 5)")  # fmt: skip
