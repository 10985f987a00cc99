"""Board layer for ESP32-family chips (ESP32, -S2, -S3, -C3, -C6) under MicroPython.

Wi-Fi credentials come from config.json's "wifi" object ({"ssid": ..., "psk": ...});
they are network credentials, not cloud credentials (the cloud sees only certificates).
"""
import time

import machine
import network
import binascii

from tk import clock
from tk import watchdog as wdt  # not `watchdog`: this module's watchdog() is the board API
from tk.log import Logger

NAME = "esp32"
_log = Logger("hal")

_CAUSES = {
    machine.PWRON_RESET: "power_on",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "soft",
}


def network_up(cfg, timeout_ms=30000):
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if wlan.isconnected():
        return True
    wifi = cfg.wifi or {}
    ssid = wifi.get("ssid")
    if not ssid:
        _log.error("no wifi.ssid in config.json")
        return False
    while True:
        wlan.connect(ssid, wifi.get("psk", ""))
        t0 = time.ticks_ms()
        while not wlan.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < timeout_ms:
            wdt.feed()  # waiting for the access point is progress
            time.sleep_ms(200)
        if wlan.isconnected():
            _log.info("wifi up: %s", wlan.ifconfig()[0])
            return True
        _log.warn("wifi %s: no connection after %d ms, retrying", ssid, timeout_ms)
        wlan.disconnect()


def rtc_set(unix_seconds):
    t = clock.port_tuple(unix_seconds)
    # RTC.datetime takes (year, month, day, weekday, hours, minutes, seconds, subseconds).
    machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))


def unique_id():
    return binascii.hexlify(machine.unique_id()).decode()


def reset_cause():
    return _CAUSES.get(machine.reset_cause(), "other")


def running_slot():
    import esp32
    return esp32.Partition(esp32.Partition.RUNNING).info()[4]


def reboot():
    machine.reset()


def partition():
    import esp32
    return esp32.Partition


def heap_reserved():
    # ROMFS on a board is memory-mapped flash: it costs no heap.
    return 0


def watchdog(timeout_ms):
    """machine.WDT: once started it resets the chip unless fed within ``timeout_ms``."""
    return machine.WDT(timeout=timeout_ms)


def tls_heap():
    """(free bytes, largest free block) of ESP-IDF's data heap, where Mbed TLS allocates
    (outside MicroPython's GC heap); None if the port cannot say."""
    import esp32
    try:
        regions = esp32.idf_heap_info(esp32.HEAP_DATA)  # [(total, free, largest, min_free)]
    except (AttributeError, OSError):
        return None
    free = 0
    largest = 0
    for r in regions:
        free += r[1]
        if r[2] > largest:
            largest = r[2]
    return free, largest


def rssi():
    try:
        return network.WLAN(network.STA_IF).status("rssi")
    except Exception:
        return None


# Peripherals: machine, esp32 and neopixel (hal/esp32_hw.py).
from hal.esp32_hw import adc, i2c, mcu_temperature, mcu_temperature_raw, neopixel, pin_in, pin_out, touch  # noqa: E402,F401
