"""Entry point: load the board layer and config, then run the device.

A missing or bad config.json never causes a crash loop: the device prints the reason
and idles, checking the file again every 10 s, so a person can fix it over the console
(``mpremote cp config.json :``) without a reboot. tk.config is boot-only: it is dropped
once the file has been read (the Settings object it returned keeps nothing of it).
"""
import time

from tk import device, forget
from tk.log import Logger
from tk.version import VERSION

_log = Logger("main")


def start():
    import hal
    board = hal.load()
    _log.info("thingkit %s on %s (reset: %s)", VERSION, board.NAME, board.reset_cause())
    from tk import config  # boot only: dropped once read
    cfg = config.wait_load(_log)
    config = None
    forget(("config",))
    from tk import watchdog
    watchdog.start(board, cfg.watchdog_s * 1000)
    while True:
        try:
            device.run(board, cfg)
        except Exception as e:  # a bug: keep the traceback, wait, start over
            _log.exc(e, "device.run failed")
            time.sleep(5)
