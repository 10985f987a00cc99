"""Benchmark: the firmware's GC heap, App #1 + App #2 running, on 64 and 32 bits.

unix64: boots a virtual kit (MicroPython unix port, 64-bit) at a series of heap budgets
and reports, for each, whether App #1 and App #2 ran for the whole window without a
MemoryError ("App #1 only": out of memory, the device went on without App #2), and the
heap the firmware used: live after a collection (diagnostics' heap_alloc) and the peak
(budget minus the lowest free heap seen). The sim's own costs (ROMFS image, hardware
emulators) are reserved on top of each budget and left out of every figure. Object words
are twice an ESP32's, so these figures are an upper bound for a board. ``--bisect LO:HI``
finds the smallest budget that runs (4 KiB steps) instead of a list.

wasm32: the official WebAssembly port (32-bit, host_tools.kit.wasm32). Its control test
runs first (host_tools.kit.wasm32.control); a figure is printed only if the runtime is
sound and keeps a budget. The npm build does not keep one (it collects only between
top-level calls and grows its heap inside one), so today this prints the control's
findings and no figure (docs/memory.rst).

    .venv/bin/python -m benchmarks.heap_peak [--runtime both|unix64|wasm32]
        [--budgets 64k,72k,80k,96k | --bisect 48k:96k] [--seconds 120] [--mode mpy|romfs]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import tempfile
import time
from pathlib import Path

from host_tools import device_deps
from host_tools.bench import procs
from host_tools.bench.bench import Bench
from host_tools.bench.observer import Observer
from host_tools.kit import wasm32
from host_tools.kit.provision import create_sim_kit
from host_tools.kit.sim import micropython_binary
from host_tools.kit.wasm32.control import control_test, module_cost

# Issue 13's targets, on 32 bits: code as .mpy files on the filesystem (as a stock board
# runs it), and frozen or ROMFS code run in place.
TARGET_MPY = "64k"
TARGET_ROMFS = "52k"


def measure(bench: Bench, root: Path, budget: str, seconds: float, mode: str = "mpy") -> dict:
    thing = f"heap-{budget}-{mode}"
    kit = create_sim_kit(
        bench, root, thing, heap=budget, mode=mode, telemetry_interval_s=1, diag_interval_s=10
    )
    with Observer(bench) as obs:
        t0 = time.time()
        kit.power_on()
        time.sleep(seconds)
        kit.power_off()
    con = kit.console()
    mine = [m.json() for m in obs.messages if m.topic == f"thingkit/{thing}/diag" and m.t >= t0]
    diags = [d for d in mine if isinstance(d, dict)]
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


def _kib(budget: str) -> int:
    return int(budget.lower().rstrip("k"))


def run(
    budgets: list[str], seconds: float, mode: str = "mpy", bisect: str | None = None
) -> list[dict]:
    """Measure each budget, or (``bisect`` "LO:HI") search the smallest that runs."""
    device_deps.fetch()
    with tempfile.TemporaryDirectory(prefix="thingkit-heap-") as d:
        bench = Bench(Path(d) / "bench")
        bench.up()
        try:
            if not bisect:
                return [measure(bench, Path(d) / "kits", b, seconds, mode) for b in budgets]
            lo, hi = (_kib(x) for x in bisect.split(":"))
            rows = []
            # Invariant: hi runs (checked first), lo - 4 does not (assumed: below the range).
            top = measure(bench, Path(d) / "kits", f"{hi}k", seconds, mode)
            rows.append(top)
            if not top["ok"]:
                return rows
            while hi - lo >= 4:
                mid = (lo + hi) // 2 // 4 * 4
                if mid in (lo, hi) and hi - lo == 4:
                    mid = lo
                r = measure(bench, Path(d) / "kits", f"{mid}k", seconds, mode)
                rows.append(r)
                if r["ok"]:
                    hi = mid
                else:
                    lo = mid + 4
                if lo >= hi:
                    break
            return rows
        finally:
            bench.down()


# Run on the 64-bit kit in place of main.py: the firmware as usual, and a thread that
# lists the loaded modules once App #1 and App #2 have run a while (the update agent idle).
_SPY = """import _thread, sys, time
def _spy():
    time.sleep(%d)
    print("RESIDENT " + " ".join(sorted(sys.modules)))
_thread.start_new_thread(_spy, ())
exec(open("main.py").read(), {"__name__": "__main__"})
"""
_FIRMWARE_TOP = ("tk", "hal", "umqtt", "ussl")


def resident_modules(seconds: int = 45) -> list[str]:
    """The firmware modules a 64-bit kit keeps loaded in steady state (App #1 + App #2 +
    idle update agent, .mpy on the filesystem), as observed from inside the process."""
    device_deps.fetch()
    with tempfile.TemporaryDirectory(prefix="thingkit-heap-") as d:
        bench = Bench(Path(d) / "bench")
        bench.up()
        try:
            kit = create_sim_kit(
                bench,
                Path(d) / "kits",
                "resident",
                heap="128k",
                mode="mpy",
                telemetry_interval_s=1,
            )
            (kit.flash / "_spy.py").write_text(_SPY % seconds)
            kit.set_time("2000-01-01 00:00:00")
            env = kit._env("power_on")
            argv = [micropython_binary(), "-X", "heapsize=1m", "_spy.py"]
            pid = procs.spawn(argv, kit.console_log, cwd=kit.flash, env=env)
            rx = re.compile(r"^RESIDENT (.*)$", re.MULTILINE)
            deadline = time.monotonic() + seconds + 60
            try:
                while not (m := rx.search(kit.console(since_boot=False))):
                    if time.monotonic() > deadline or not procs.alive(pid):
                        tail = kit.console(since_boot=False)[-800:]
                        raise RuntimeError(f"no module list from the 64-bit kit:\n{tail}")
                    time.sleep(0.5)
            finally:
                os.kill(pid, signal.SIGKILL)
        finally:
            bench.down()
    return [n for n in m.group(1).split() if n.split(".")[0] in _FIRMWARE_TOP]


def wasm32_figure(heap: int = 64 * 1024) -> tuple[str | None, str]:
    """(figure or None, what the control test found). A figure only from a runtime whose
    control test passes; none is taken otherwise."""
    why = wasm32.unavailable()
    if why:
        return None, f"wasm32: not available: {why}"
    report = control_test(heap)
    if not report.usable:
        # What the runtime can still show soundly (collections at the top level): the heap
        # the firmware's modules hold, beside the same measurement on the 64-bit port.
        text = report.summary()
        if report.sound:
            c = module_cost()
            r = module_cost(resident_modules())
            text += (
                f"\n  modules: code and globals of all {c['modules']} firmware modules "
                f"(.mpy), loaded at once: 64-bit {c['unix64'] / 1024:.1f} KiB, 32-bit "
                f"{c['wasm32'] / 1024:.1f} KiB (not a budget)"
                f"\n  resident: the {r['modules']} modules a kit keeps loaded with App #1 + "
                f"App #2 + idle update agent: 64-bit {r['unix64'] / 1024:.1f} KiB, 32-bit "
                f"{r['wasm32'] / 1024:.1f} KiB (code and globals only, not a budget)"
            )
        return None, text
    # A future build that keeps a budget passes the control; the firmware runner with
    # network stand-ins for it is not built (docs/memory.rst): say so, never guess.
    return None, report.summary() + "\n  (control passed; no 32-bit kit runner yet)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", choices=("both", "unix64", "wasm32"), default="both")
    ap.add_argument("--budgets", default="64k,72k,80k,96k")
    ap.add_argument("--bisect", help="LO:HI, e.g. 48k:96k: the smallest budget that runs")
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--mode", choices=("mpy", "romfs"), default="mpy")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    # The 32-bit control first: it is quick, and decides whether there is a 32-bit figure.
    w_fig, w_text = (None, "")
    if args.runtime in ("both", "wasm32"):
        w_fig, w_text = wasm32_figure()
    rows = []
    if args.runtime in ("both", "unix64"):
        rows = run(args.budgets.split(","), args.seconds, args.mode, args.bisect)
    if args.json:
        print(json.dumps({"unix64": rows, "wasm32": {"figure": w_fig, "control": w_text}}))
        return 0 if args.runtime == "unix64" or w_fig else 1
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
    target = TARGET_MPY if args.mode == "mpy" else TARGET_ROMFS
    if rows:
        ok = [r for r in rows if r["ok"]]
        least = min(ok, key=lambda r: r["budget_bytes"])["budget"] if ok else "none"
        print(
            f"heap_peak: unix64 ({args.mode}): smallest budget that runs App #1 + App #2 "
            f"for {args.seconds:.0f} s: {least} (64-bit: an upper bound for a board)"
        )
    if args.runtime in ("both", "wasm32"):
        shown = w_fig or "no figure (the runtime failed its control test)"
        print(f"heap_peak: wasm32 ({args.mode}): {shown}; target {target} on 32 bits")
        print("\n".join("heap_peak:   " + ln for ln in w_text.splitlines()))
        return 0 if w_fig else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
