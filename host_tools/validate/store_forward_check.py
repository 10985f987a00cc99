"""``thingkit validate``: ``lens.store_forward``, the broker taken away for several App #2
intervals while the kit runs.

The kit keeps reading while offline (its console says ``offline: seq N queued`` once a
reading is on flash); after the broker is back every (boot, seq) it took must reach a
subscriber, in order, with none missing. The subscriber is a persistent session, so it
loses nothing across the broker restart itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from host_tools.bench.bench import Bench
from host_tools.bench.ledger import TelemetryLedger
from host_tools.kit.sim import SimKit
from host_tools.validate import checklist as cl

QUEUED_RX = re.compile(r"^\d+ I device: offline: seq (\d+) queued", re.MULTILINE)


def check_store_forward(
    bench: Bench,
    kit: SimKit,
    thing: str,
    interval_s: float,
    stamp: Callable[[float], str],
    intervals: int = 3,
) -> cl.Result:
    item = "lens.store_forward"
    with TelemetryLedger(bench, thing) as led:
        if not led.wait(lambda s: s.count() >= 2, 4 * interval_s + 10):
            return cl.not_met(item, "no App #2 telemetry before the outage")
        boot = led.boots()[-1]
        before = led.last(boot)
        console_mark = len(kit.console())
        t0 = time.time()
        bench.stop_broker()
        time.sleep(intervals * interval_s + 1)
        queued = [int(s) for s in QUEUED_RX.findall(kit.console()[console_mark:])]
        bench.restart_broker()
        t1 = time.time()
        last = max(queued) if queued else before
        first = min(s for b, s in led.order if b == boot)  # the ledger joined here

        def gaps(led: TelemetryLedger) -> list[int]:
            return [s for s in led.missing(boot, last) if s >= first]

        led.wait(lambda led: not gaps(led), 60)
        missing = gaps(led)
        order = [s for b, s in led.order if b == boot]
        first_seen = list(dict.fromkeys(order))
        in_order = first_seen == sorted(first_seen)
        arrived = [m.t for m in led.messages if m.t >= t1]
    ev = [
        f"{stamp(t0)} broker stopped ({intervals * interval_s + 1:.0f} s); last seq: {before}",
        f"kit queued on flash while offline: seqs {queued}",
        f"{stamp(t1)} broker back; seqs {first}..{last} of boot {boot}: "
        f"{'all arrived' if not missing else f'missing {missing}'}"
        + (f", last at {stamp(max(arrived))}" if arrived else "")
        + (", in order" if in_order else ", OUT OF ORDER")
        + f"; duplicates {led.duplicates()}",
    ]
    ok = len(queued) >= intervals - 1 and not missing and in_order
    return (cl.met if ok else cl.not_met)(item, *ev)
