# The baseline for benchmarks/ota_update.py, run on the MicroPython unix port: the same
# bytes over one TLS 1.2 mutual-auth connection, read in 1 KiB blocks and written to a
# file, as plainly as it can be done (no MQTT, no JSON, no base64, no checks).
# Usage: micropython ota_raw_tls.py HOST PORT CERT_DER KEY_DER CA_DER OUT
import socket
import ssl
import sys
import time

host, port, cert, key, ca, out = sys.argv[1:7]


def rd(p):
    with open(p, "rb") as f:
        return f.read()


t0 = time.ticks_ms()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_cert_chain(rd(cert), rd(key))
ctx.load_verify_locations(cadata=rd(ca))
s = socket.socket()
s.connect(socket.getaddrinfo(host, int(port))[0][-1])
s = ctx.wrap_socket(s, server_hostname=host)
buf = bytearray(1024)
n = 0
with open(out, "wb") as f:
    while True:
        k = s.readinto(buf)
        if not k:
            break
        f.write(memoryview(buf)[:k])
        n += k
s.close()
print("raw", n, time.ticks_diff(time.ticks_ms(), t0))
