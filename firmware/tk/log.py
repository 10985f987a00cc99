"""Console logging: one line per event, ``<uptime_ms> <L> <tag>: <message>``.

The console is the serial port on a board and the process output on the virtual kit;
host tools and tests read these lines, so the format is part of the interface.

    from tk.log import Logger
    log = Logger("mqtt")
    log.info("connected to %s", host)
"""
import sys
import time

LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}
_level = 20
# Uptime is summed from tick differences: ticks wrap at 2**30 ms on ESP32 (12.4 days) and
# ticks_diff changes sign at half that, so "now - boot" would turn negative after 6.2
# days. Each call adds the time since the previous one, exact as long as calls come at
# least every 6.2 days (every log line and diagnostics report makes one).
_last = time.ticks_ms()
_up = 0


def set_level(name):
    """Set the global level by name; returns False (and keeps the old one) if unknown."""
    global _level
    if name not in LEVELS:
        return False
    _level = LEVELS[name]
    return True


def level_name():
    for k, v in LEVELS.items():
        if v == _level:
            return k
    return "info"


def uptime_ms():
    """Milliseconds since boot (an int that outgrows a small int after 12.4 days)."""
    global _last, _up
    now = time.ticks_ms()
    _up += time.ticks_diff(now, _last)
    _last = now
    return _up


class Logger:
    def __init__(self, tag):
        self.tag = tag

    def _emit(self, lvl, letter, msg, args):
        if lvl < _level:
            return
        try:
            if args:
                try:
                    msg = msg % args
                except MemoryError:
                    raise
                except Exception:
                    msg = "%s %r" % (msg, args)
            print("%d %s %s: %s" % (uptime_ms(), letter, self.tag, msg))
        except MemoryError:
            # No heap for the line: it is lost, the caller goes on (a clean-up path
            # that logs must not fail for want of a few hundred bytes).
            print(letter, self.tag, "(line dropped: out of memory)")

    def debug(self, msg, *args):
        self._emit(10, "D", msg, args)

    def info(self, msg, *args):
        self._emit(20, "I", msg, args)

    def warn(self, msg, *args):
        self._emit(30, "W", msg, args)

    def error(self, msg, *args):
        self._emit(40, "E", msg, args)

    def exc(self, e, msg):
        """Log an unexpected exception with its traceback."""
        self._emit(40, "E", "%s: %r", (msg, e))
        if _level <= 40:
            sys.print_exception(e)
