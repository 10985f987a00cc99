"""``ssl`` for the 32-bit WebAssembly runtime, import only (that port has none).

lib/ussl.py (the firmware's adapter for umqtt.simple) imports ``ssl`` at the top and
reads its constants. An SSLContext costs GC heap on a board (the Python object and
Mbed TLS's configuration, 1776 bytes measured on a 32-bit build); this stand-in
reserves as much in a bytearray so that a heap figure taken with it is not flattered.
Wrapping a socket raises OSError: this runtime has no network bridge.
"""
CERT_NONE = 0
CERT_OPTIONAL = 1
CERT_REQUIRED = 2
PROTOCOL_TLS_CLIENT = 0
PROTOCOL_TLS_SERVER = 1
_CONTEXT_BYTES = 1776


class SSLContext:
    def __init__(self, protocol):
        self._board_cost = bytearray(_CONTEXT_BYTES - 16)  # less this object's own block
        self.verify_mode = CERT_NONE

    def load_cert_chain(self, cert, key):
        pass

    def load_verify_locations(self, cafile=None, cadata=None):
        pass

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True,
                    server_hostname=None):
        raise OSError(113, "no network in the wasm32 runtime")
