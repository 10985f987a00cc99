"""Probe the broker's TLS listener from the host: which versions it accepts, and
whether it refuses a client without a certificate."""

from __future__ import annotations

import socket
import ssl
import warnings
from pathlib import Path


def handshake(
    port: int,
    ca: Path | None,
    version: ssl.TLSVersion,
    cert: tuple[Path, Path] | None,
    host: str = "127.0.0.1",
    server_hostname: str = "localhost",
) -> str | None:
    """Try one TLS handshake pinned to ``version``; return the version negotiated or None.

    With TLS 1.3 and no client certificate, a refusal only shows on the first read, so
    this also reads once after the handshake. ``ca`` None: the system's trust store
    (AWS IoT Core's Amazon Trust Services roots).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        ctx.load_default_certs()
    else:
        ctx.load_verify_locations(cafile=str(ca))
    with warnings.catch_warnings():  # probing TLS 1.0/1.1 is the point: not a mistake
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    try:
        with (
            socket.create_connection((host, port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=server_hostname) as s,
        ):
            negotiated = s.version()
            s.settimeout(0.5)
            try:
                if s.recv(1) == b"":
                    return None
            except TimeoutError:
                pass
            return negotiated
    except (ssl.SSLError, OSError):
        return None
