"""A stand-in MQTT endpoint for TLS negative tests: a TLS server with a chosen
certificate and protocol versions that records what each client did.

It completes (or fails) the handshake, then reads the first MQTT packet type: a device
that refuses the server never gets that far, so ``connects`` stays empty. Failed
handshakes keep OpenSSL's reason (``TLSV1_ALERT_UNKNOWN_CA``, ...), which is the alert
the device sent.

    srv = TlsServer(("127.0.0.1", 0), pair, chain_pem, client_ca=bench.layout.client_cafile)
    ... point the device at srv.port ...
    srv.wait_attempts(2, timeout=10)
    assert srv.connects == [] and "UNKNOWN_CA" in srv.failures[0]
    srv.close()

Certificates for the cases come from :func:`server_cert` (any CA, any names, any
validity window, including one that ended in the past).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning.ca import CertificateAuthority, KeyPair, new_key

MQTT_CONNECT = 0x10


def server_cert(
    ca: CertificateAuthority,
    names: list[str],
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> KeyPair:
    """A TLS server certificate for ``names`` (SANs; CN is the first) issued by
    ``ca``'s issuing CA, valid from ``not_before`` to ``not_after`` (default: an hour ago
    to a year ahead)."""
    now = dt.datetime.now(dt.UTC)
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.issuing.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(hours=1))
        .not_valid_after(not_after or now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_sans(names)), False)
        .sign(ca.issuing.key, hashes.SHA256())
    )
    return KeyPair(key, cert)


def _sans(names: list[str]) -> list[x509.GeneralName]:
    """DNS names, and IP addresses as both (clients check one or the other)."""
    out: list[x509.GeneralName] = []
    for n in names:
        out.append(x509.DNSName(n))
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            pass
    return out


class TlsServer:
    """A TLS listener on ``listen`` that records handshakes and first MQTT packets."""

    def __init__(
        self,
        listen: tuple[str, int],
        pair: KeyPair,
        chain_pem: bytes = b"",
        versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
        client_ca: Path | None = None,
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="tk-tls-")
        cert, key = Path(self._dir.name, "cert.pem"), Path(self._dir.name, "key.pem")
        cert.write_bytes(pair.cert_pem + chain_pem)
        key.write_bytes(pair.key_pem())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if versions is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # old TLS on purpose
                ctx.minimum_version, ctx.maximum_version = versions
            if versions[0] < ssl.TLSVersion.TLSv1_2:
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS < 1.2 above 0
        ctx.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(client_ca))
        self.ctx = ctx
        self.handshakes: list[str] = []  # negotiated versions of completed handshakes
        self.failures: list[str] = []  # reasons of failed handshakes
        self.connects: list[bytes] = []  # first packet of each client that sent MQTT
        self.peer_certs: list[str] = []  # subjects of client certificates presented
        self._cond = threading.Condition()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(listen)
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="tls-server")
        self._thread.start()

    @property
    def attempts(self) -> int:
        return len(self.handshakes) + len(self.failures)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self._one(conn)

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as s:
                peer = s.getpeercert()
                subject = dict(x[0] for x in peer.get("subject", ())) if peer else {}
                with self._cond:
                    self.handshakes.append(s.version() or "?")
                    self.peer_certs.append(subject.get("commonName", ""))
                    self._cond.notify_all()
                first = s.recv(2)
                if first and first[0] & 0xF0 == MQTT_CONNECT:
                    with self._cond:
                        self.connects.append(first)
                        self._cond.notify_all()
        except (ssl.SSLError, OSError) as exc:
            with self._cond:
                self.failures.append(getattr(exc, "reason", None) or repr(exc))
                self._cond.notify_all()
        finally:
            conn.close()

    def wait(self, pred, timeout: float) -> bool:
        """Wait until ``pred(self)`` holds; False on time-out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        self._dir.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
