"""Board layer of the virtual kit (MicroPython unix port).

The host's kit runner gives the simulated hardware through the environment:
    TK_SIM_RTC    file that libfaketime reads as this process's clock ("@YYYY-MM-DD hh:mm:ss")
    TK_SIM_UID    the chip's unique id (hex)
    TK_SIM_RESET  why the kit started (power_on, soft, ...)
Writing the RTC file moves the clock of this process, and of Mbed TLS inside it, as
setting the RTC does on an ESP32.
"""
import os

import utime  # the unix port's own time (1970 epoch), whatever port/time.py emulates

NAME = "sim"


def network_up(cfg):
    # The kit's "network" is the host's loopback: always up.
    return True


def rtc_set(unix_seconds):
    path = os.getenv("TK_SIM_RTC")
    if not path:
        raise OSError("TK_SIM_RTC not set: the virtual kit has no RTC")
    t = utime.gmtime(int(unix_seconds))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("@%04d-%02d-%02d %02d:%02d:%02d\n" % t[:6])
    os.rename(tmp, path)


def unique_id():
    return os.getenv("TK_SIM_UID") or "000000000000"


def reset_cause():
    return os.getenv("TK_SIM_RESET") or "power_on"


def running_slot():
    # The firmware partition the kit's boot step chose: sim_board.partitions.running_label(),
    # read here so that the emulated partition table is loaded only during an update.
    import json
    try:
        with open((os.getenv("TK_SIM_PARTS") or "") + "/otadata.json") as f:
            return json.load(f).get("running") or "ota_0"
    except (OSError, ValueError, AttributeError):
        return "ota_0"


def reboot():
    """Restart the firmware: the kit's reset circuit starts the process again."""
    import sys
    sys.exit(75)


def partition():
    """esp32.Partition, emulated with files beside the kit."""
    from sim_board.partitions import Partition
    return Partition


def heap_reserved():
    """GC heap bytes the sim spends on what a board keeps in flash (the ROMFS image)."""
    try:
        return int(os.getenv("TK_SIM_HEAP_RESERVED") or 0)
    except ValueError:
        return 0


class _Watchdog:
    """machine.WDT of the virtual kit: feeding counts in the file $TK_SIM_WDT ("timeout_s
    count", rewritten at most once a second); the kit's reset circuit (host_tools/kit/
    sim.py) kills the firmware when the count stands still for timeout_s and starts it
    again with reset cause "watchdog"."""

    def __init__(self, timeout_ms):
        self.path = os.getenv("TK_SIM_WDT")
        self.timeout_s = max(1, (timeout_ms + 999) // 1000)
        self.count = 0
        self.at = None
        self.feed()

    def feed(self):
        self.count += 1
        now = utime.ticks_ms()
        if self.path and (self.at is None or utime.ticks_diff(now, self.at) >= 1000):
            self.at = now
            with open(self.path, "w") as f:
                f.write("%d %d\n" % (self.timeout_s, self.count))


def watchdog(timeout_ms):
    return _Watchdog(timeout_ms)


def tls_heap():
    # Mbed TLS allocates with the host's malloc on the unix port: nothing to report.
    return None


def rssi():
    # A fixed, plausible Wi-Fi signal; the sim's hardware state may override it.
    try:
        return int(os.getenv("TK_SIM_RSSI") or -55)
    except ValueError:
        return -55


# Peripherals: emulated register by register (sim_board/hw.py), so the real drivers run.
from sim_board.hw import adc, i2c, mcu_temperature, mcu_temperature_raw, neopixel, pin_in, pin_out, touch  # noqa: E402,F401
