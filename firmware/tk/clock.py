"""Wall-clock helpers that work on both epochs.

MicroPython on ESP32 counts time from 2000-01-01, the unix port from 1970-01-01; every
timestamp thingkit publishes is Unix time (seconds or milliseconds since 1970).
"""
import time
from micropython import const

# Seconds from 1970-01-01 to the port's epoch.
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
# A clock that reads earlier than this (2025-01-01) has not been set: TLS would refuse
# every certificate, so thingkit does not connect with it.
_MIN_VALID_UNIX = const(1735689600)


def unix_s():
    return int(time.time()) + EPOCH_OFFSET


def unix_ms():
    return time.time_ns() // 1000000 + EPOCH_OFFSET * 1000


def is_plausible():
    """True when the clock has been set (by NTP or a person) to a date TLS can use."""
    return unix_s() >= _MIN_VALID_UNIX


def port_tuple(unix_seconds):
    """time.gmtime() of a Unix time, on this port's epoch."""
    return time.gmtime(int(unix_seconds) - EPOCH_OFFSET)


def iso(unix_seconds=None):
    t = port_tuple(unix_s() if unix_seconds is None else unix_seconds)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % t[:6]
