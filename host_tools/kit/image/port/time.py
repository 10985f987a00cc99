"""``time`` as the ESP32 port has it, on the virtual kit (MicroPython unix port).

Where a 32-bit ESP32 build differs from the 64-bit unix port in ways firmware can
notice, this module behaves like the board:

- ``ticks_ms()``, ``ticks_us()`` and ``ticks_cpu()`` wrap at 2**30 (small ints are
  31-bit): about 12.4 days for ms, 17.9 min for us. ``ticks_diff`` changes sign at half
  the period. The counters start ``TK_SIM_TICKS_TO_WRAP`` ms before their wrap (default
  20 s), so a kit crosses the wrap within seconds of every boot;
- ``time()`` is an int (the ESP32 port has no float time);
- the epoch is 2000-01-01 (MicroPython's default; the ESP32 port does not set
  MICROPY_EPOCH_IS_1970), for ``time()``, ``time_ns()``, ``gmtime()``, ``localtime()``
  and ``mktime()``.

A board's ``time`` is built in and costs no heap; this one does (the kit runner measures
and reserves it with the other emulators). ``import utime`` gives the port's own module.
"""
import uos  # the port's own os (a test may stand in for ``os``)
import utime

_PERIOD = 1 << 30
_MASK = _PERIOD - 1
_HALF = _PERIOD >> 1
_EPOCH = 946684800  # 2000-01-01 in Unix seconds


def _to_wrap_ms():
    try:
        return int(uos.getenv("TK_SIM_TICKS_TO_WRAP") or 20000)
    except ValueError:
        return 20000


_MS0 = utime.ticks_ms()
_US0 = utime.ticks_us()
_START_MS = (_PERIOD - _to_wrap_ms()) & _MASK
_START_US = (_PERIOD - _to_wrap_ms() * 1000 % _PERIOD) & _MASK

sleep = utime.sleep
sleep_ms = utime.sleep_ms
sleep_us = utime.sleep_us


def ticks_ms():
    return (utime.ticks_diff(utime.ticks_ms(), _MS0) + _START_MS) & _MASK


def ticks_us():
    return (utime.ticks_diff(utime.ticks_us(), _US0) + _START_US) & _MASK


def ticks_cpu():
    return ticks_us()


def ticks_add(ticks, delta):
    return (ticks + delta) & _MASK


def ticks_diff(end, start):
    d = (end - start) & _MASK
    return d - _PERIOD if d >= _HALF else d


def time():
    return int(utime.time()) - _EPOCH


def time_ns():
    return utime.time_ns() - _EPOCH * 1000000000


def gmtime(secs=None):
    return utime.gmtime(utime.time() if secs is None else secs + _EPOCH)


def localtime(secs=None):
    return utime.localtime(utime.time() if secs is None else secs + _EPOCH)


def mktime(t):
    return utime.mktime(t) - _EPOCH
