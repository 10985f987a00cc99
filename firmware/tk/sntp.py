"""A minimal SNTP v4 client (RFC 4330), for any server and port taken from config.

MicroPython's ``ntptime`` exists on ESP32 but not on the unix port, and it fixes the
port at 123; this one takes host and port and checks the reply's origin timestamp.

    unix_ms = sntp.query("pool.ntp.org", 123, timeout_ms=2000)

Integer arithmetic only: on ESP32 floats are single precision (24-bit mantissa), so a
Unix time in seconds (~1.8e9) as a float is only exact to 128 s. Ints grow to
arbitrary precision instead (a long int on a 32-bit port), so the result is exact.
"""
import os
import socket
import struct
import time

_NTP_TO_UNIX = 2208988800  # seconds from 1900-01-01 to 1970-01-01


class SNTPError(Exception):
    pass


def parse_server(spec):
    """'host' or 'host:port' -> (host, port)."""
    if ":" in spec:
        host, port = spec.rsplit(":", 1)
        return host, int(port)
    return spec, 123


def query(host, port=123, timeout_ms=2000):
    """Ask one server for the time; return Unix time in milliseconds (int), half the
    round trip added.

    Raises OSError on network errors or time-out and SNTPError on a bad reply.
    """
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
    req = bytearray(48)
    req[0] = 0x23  # LI 0, version 4, mode 3 (client)
    nonce = os.urandom(8)
    req[40:48] = nonce  # transmit timestamp: echoed back as the origin timestamp
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout_ms / 1000)  # a float, but a small one: exact enough
        t0 = time.ticks_ms()
        s.sendto(req, addr)
        resp = s.recv(48)
        rtt_ms = time.ticks_diff(time.ticks_ms(), t0)
    finally:
        s.close()
    if len(resp) < 48:
        raise SNTPError("short reply")
    if resp[0] >> 6 == 3:
        raise SNTPError("server clock not synchronised (leap indicator 3)")
    mode = resp[0] & 7
    stratum = resp[1]
    if mode != 4:
        raise SNTPError("not a server reply (mode %d)" % mode)
    if stratum == 0 or stratum > 15:
        raise SNTPError("server not synchronised (stratum %d)" % stratum)
    if resp[24:32] != nonce:
        raise SNTPError("origin timestamp does not match the request")
    secs, frac = struct.unpack("!II", resp[40:48])
    if secs == 0:
        raise SNTPError("zero transmit timestamp")
    # frac is 2**-32 s units: (frac * 1000) >> 32 is its whole milliseconds.
    return (secs - _NTP_TO_UNIX) * 1000 + ((frac * 1000) >> 32) + rtt_ms // 2
