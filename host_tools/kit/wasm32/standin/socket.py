"""``socket`` for the 32-bit WebAssembly runtime, import only (that port has none).

The control test imports every firmware module; tk.sntp and umqtt.simple import
``socket`` at the top. Using a socket raises OSError: this runtime has no network
bridge (host_tools.kit.wasm32 explains why none was built).
"""
AF_INET = 2
SOCK_STREAM = 1
SOCK_DGRAM = 2
IPPROTO_TCP = 6
SOL_SOCKET = 1
SO_REUSEADDR = 4


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    raise OSError(113, "no network in the wasm32 runtime")  # EHOSTUNREACH


class socket:
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        raise OSError(113, "no network in the wasm32 runtime")
