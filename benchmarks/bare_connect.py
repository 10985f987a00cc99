# The baseline for benchmarks/boot_to_online.py, run on the MicroPython unix port:
# only TLS 1.2 mutual-auth connect, MQTT CONNECT, one QoS 1 PUBLISH, wait for PUBACK.
# Usage: micropython bare_connect.py HOST PORT CLIENT_ID CERT_DER KEY_DER CA_DER
import socket
import ssl
import sys

host, port, cid, cert, key, ca = sys.argv[1:7]


def rd(p):
    with open(p, "rb") as f:
        return f.read()


def s16(b):
    return bytes((len(b) >> 8, len(b) & 255)) + b


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_cert_chain(rd(cert), rd(key))
ctx.load_verify_locations(cadata=rd(ca))
s = socket.socket()
s.connect(socket.getaddrinfo(host, int(port))[0][-1])
s.setsockopt(6, 1, 1)
s = ctx.wrap_socket(s, server_hostname=host)
body = s16(b"MQTT") + b"\x04\x02\x00\x1e" + s16(cid.encode())
s.write(bytes((0x10, len(body))) + body)
assert s.read(4)[3] == 0
topic = ("thingkit/%s/bench" % cid).encode()
body = s16(topic) + b"\x00\x01" + b'{"bare":1}'
s.write(bytes((0x32, len(body))) + body)
assert s.read(4)[0] == 0x40
s.close()
print("puback")
