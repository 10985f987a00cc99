"""Benchmark: kit power-on to ``connected: true`` accepted in the shadow, against a bare
MicroPython script doing only TLS connect + CONNECT + one QoS 1 PUBLISH.

Both run on the same MicroPython unix port, against the same bench, in the same run,
alternating, so the ratio does not depend on the machine. The kit's figure includes
everything a real boot does: interpreter start, config, NTP sync (its RTC starts at
2000-01-01), TLS, subscriptions, shadow get and update.

    .venv/bin/python -m benchmarks.boot_to_online [--runs 10] [--json]
"""

from __future__ import annotations

import argparse
import json
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
                bare, full = [], []
                for _ in range(runs):
                    bare.append(_bare(kit, bench))
                    full.append(_kit(kit, obs))
                    time.sleep(0.2)  # let the Last Will and offline rule settle
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
