"""Reconnect storm: a fleet of virtual kits online, the broker restarted, connects per
second at the broker until every kit is back; with the firmware's full-jitter backoff and,
in the same run, with jitter switched off (``backoff.jitter`` false, honoured on the
virtual kit only).

For each case: a fresh fleet of ``--count`` kits (distinct identities) boots on one bench,
stays connected past ``backoff.reset_after_s`` (so every kit's backoff starts from its
first window), then ``Bench.restart_broker`` stops and starts mosquitto. The broker log
gives one line per accepted CONNECT (one-second resolution); the recovery window runs from
the broker's ``running`` line to the second the last kit connected.

Printed per case: peak and mean connects/s over the recovery window and their ratio, the
time until all kits are back, against the backoff cap. Targets (issue #6): with jitter,
peak <= 3 x mean and all back within cap + 10 %. The plot (connects/s over time, both
cases) goes to ``reports/``.

Backoff for the bench (``--base-ms``/``--cap-ms``; default from ``--count``): AWS sizes the
jitter window to the fleet (N devices need a window of at least N/500 s at AWS IoT Core's
connect rate). This bench is one 2-CPU machine where every connect costs a TLS handshake
in the kit's MicroPython (about 80 ms of CPU, ECDSA P-256) and in mosquitto, plus the
shadow sync in the Python services: about 25 connects/s would fill both CPUs. Sized to
that (first window N/25 s), the handshakes of one second overlapped, shared the CPUs and
finished together a few seconds later: the kits' own logs showed attempts spread evenly
(19-40 per second) and completed connects clumped (0 for 5 s, then 76), peak/mean
4.1-5.6 at the broker. So the first window is N / ``BENCH_CONNECTS_PER_S`` (12/s, about
half the machine: 16 s for 200 kits) and the cap 1.25 x that (20 s): the first window is
already sized to the fleet, so a kit that tried while the broker restarted need not wait
twice as long; a cap of 4 x left a sparse tail up to 16 s, which halved the mean.

    .venv/bin/python -m benchmarks.reconnect_storm [--count 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import time
from pathlib import Path

from host_tools.bench.bench import Bench
from host_tools.fleet_sim import measure
from host_tools.fleet_sim.fleet import Fleet
from host_tools.kit.sim import DEFAULT_HEAP
from host_tools.paths import FIRMWARE, REPO

BENCH_CONNECTS_PER_S = 12
RESET_AFTER_S = 10  # backoff.reset_after_s for the run: shorter than the default 30 s
TARGET_PEAK_TO_MEAN = 3.0
TARGET_CAP_MARGIN = 1.10


def default_backoff(count: int) -> tuple[int, int]:
    """(base_ms, cap_ms): first window N / bench connect rate, cap 1.25 x that."""
    base = max(1000, round(1000 * count / BENCH_CONNECTS_PER_S))
    return base, base * 5 // 4


def storm(
    bench: Bench,
    root: Path,
    count: int,
    jitter: bool,
    base_ms: int,
    cap_ms: int,
    boot_rate: float,
    say,
    heap: str = DEFAULT_HEAP,
    firmware: Path = FIRMWARE,
) -> dict:
    """One case: boot the fleet, restart the broker, measure; the fleet is down after."""
    fleet = Fleet(root, bench_root=bench.layout.root)
    config = {
        "backoff_base_ms": base_ms,
        "backoff_cap_ms": cap_ms,
        "backoff_reset_s": RESET_AFTER_S,
        "backoff_jitter": jitter,
        "diag_interval_s": 300,
    }
    try:
        st = fleet.up(
            count,
            boot_rate=boot_rate,
            config=config,
            heap=heap,
            firmware=firmware,
            timeout=300 + count / boot_rate,
        )
        if st["online"] < count:
            raise RuntimeError(f"only {st['online']}/{count} kits came online; see {root}/kits")
        say(f"{count} kits online (jitter {'on' if jitter else 'off'}); settling")
        time.sleep(RESET_AFTER_S + 5)
        things = set(fleet.things())
        log = bench.layout.broker_log
        mark = measure.log_size(log)
        t_stop = time.time()
        bench.restart_broker()
        deadline = time.monotonic() + cap_ms / 1000 * 3 + 60
        back: dict[str, float] = {}
        while time.monotonic() < deadline:
            for t, cid in measure.connects(log, mark, things):
                back.setdefault(cid, t)
            if len(back) >= count:
                break
            time.sleep(1.0)
        time.sleep(2.0)  # late log lines of the last second
        events = measure.connects(log, mark, things)
        up_at = measure.broker_started_at(log, mark) or t_stop
        last = max(back.values()) if back else up_at
        window = last - up_at + 1  # one-second log stamps: the last second counts whole
        series = measure.per_second([t for t, _ in events], up_at, last + 5)
        in_window = series[: int(window)]
        peak = max(in_window) if in_window else 0
        mean = sum(in_window) / window if window > 0 else 0.0
        return {
            "jitter": jitter,
            "count": count,
            "back": len(back),
            "connects": len(events),
            "recovery_s": window,
            "broker_down_s": round(up_at - t_stop, 1),
            "peak_per_s": peak,
            "mean_per_s": round(mean, 2),
            "peak_to_mean": round(peak / mean, 2) if mean else None,
            "series": series,
            "cap_s": cap_ms / 1000,
            "base_s": base_ms / 1000,
            "within_cap": window <= cap_ms / 1000 * TARGET_CAP_MARGIN,
        }
    finally:
        fleet.down()


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for r in results:
        label = (
            f"jitter {'on' if r['jitter'] else 'off'}: peak {r['peak_per_s']}/s, "
            f"mean {r['mean_per_s']}/s, all back in {r['recovery_s']:.0f} s"
        )
        ax.step(range(len(r["series"])), r["series"], where="post", label=label)
    cap = results[0]["cap_s"]
    ax.axvline(cap * TARGET_CAP_MARGIN, color="grey", linestyle=":", label="cap + 10 %")
    ax.set_xlabel("seconds since the broker was back up")
    ax.set_ylabel("connects per second (broker log)")
    ax.set_title(
        f"Reconnect storm: {results[0]['count']} virtual kits, broker restart "
        f"(backoff base {results[0]['base_s']:g} s, cap {cap:g} s)"
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so the fleet and the bench are stopped (finally blocks)


def main(argv: list[str] | None = None) -> int:
    # SIGTERM (``timeout``, a CI job's end) stops its kits too; it once left 200 running.
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--base-ms", type=int, help="backoff base (default: count / 12 per s)")
    ap.add_argument("--cap-ms", type=int, help="backoff cap (default: 1.25 x base)")
    ap.add_argument("--boot-rate", type=float, default=20.0, help="kits powered on per second")
    ap.add_argument("--workdir", type=Path, help="keep bench and fleet state here")
    ap.add_argument("--heap", default=DEFAULT_HEAP, help=f"each kit's GC heap ({DEFAULT_HEAP})")
    ap.add_argument("--firmware", type=Path, default=FIRMWARE, help="firmware source tree")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    base, cap = default_backoff(args.count)
    base = args.base_ms or base
    cap = args.cap_ms or max(cap, base)

    def say(line: str) -> None:
        print(f"storm: {line}", flush=True)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tk-storm-"))
    bench = Bench(work / "bench")
    results = []
    t0 = time.monotonic()
    ok = False
    try:
        bench.up()
        for jitter in (True, False):
            results.append(
                storm(
                    bench,
                    work / "fleet",
                    args.count,
                    jitter,
                    base,
                    cap,
                    args.boot_rate,
                    say,
                    heap=args.heap,
                    firmware=args.firmware,
                )
            )
            r = results[-1]
            say(
                f"jitter {'on ' if jitter else 'off'}: {r['back']}/{r['count']} back in "
                f"{r['recovery_s']:.0f} s; peak {r['peak_per_s']}/s, mean {r['mean_per_s']}/s "
                f"(broker down {r['broker_down_s']:g} s)"
            )
        ok = True
    finally:
        bench.down()
        if args.workdir is None and ok:
            shutil.rmtree(work, ignore_errors=True)
        elif not ok:
            print(f"storm: failed; bench and fleet state kept in {work}", flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    png = REPO / "reports" / f"reconnect_storm-{stamp}.png"
    plot(results, png)
    (png.with_suffix(".json")).write_text(json.dumps(results, indent=1))
    if args.json:
        print(json.dumps({"results": results, "plot": str(png)}, indent=1))
    on, off = results
    print(
        f"reconnect storm, {args.count} kits, backoff base {base / 1000:g} s cap "
        f"{cap / 1000:g} s; heap {args.heap}, firmware {args.firmware}"
    )
    print(f"{'':12}{'back':>8}{'all back':>10}{'peak/s':>8}{'mean/s':>8}{'peak/mean':>11}")
    for r in results:
        print(
            f"{'jitter on' if r['jitter'] else 'jitter off':12}{r['back']:>5}/{r['count']:<3}"
            f"{r['recovery_s']:>9.0f}s{r['peak_per_s']:>8}{r['mean_per_s']:>8}"
            f"{r['peak_to_mean'] or 0:>11}"
        )
    ok_ratio = (on["peak_to_mean"] or 99) <= TARGET_PEAK_TO_MEAN
    ok_cap = on["within_cap"] and on["back"] == on["count"]
    print(
        f"jitter on: peak/mean {on['peak_to_mean']} (target <= {TARGET_PEAK_TO_MEAN:g}: "
        f"{'met' if ok_ratio else 'NOT met'}); all back in {on['recovery_s']:.0f} s vs cap "
        f"{cap / 1000:g} s + 10 % = {cap / 1000 * TARGET_CAP_MARGIN:.1f} s "
        f"({'met' if ok_cap else 'NOT met'}); jitter off: peak/mean {off['peak_to_mean']}, "
        f"peak {off['peak_per_s']}/s; {time.monotonic() - t0:.0f} s in all"
    )
    print(f"plot: {png}")
    return 0 if ok_ratio and ok_cap else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("reconnect_storm: stopped; its kits and bench were stopped", flush=True)
        raise SystemExit(130) from None
