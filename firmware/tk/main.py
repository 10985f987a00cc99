"""Entry point: load the board layer and config, then run the device.

A missing or bad config.json never causes a crash loop: the device prints the reason
and idles, checking the file again every 10 s, so a person can fix it over the console
(``mpremote cp config.json :``) without a reboot.
"""
import time

from tk import config, device
from tk.log import Logger
from tk.version import VERSION

_log = Logger("main")


def _load_config():
    while True:
        try:
            return config.load()
        except config.ConfigError as e:
            _log.error("config: %s; idle until config.json is fixed", e)
            _log.error("help: %s", _docs_url())
        for _ in range(10):
            time.sleep(1)


def _docs_url():
    """The documentation link from config.json, if it can be read at all."""
    try:
        import json
        with open(config.CONFIG_FILE) as f:
            url = json.load(f).get("docs_url")
        return url if isinstance(url, str) and url else "see the kit's documentation"
    except Exception:
        return "see the kit's documentation"


def start():
    import hal
    board = hal.load()
    _log.info("thingkit %s on %s (reset: %s)", VERSION, board.NAME, board.reset_cause())
    cfg = _load_config()
    while True:
        try:
            device.run(board, cfg)
        except Exception as e:  # a bug: keep the traceback, wait, start over
            _log.exc(e, "device.run failed")
            time.sleep(5)
