"""``ussl`` for umqtt.simple on MicroPython 1.22 and later.

umqtt.simple 1.3.4 (the release pinned by thingkit) does ``import ussl`` and calls
``ussl.wrap_socket(sock, **ssl_params)``; MicroPython 1.22+ has only ``ssl``. This module
builds an ``SSLContext`` for TLS client auth and wraps the socket, so the same
``ssl=True, ssl_params={...}`` call works on ESP32 and on the unix port. Only
wrap_socket and make_context: ``ssl``'s own names are not copied here (RAM).

ssl_params: cert and key (DER bytes), cadata (DER of the server's CA),
server_hostname (SNI and name check), timeout (seconds, set on the TCP socket); or
context (made by :func:`make_context`) instead of cert, key and cadata.
"""
import ssl


def make_context(cert=None, key=None, cadata=None, cert_reqs=ssl.CERT_REQUIRED):
    """An SSLContext with the client certificate and the CA loaded. Its ~3 KB are one
    block: the device makes it once per boot, on a heap not yet fragmented, and reuses
    it for every connection (ssl_params ``context``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = cert_reqs
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    if cadata is not None:
        ctx.load_verify_locations(cadata=cadata)
    return ctx


def wrap_socket(sock, key=None, cert=None, cadata=None, server_hostname=None,
                cert_reqs=ssl.CERT_REQUIRED, timeout=None, context=None):
    ctx = context or make_context(cert, key, cadata, cert_reqs)
    if timeout is not None:
        sock.settimeout(timeout)
    try:
        sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY
    except Exception:
        pass
    global _raw
    _raw = sock
    return ctx.wrap_socket(sock, server_hostname=server_hostname)


_raw = None


def take_raw():
    """The TCP socket under the last wrapped one, once: the MQTT client polls it so the
    kernel waits for bytes instead of a busy loop over the TLS socket."""
    global _raw
    s, _raw = _raw, None
    return s
