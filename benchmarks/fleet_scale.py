"""Fleet scale: how many virtual kits this machine sustains with App #2 at one message
per 10 s each and zero loss, and the memory each kit takes.

Steps up (default 100, 250, 500, 1000 kits); each step boots a fresh fleet on one bench,
waits until every kit is online, then watches for ``--measure`` seconds. A step is
sustained when, over that window:

- every kit is online and none fell silent (no telemetry for three intervals);
- the observer's (boot, seq) accounting shows zero lost telemetry;
- the telemetry rate is at least 90 % of N / interval.

Memory per kit is the RSS and PSS (``/proc/<pid>/smaps_rollup``; PSS splits shared pages
among the processes sharing them) of each kit's process tree. The run stops at the first
step that fails, or when ``--budget`` seconds are spent, and always leaves no process.

    .venv/bin/python -m benchmarks.fleet_scale [--steps 100,250,500,1000] [--measure 60]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from host_tools.bench.bench import Bench
from host_tools.fleet_sim import measure
from host_tools.fleet_sim.fleet import Fleet
from host_tools.kit.sim import DEFAULT_HEAP
from host_tools.paths import FIRMWARE

INTERVAL_S = 10
MIN_RATE = 0.90


def _cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


def step(
    bench: Bench,
    root: Path,
    count: int,
    measure_s: float,
    boot_rate: float,
    say,
    heap: str = DEFAULT_HEAP,
    firmware: Path = FIRMWARE,
) -> dict:
    """Boot ``count`` kits, watch them for ``measure_s``; the fleet is down after."""
    fleet = Fleet(root, bench_root=bench.layout.root)
    t0 = time.monotonic()
    row: dict = {"kits": count}
    try:
        st = fleet.up(
            count,
            interval_s=INTERVAL_S,
            boot_rate=boot_rate,
            config={"diag_interval_s": 60},
            heap=heap,
            firmware=firmware,
            timeout=90 + count / boot_rate,
        )
        row["boot_s"] = round(time.monotonic() - t0, 1)
        row["online_at_boot"] = st["online"]
        say(f"{count} kits: {st['online']} online after {row['boot_s']} s; measuring")
        # Settle one interval, then measure from a clean baseline.
        time.sleep(INTERVAL_S)
        before = fleet.stats()
        b0, t0c = _cpu_busy()
        time.sleep(measure_s)
        b1, t1c = _cpu_busy()
        after = fleet.stats()
        mem = [measure.tree_memory(fleet.kit(t).pid or 0) for t in fleet.things()]
        tele0, tele1 = before.get("telemetry", {}), after.get("telemetry", {})
        got = tele1.get("total", 0) - tele0.get("total", 0)
        rate = got / measure_s
        row.update(
            online=after.get("online", 0),
            running=len(fleet.running()),
            silent=after.get("silent", count),
            lost=tele1.get("lost", 0),
            duplicates=tele1.get("duplicates", 0),
            rate_per_s=round(rate, 2),
            expected_per_s=round(count / INTERVAL_S, 2),
            rss_mib=round(sum(m.rss for m in mem) / len(mem) / 2**20, 2),
            pss_mib=round(sum(m.pss for m in mem) / len(mem) / 2**20, 2),
            cpu_busy=round((b1 - b0) / max(t1c - t0c, 1), 3),
            load1=float(os.getloadavg()[0]),
            # mosquitto's queue for the observer overflowed: loss it saw may be its own.
            observer_drops=measure.drops_logged(
                bench.layout.broker_log, 0, fleet.state.get("observer_id", "-")
            ),
        )
        row["ok"] = bool(
            row["online"] == count
            and row["running"] == count
            and row["silent"] == 0
            and row["lost"] == 0
            and rate >= MIN_RATE * count / INTERVAL_S
        )
        return row
    except Exception as exc:  # noqa: BLE001 - a step that cannot even boot has failed
        row.update(ok=False, error=str(exc).splitlines()[0][:200])
        return row
    finally:
        fleet.down()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="100,250,500,1000", help="kit counts, in order")
    ap.add_argument("--measure", type=float, default=60.0, help="seconds watched per step")
    ap.add_argument("--boot-rate", type=float, default=20.0, help="kits powered on per second")
    ap.add_argument("--budget", type=float, default=1800.0, help="stop after this many seconds")
    ap.add_argument("--workdir", type=Path, help="keep bench and fleet state here")
    ap.add_argument("--heap", default=DEFAULT_HEAP, help=f"each kit's GC heap ({DEFAULT_HEAP})")
    ap.add_argument("--firmware", type=Path, default=FIRMWARE, help="firmware source tree")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",") if s.strip()]

    def say(line: str) -> None:
        print(f"scale: {line}", flush=True)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tk-scale-"))
    bench = Bench(work / "bench")
    rows: list[dict] = []
    t0 = time.monotonic()
    try:
        bench.up()
        for n in steps:
            # A step needs its boot, a settling interval, the window and the shutdown.
            need = n / args.boot_rate + INTERVAL_S + args.measure + 60
            if time.monotonic() - t0 + need > args.budget:
                say(f"{n} kits: skipped, the time budget ({args.budget:.0f} s) would be exceeded")
                break
            rows.append(
                step(
                    bench,
                    work / "fleet",
                    n,
                    args.measure,
                    args.boot_rate,
                    say,
                    heap=args.heap,
                    firmware=args.firmware,
                )
            )
            say(json.dumps(rows[-1]))
            if not rows[-1]["ok"]:
                break
    finally:
        bench.down()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    print(f"fleet scale: heap {args.heap}, firmware {args.firmware}")
    hdr = ("kits", "online", "lost", "msg/s", "expected", "RSS MiB", "PSS MiB", "CPU busy", "ok")
    print("".join(f"{h:>10}" for h in hdr))
    for r in rows:
        if "error" in r:
            print(f"{r['kits']:>10}  failed: {r['error']}")
            continue
        vals = (
            r["kits"],
            r["online"],
            r["lost"],
            r["rate_per_s"],
            r["expected_per_s"],
            r["rss_mib"],
            r["pss_mib"],
            f"{r['cpu_busy']:.0%}",
            "yes" if r["ok"] else "NO",
        )
        print("".join(f"{v:>10}" for v in vals))
    good = [r for r in rows if r.get("ok")]
    best = good[-1] if good else None
    print(
        f"fleet scale: {best['kits'] if best else 0} kits sustained with zero loss at one "
        f"message per {INTERVAL_S} s each"
        + (f" ({best['pss_mib']} MiB PSS, {best['rss_mib']} MiB RSS per kit)" if best else "")
        + f"; {time.monotonic() - t0:.0f} s"
    )
    return 0 if best else 1


if __name__ == "__main__":
    raise SystemExit(main())
