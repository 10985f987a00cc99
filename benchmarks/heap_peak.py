"""Benchmark: the firmware's GC heap on the virtual kit, App #1 + App #2 running.

Boots a kit at a series of heap budgets and reports, for each, whether App #1 and App #2
ran for the whole window without a MemoryError ("App #1 only": out of memory, the device
went on without App #2), and the heap the firmware used: live
after a collection (diagnostics' heap_alloc) and the peak (budget minus the lowest free
heap seen). The sim's own costs (ROMFS image, hardware emulators) are reserved on top
of each budget and left out of every figure. The unix port is 64-bit: object words are
twice an ESP32's, so the figures are an upper bound for a board.

    .venv/bin/python -m benchmarks.heap_peak [--budgets 56k,64k,80k,96k] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from host_tools import device_deps
from host_tools.bench.bench import Bench
from host_tools.bench.observer import Observer
from host_tools.kit.provision import create_sim_kit

TARGET = "56k"


def measure(bench: Bench, root: Path, budget: str, seconds: float) -> dict:
    thing = f"heap-{budget}"
    kit = create_sim_kit(
        bench, root, thing, heap=budget, telemetry_interval_s=1, diag_interval_s=10
    )
    with Observer(bench) as obs:
        t0 = time.time()
        kit.power_on()
        time.sleep(seconds)
        kit.power_off()
    con = kit.console()
    diags = [m.json() for m in obs.messages if m.topic == f"thingkit/{thing}/diag" and m.t >= t0]
    tele = [m for m in obs.messages if m.topic == f"thingkit/{thing}/telemetry" and m.t >= t0]
    budget_b = kit.heap_bytes()
    reserved = kit._reserved()
    out = {
        "budget": budget,
        "budget_bytes": budget_b,
        "telemetry_messages": len(tele),
        "memory_errors": con.count("MemoryError"),
        "sessions": con.count("mqtt connected"),
        # Out of memory (at boot, or two sessions in a row) the device goes on without
        # App #2 (tk.device).
        "app1_only": re.search(r"E device: out of memory (at boot|in \d+ sessions)", con)
        is not None,
    }
    if diags:
        last = diags[-1]
        out["live_bytes"] = last["heap_alloc"]
        # heap_min_free is of the whole GC heap, which is budget + reserved on the sim.
        out["peak_bytes"] = budget_b + reserved - min(d["heap_min_free"] for d in diags) - reserved
    out["ok"] = (
        out["memory_errors"] == 0
        and out["sessions"] == 1
        and len(tele) >= seconds - 3
        and not out["app1_only"]
    )
    return out


def run(budgets: list[str], seconds: float) -> list[dict]:
    device_deps.fetch()
    with tempfile.TemporaryDirectory(prefix="thingkit-heap-") as d:
        bench = Bench(Path(d) / "bench")
        bench.up()
        try:
            return [measure(bench, Path(d) / "kits", b, seconds) for b in budgets]
        finally:
            bench.down()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="56k,64k,80k,96k")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = run(args.budgets.split(","), args.seconds)
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        live = f"{r['live_bytes'] / 1024:.1f} KiB" if "live_bytes" in r else "n/a"
        peak = f"{r['peak_bytes'] / 1024:.1f} KiB" if "peak_bytes" in r else "n/a"
        lean = r["app1_only"] and r["sessions"] == 1
        verdict = "runs" if r["ok"] else "App #1 only" if lean else "FAILS"
        print(
            f"heap_peak: budget {r['budget']:>4}: {verdict}; "
            f"live {live}, peak {peak}, {r['telemetry_messages']} telemetry messages, "
            f"{r['memory_errors']} MemoryErrors, {r['sessions']} sessions"
        )
    ok = [r for r in rows if r["ok"]]
    least = min(ok, key=lambda r: r["budget_bytes"])["budget"] if ok else "none"
    print(
        f"heap_peak: smallest budget that runs App #1 + App #2: {least} (target {TARGET}, "
        f"64-bit sim figures)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
