"""Board layer. The only place that knows which hardware the firmware runs on.

A board module provides:
    NAME                    board family name
    network_up(cfg)         bring the network up (blocks until usable)
    rtc_set(unix_seconds)   set the real-time clock
    unique_id()             hex string unique to this chip (MAC-derived)
    reset_cause()           'power_on', 'hard', 'soft', 'watchdog', 'deepsleep', 'brownout', ...
    tls_heap()              (free, largest block) of the heap Mbed TLS uses, or None
    watchdog(timeout_ms)    start the hardware watchdog; returns an object with feed()
"""
import sys


def load():
    if sys.platform == "esp32":
        from hal import esp32 as board
    else:
        # The virtual kit: its board layer is part of the kit's image (on its path like
        # a board's built-in modules), never of the firmware a board receives.
        import sim_board as board
    return board
