"""App #2, components (AWS IoT hardware-kit checklist): publish the readings of every
advertised component at a fixed interval.

Each tick reads every enabled component of board.json and publishes one message on
``<prefix>/<thing>/telemetry`` (QoS 1)::

    {"thing": "kit-1", "boot": "9f3a01c2", "seq": 17, "ts": 1795380000123,
     "interval_s": 10, "readings": {"env": {"temperature": 21.5, ...}, ...},
     "errors": {"imu": "OSError(19)"}}

``ts`` is the device's NTP time in ms (IoT Lens BP 16.2); (boot, seq) identify a
message, so a receiver can drop the duplicates QoS 1 allows. A component that fails is
reported in ``errors`` while the others go on. The latest values also go to the
reported state of the thing's named shadow ``app2``.

Store and forward (IoT Lens BP 11.2): with an ``outbox`` (tk.outbox) every message is
written to flash when taken, online or not, and flush() publishes from the oldest, a
bounded number per call, so the stream arrives in order after an outage. Such messages
also carry ``"outbox": {"dropped": d, "downsampled": s}``, the outbox's counters when
the message was taken: a gap in seq is explained by them. No reading is taken before
the clock is set (tk.clock.is_plausible): a message needs a real ``ts``.
"""
import json
import time

from tk import clock, drivers
from tk.log import Logger

_log = Logger("app2")


class App2:
    def __init__(self, client, thing, topic, comps, hw, boot_id, buses=None):
        self.client = client
        self.thing = thing
        self.topic = topic
        self.hw = hw
        self.oom = False  # the last read_all() had a component out of memory
        self.buses = buses
        self.boot_id = boot_id
        self.comps = comps  # component dicts from board.json
        self.enabled = [c["id"] for c in comps]
        self.interval_ms = 10000
        self.seq = 0
        self._drivers = {}
        self._next = time.ticks_ms()
        self.last = None  # (values, errors) of the last tick
        self.outbox = None  # tk.outbox.Outbox: store and forward

    def known(self):
        return [c["id"] for c in self.comps]

    def set_interval(self, seconds):
        self.interval_ms = int(seconds * 1000)
        self._next = time.ticks_ms()

    def set_enabled(self, ids):
        self.enabled = [i for i in self.known() if i in ids]

    def _driver(self, comp):
        d = self._drivers.get(comp["id"])
        if d is None:
            d = drivers.open_component(comp, self.hw, self.buses)
            self._drivers[comp["id"]] = d
        return d

    def self_test(self):
        """Open every driver and read each component once, at boot: long-lived objects
        are made while the heap is still clean (less fragmentation later), and the
        console says at once which parts answer."""
        values, errors = self.read_all()
        _log.info("self-test: %d components read, %d failed%s", len(values), len(errors),
                  (": " + ", ".join(errors)) if errors else "")
        if self.oom:
            # A part that does not fit now will not fit later: boot goes on without App #2
            # (tk.device) rather than reporting memory errors every interval.
            raise MemoryError("App #2's components do not fit the heap")
        return values, errors

    def read_all(self):
        values, errors = {}, {}
        self.oom = False
        for comp in self.comps:
            cid = comp["id"]
            if cid not in self.enabled:
                continue
            try:
                # Drivers reuse their result dict (no allocation per read): copy it.
                values[cid] = dict(self._driver(comp).read())
            except Exception as e:  # OSError from the bus, ComponentError, driver bugs
                if isinstance(e, MemoryError):
                    self.oom = True
                errors[cid] = repr(e)
                self._drivers.pop(cid, None)  # reopen next time (the sensor may come back)
        return values, errors

    def ms_to_due(self):
        return max(0, time.ticks_diff(self._next, time.ticks_ms()))

    def due(self):
        return time.ticks_diff(time.ticks_ms(), self._next) >= 0

    def tick(self):
        """If the interval has passed: read, queue (or publish without an outbox),
        return (values, errors); else None. Works offline (client None) with an outbox."""
        if not self.due():
            return None
        # Keep a fixed cadence: the next tick is one interval after this one was due,
        # not after this one finished.
        self._next = time.ticks_add(self._next, self.interval_ms)
        if time.ticks_diff(time.ticks_ms(), self._next) > 0:
            self._next = time.ticks_add(time.ticks_ms(), self.interval_ms)
        if not clock.is_plausible():
            return None  # no time yet: a reading could not say when it was taken
        values, errors = self.read_all()
        self.seq += 1
        msg = {"thing": self.thing, "boot": self.boot_id, "seq": self.seq,
               "ts": clock.unix_ms(), "interval_s": self.interval_ms / 1000,
               "readings": values}
        if errors:
            msg["errors"] = errors
            for cid, e in errors.items():
                _log.warn("%s: %s", cid, e)
        ob = self.outbox
        if ob is None:
            self.client.publish(self.topic, json.dumps(msg).encode(), False, 1)
        else:
            ob.reserve()  # the full policy first, so the counters include its cost
            msg["outbox"] = {"dropped": ob.dropped, "downsampled": ob.downsampled}
            ob.append(json.dumps(msg).encode())
        self.last = (values, errors)
        return values, errors

    def pending(self):
        """Records waiting in the outbox."""
        return self.outbox.size if self.outbox is not None else 0

    def flush(self, max_n=8):
        """Publish up to ``max_n`` queued records, oldest first, at QoS 1; each leaves
        the outbox once its PUBACK came. Returns how many were sent. A failed publish
        raises (the session ends; the record stays for the next one)."""
        ob = self.outbox
        sent = 0
        if ob is None:
            return 0
        try:
            while sent < max_n:
                rec = ob.peek()
                if rec is None:
                    break
                self.client.publish(self.topic, rec, False, 1)
                ob.pop()
                sent += 1
        finally:
            ob.save()  # one small head write per batch, not per record
        return sent

    def shadow_report(self, values, errors):
        """The reported.app2 object: latest values; errors of every enabled component
        (null clears an error the shadow still holds)."""
        errs = {}
        for cid in self.known():
            errs[cid] = errors.get(cid)
        return {"seq": self.seq, "ts": clock.unix_ms(), "values": values, "errors": errs,
                "interval_s": self.interval_ms / 1000, "enabled": self.enabled}
