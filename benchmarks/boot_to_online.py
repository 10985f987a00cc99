"""Benchmark: kit power-on to ``connected: true`` accepted in the shadow, against a bare
MicroPython script doing only TLS connect + CONNECT + one QoS 1 PUBLISH.

Both run on the same MicroPython unix port, against the same bench, in the same run,
alternating, so the ratio does not depend on the machine. The kit's figure includes
everything a real boot does: interpreter start, config, NTP sync (its RTC starts at
2000-01-01), TLS, subscriptions, shadow get and update.

    .venv/bin/python -m benchmarks.boot_to_online [--runs 10] [--json]

The breakdown says where the kit's time goes: process starts measured alone with the
kit's environment (the shell of its reset circuit, the emulated bootloader, the
interpreter), then the firmware's own console timestamps (ms since its log module
loaded): NTP, App #2 set-up, TLS + CONNACK, shadow round trip; "before log" is what
remains between power-on and the first firmware timestamp.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from host_tools import device_deps
from host_tools.bench.bench import Bench
from host_tools.bench.observer import Observer
from host_tools.kit.provision import create_sim_kit
from host_tools.kit.sim import micropython_binary

TARGET = 2.0


def _bare(kit, bench: Bench) -> float:
    f = kit.flash
    argv = [
        micropython_binary(),
        "-X",
        f"heapsize={kit.heap}",
        str(Path(__file__).with_name("bare_connect.py")),
        "localhost",
        str(bench.port),
        kit.thing,
        str(f / "certs/device.crt.der"),
        str(f / "certs/device.key.der"),
        str(f / "certs/server-ca.der"),
    ]
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    dt = time.perf_counter() - t0
    if "puback" not in out.stdout:
        raise RuntimeError(f"bare script failed: {out.stdout}{out.stderr}")
    return dt


def _kit(kit, obs: Observer) -> float:
    topic = f"$aws/things/{kit.thing}/shadow/update/accepted"
    since = time.time()
    t0 = time.perf_counter()
    kit.power_on()
    m = obs.wait(
        lambda m: (
            m.topic == topic
            and (m.json() or {}).get("state", {}).get("reported", {}).get("connected") is True
        ),
        30,
        since=since,
    )
    dt = time.perf_counter() - t0
    kit.power_off()
    if m is None:
        raise RuntimeError("kit did not report connected within 30 s:\n" + kit.console())
    return min(dt, m.t - since)


# Firmware console lines that mark the end of each boot phase: (phase, pattern).
_MARKS = (
    ("firmware start", r"I main: thingkit "),
    ("NTP", r"I time: clock set"),
    ("App #2 set-up", r"I device: connecting to "),
    ("TLS + CONNACK", r"I device: mqtt connected"),
    ("shadow round trip", r"I device: shadow synced"),
)


def _phases(console: str) -> dict[str, float]:
    """ms spent in each phase of one boot, from the firmware's console timestamps."""
    out, last = {}, 0.0
    for phase, pat in _MARKS:
        m = re.search(rf"^(\d+) {pat}", console, re.MULTILINE)
        if m is None:
            continue
        t = float(m.group(1))
        out[phase] = t - last
        last = t
    return out


def _alone(kit, argv: list[str], runs: int) -> float:
    """Median seconds of a process started as the kit starts its own (same environment)."""
    env = {**os.environ, **kit._env("power_on")}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=kit.flash, env=env, capture_output=True, timeout=30, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _breakdown(kit, consoles: list[str], runs: int) -> dict[str, float]:
    from host_tools.kit.app_partition import prepare

    mp = micropython_binary()
    fw = [_phases(c) for c in consoles]
    phases = {k: statistics.median(f[k] for f in fw if k in f) for k, _ in _MARKS[1:]}
    start = statistics.median(f.get("firmware start", 0.0) for f in fw)
    return {
        "interpreter start (alone)": round(_alone(kit, [mp, "-c", "pass"], runs) * 1000, 1),
        "emulated bootloader (alone)": round(
            _alone(kit, [mp, str(prepare(kit.root, kit.board()))], runs) * 1000, 1
        ),
        "firmware start to log": round(start, 1),
        **{k: round(v, 1) for k, v in phases.items()},
    }


def run(runs: int) -> dict:
    device_deps.fetch()
    with tempfile.TemporaryDirectory(prefix="thingkit-bench-") as d:
        bench = Bench(Path(d) / "bench")
        bench.up()
        try:
            kit = create_sim_kit(bench, Path(d) / "kits", "bench-kit")
            kit.thing = "bench-kit"
            with Observer(bench) as obs:
                _bare(kit, bench)  # warm the page cache for both
                _kit(kit, obs)
                time.sleep(0.3)
                bare, full, consoles = [], [], []
                for _ in range(runs):
                    bare.append(_bare(kit, bench))
                    full.append(_kit(kit, obs))
                    consoles.append(kit.console())
                    time.sleep(0.2)  # let the Last Will and offline rule settle
                parts = _breakdown(kit, consoles, runs)
        finally:
            bench.down()
    kb, bb = statistics.median(full), statistics.median(bare)
    return {
        "benchmark": "boot_to_online",
        "runs": runs,
        "kit_median_s": round(kb, 4),
        "bare_median_s": round(bb, 4),
        "ratio": round(kb / bb, 2),
        "target_ratio": TARGET,
        "kit_s": [round(x, 4) for x in full],
        "bare_s": [round(x, 4) for x in bare],
        "breakdown_ms": parts,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = run(args.runs)
    if args.json:
        print(json.dumps(r))
    else:
        print(
            f"boot_to_online: kit {r['kit_median_s'] * 1000:.0f} ms (power-on to shadow "
            f"connected:true), bare TLS+CONNECT+PUBLISH {r['bare_median_s'] * 1000:.0f} ms, "
            f"ratio {r['ratio']:.2f} (target <= {TARGET}), median of {r['runs']} runs"
        )
        print("  where the kit's time goes (medians, ms):")
        for k, v in r["breakdown_ms"].items():
            print(f"    {k:<28} {v:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
