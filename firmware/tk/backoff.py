"""Exponential backoff with full jitter (AWS Architecture Blog; FreeRTOS backoffAlgorithm).

    delay = random_between(0, min(cap, base * 2 ** attempt))

The window doubles on each failure up to the cap; session_ended() resets it after a
stable connection, but not after one the broker closed early: a duplicate-client-id kick
(AWS IoT closes the older connection when another client connects with the same id)
then backs off exponentially instead of starting a reconnect fight.

    b = Backoff(1000, 120000)
    delay_ms, window_ms = b.next()
    b.session_ended(up_ms, peer_closed, 30000)

``jitter=False`` (virtual kit only: the reconnect storm's baseline) makes every delay the
full window.
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
    def __init__(self, base_ms, cap_ms, jitter=True):
        if base_ms <= 0 or cap_ms < base_ms:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.jitter = jitter
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
        return (random.randint(0, w) if self.jitter else w), w

    def reset(self):
        self.attempt = 0

    def session_ended(self, up_ms, peer_closed, reset_after_ms):
        """A connection that was up for ``up_ms`` ended; reset if it was stable.

        Stable means up for ``reset_after_ms``; a connection the broker closed
        (``peer_closed``) must also have lasted twice the cap. In a kick fight between
        two clients with one id, each connection lasts only until the other's retry,
        at most the cap plus a handshake, so it never resets and both windows grow to
        the cap; a broker that restarts after a long quiet time still meets base-window
        retries. Returns True if it reset.
        """
        need = reset_after_ms
        if peer_closed and need < 2 * self.cap_ms:
            need = 2 * self.cap_ms
        if up_ms >= need:
            self.reset()
            return True
        return False
