"""``ussl`` for umqtt.simple on MicroPython 1.22 and later.

umqtt.simple 1.3.4 (the release pinned by thingkit) does ``import ussl`` and calls
``ussl.wrap_socket(sock, **ssl_params)``; MicroPython 1.22+ has only ``ssl``. This module
builds an ``SSLContext`` for TLS client auth and wraps the socket, so the same
``ssl=True, ssl_params={...}`` call works on ESP32 and on the unix port.

ssl_params: cert and key (DER bytes), cadata (DER of the server's CA),
server_hostname (SNI and name check), timeout (seconds, set on the TCP socket).
"""
import ssl
from ssl import *  # noqa: F401,F403


def wrap_socket(sock, key=None, cert=None, cadata=None, server_hostname=None,
                cert_reqs=ssl.CERT_REQUIRED, timeout=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = cert_reqs
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    if cadata is not None:
        ctx.load_verify_locations(cadata=cadata)
    if timeout is not None:
        sock.settimeout(timeout)
    try:
        sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY
    except Exception:
        pass
    return ctx.wrap_socket(sock, server_hostname=server_hostname)
