"""Set the clock from NTP before any TLS connection (IoT Lens BP 12.1).

An ESP32 (and the virtual kit) powers on at 2000-01-01; Mbed TLS would then refuse every
certificate as "not yet valid". sync() asks each configured server in turn, with
backoff and jitter between rounds, and sets the RTC through the board layer.

A person can also set the time: ``mpremote rtc --set`` on a board (or
``thingkit kit set-time`` on the virtual kit). If no server answers, a clock that
already reads a plausible date is used after ``max_rounds`` rounds; a clock that was
never set is never used.
"""
import time

from tk import clock, sntp, watchdog
from tk.backoff import Backoff
from tk.log import Logger

_log = Logger("time")


def sync_once(hal, servers, timeout_ms=2000):
    """Try every server once; on success set the RTC and return the server used."""
    for spec in servers:
        try:
            host, port = sntp.parse_server(spec)
            t = (sntp.query(host, port, timeout_ms) + 500) // 1000  # int: exact on ESP32
        except Exception as e:  # OSError, SNTPError, bad spec
            _log.warn("ntp %s: %r", spec, e)
            continue
        before = clock.unix_s()
        hal.rtc_set(t)
        _log.info("clock set from %s: %s (was off by %d s)", spec, clock.iso(t), t - before)
        return spec
    return None


def sync(hal, servers, base_ms=1000, cap_ms=60000, max_rounds=5):
    """Block until the clock is usable. Returns "ntp" or "manual"."""
    b = Backoff(base_ms, cap_ms)
    rounds = 0
    while True:
        if sync_once(hal, servers):
            return "ntp"
        rounds += 1
        if rounds >= max_rounds and clock.is_plausible():
            _log.warn("no NTP server answered; using the clock as set: %s", clock.iso())
            return "manual"
        delay, window = b.next()
        _log.info("time not synced (%s); retry in %d ms (attempt %d, window %d ms)",
                  "clock never set" if not clock.is_plausible() else "ntp unreachable",
                  delay, b.attempt, window)
        while delay > 0:  # in steps, feeding the watchdog
            watchdog.feed()
            time.sleep_ms(min(delay, 1000))
            delay -= 1000
