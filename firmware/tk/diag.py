"""Diagnostics (IoT Lens BP 17.1): health data published periodically and kept in the
thing's named shadow ``diag``.

    {"thing": "kit-1", "ts": ..., "uptime_s": 3600, "heap_free": 21344,
     "heap_min_free": 18032, "heap_alloc": 59000, "reset_cause": "power_on",
     "fw": "0.1.0", "slot": "ota_0", "rssi": -61, "reconnects": 2,
     "outbox": {"queued": 0, "dropped": 0, "downsampled": 0, "corrupt": 0}}

heap_min_free is the lowest free heap seen since boot, sampled on every loop turn;
heap_alloc leaves out what the board layer reserves for itself (on the virtual kit, the
ROMFS image that a board keeps in flash). ``outbox`` (with App #2 only): telemetry
records waiting on flash and what the full policy cost (tk.outbox).
"""
import gc
import json
import time

from tk import clock, log
from tk.version import VERSION


class Diag:
    def __init__(self, client, thing, topic, hal):
        self.client = client
        self.thing = thing
        self.topic = topic
        self.hal = hal
        self.interval_ms = 60000
        self.reconnects = 0
        self.outbox = None  # App #2's tk.outbox.Outbox, if any
        self.tls_heap = None  # (free, largest free block) of the board's heap at the last TLS handshake
        self.heap_min_free = gc.mem_free()
        self._next = time.ticks_ms()

    def sample(self):
        f = gc.mem_free()
        if f < self.heap_min_free:
            self.heap_min_free = f

    def set_interval(self, seconds):
        self.interval_ms = int(seconds * 1000)
        self._next = time.ticks_ms()

    def snapshot(self):
        # Collect first: heap figures then mean "in use", not "not yet collected".
        gc.collect()
        self.sample()
        d = {"thing": self.thing, "ts": clock.unix_ms(), "uptime_s": log.uptime_ms() // 1000,
                "heap_free": gc.mem_free(), "heap_min_free": self.heap_min_free,
                "heap_alloc": gc.mem_alloc() - self.hal.heap_reserved(),
                "reset_cause": self.hal.reset_cause(),
                "fw": VERSION, "slot": self.hal.running_slot(), "rssi": self.hal.rssi(),
                "reconnects": self.reconnects}
        if self.outbox is not None:
            d["outbox"] = self.outbox.stats()
        if self.tls_heap is not None:
            d["tls_heap"] = {"free": self.tls_heap[0], "largest": self.tls_heap[1]}
        return d

    def tick(self):
        """If due, publish a snapshot and return it; else None."""
        if time.ticks_diff(time.ticks_ms(), self._next) < 0:
            return None
        self._next = time.ticks_add(time.ticks_ms(), self.interval_ms)
        d = self.snapshot()
        self.client.publish(self.topic, json.dumps(d).encode(), False, 1)
        return d
