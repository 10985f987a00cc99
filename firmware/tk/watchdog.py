"""The hardware watchdog: the last resort against a hang (IoT Lens: self-healing).

The board's watchdog (``machine.WDT`` on ESP32; the virtual kit's reset circuit enforces
its own) resets the device unless it is fed within ``watchdog.timeout_s`` (60 s by
default). It is fed only from the loops that make progress: the session loop, the
offline wait, the clock sync and the Wi-Fi connect retries. The timeout outlasts the
longest legitimate blocking call (a TLS handshake with its 10 s socket time-out, an NTP
query, a flash erase, an update block). After a watchdog reset the board reports
``reset_cause`` "watchdog" in the boot info and diagnostics.

    from tk import watchdog
    watchdog.start(hal, 60000)
    while True:
        watchdog.feed()
        ...
"""
_wdt = None


def start(hal, timeout_ms):
    """Start the board's watchdog; it cannot be stopped (on ESP32, nor here)."""
    global _wdt
    _wdt = hal.watchdog(timeout_ms)


def feed():
    if _wdt is not None:
        _wdt.feed()
