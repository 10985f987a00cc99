"""Exponential backoff with full jitter (AWS Architecture Blog; FreeRTOS backoffAlgorithm).

    delay = random_between(0, min(cap, base * 2 ** attempt))

The window doubles on each failure up to the cap; reset() after a stable connection.

    b = Backoff(1000, 120000)
    delay_ms, window_ms = b.next()
"""
import os
import random

# Seed from the platform's entropy so that kits started at the same instant do not
# retry in step (on ESP32 random is already hardware-seeded; this does no harm).
try:
    random.seed(int.from_bytes(os.urandom(4), "big"))
except Exception:
    pass


class Backoff:
    def __init__(self, base_ms, cap_ms):
        if base_ms <= 0 or cap_ms < base_ms:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.attempt = 0

    def window_ms(self):
        """The upper bound of the next delay."""
        w = self.base_ms
        n = self.attempt
        while n > 0 and w < self.cap_ms:
            w <<= 1
            n -= 1
        return min(w, self.cap_ms)

    def next(self):
        """Return (delay_ms, window_ms) for the next retry and count the attempt."""
        w = self.window_ms()
        self.attempt += 1
        return random.randint(0, w), w

    def reset(self):
        self.attempt = 0
