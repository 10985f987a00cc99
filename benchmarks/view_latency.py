"""The live view under load: event-to-screen latency and the view server's CPU.

A bench, N things on it and the view server (``python -m host_tools.view``, its own
process) with the fleet page open in Chromium (Playwright). Two figures:

- **event-to-screen latency**: a probe thing's status flips (online/offline, as the
  online message and the Last Will do) are published on the broker at host time t; a
  MutationObserver in the page notes when the probe's row shows the new state (browser
  ``Date.now()``, the same clock). Goal: <= 1 s;
- **server CPU**: user + system time of the view process over the measurement window,
  as a share of one core (``/proc/<pid>/stat``). Goal: <= 5 % at 1,000 kits.

The load is what N kits at the App #2 interval (10 s) put on the view: per kit, one
telemetry message and one ``app2`` named-shadow ``update/documents`` per interval, a diag
message a minute, and a status message at start. The virtual kits of the fleet simulator
cost ~30 MB and a share of a CPU each, so a thousand of them do not fit a 2-CPU machine:
the load generator publishes those messages (payloads shaped like the kit's) as the
bench operator. ``--real K`` adds K real virtual kits (the fleet simulator) and measures
the latency of a real power cut too: SIGKILL, the broker's Last Will, the page.

    .venv/bin/python -m benchmarks.view_latency [--kits 1000] [--measure 60] [--real 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from host_tools.bench import clients, registry
from host_tools.bench.bench import Bench
from host_tools.bench.layout import OPERATOR_CN
from host_tools.paths import REPO

INTERVAL_S = 10.0
CHROMIUM = "/usr/bin/chromium"
PROBE = "probe-0000"
READINGS = {
    "env": {"temperature": 22.0, "humidity": 45.0, "pressure": 1013.2},
    "mcu_temp": {"temperature": 40.0},
    "imu": {"accel_x": 0.0, "accel_y": 0.0, "accel_z": 1.0, "temperature": 30.0},
    "adc0": {"voltage": 1.0},
}

WATCH_JS = """(thing) => {
  window.__flips = [];
  let last = null;
  const look = () => {
    const tr = document.querySelector(`tr[data-thing="${thing}"]`);
    const v = tr ? tr.dataset.online : null;
    if (v !== last) { last = v; window.__flips.push([v, Date.now()]); }
  };
  new MutationObserver(look).observe(document.querySelector('#fleet tbody'),
    {childList: true, subtree: true, attributes: true});
  look();
}"""


def cpu_seconds(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


class Load:
    """Publishes what ``n`` kits would put on the view, spread evenly over each second."""

    def __init__(self, bench: Bench, names: list[str], prefix: str) -> None:
        self.names, self.prefix = names, prefix
        self.client = clients.make_client(bench.layout, OPERATOR_CN, f"load-{uuid.uuid4().hex[:6]}")
        clients.connect(self.client, bench.port)
        self.stop = threading.Event()
        self.sent = 0
        self.seq = 0

    def pub(self, topic: str, doc: dict, retain: bool = False) -> None:
        self.client.publish(topic, json.dumps(doc).encode(), qos=1, retain=retain)
        self.sent += 1

    def announce(self) -> None:
        for n in self.names:
            self.pub(
                f"{self.prefix}/{n}/status", {"thing": n, "state": "online", "fw": "0.1.0"}, True
            )
            cur = {
                "state": {"reported": {"connected": True, "fw": "0.1.0", "board": "sim"}},
                "metadata": {},
                "version": 1,
            }
            self.pub(f"$aws/things/{n}/shadow/update/documents", {"current": cur, "timestamp": 0})

    def run(self) -> None:
        """Each kit: telemetry + app2 documents every 10 s, diag every 60 s."""
        n = len(self.names)
        i = 0
        t_next = time.monotonic()
        step = INTERVAL_S / n
        while not self.stop.is_set():
            name = self.names[i % n]
            self.seq += 1
            now_ms = int(time.time() * 1000)
            tele = {
                "thing": name,
                "seq": self.seq,
                "ts": now_ms,
                "interval_s": 10,
                "readings": READINGS,
            }
            self.pub(f"{self.prefix}/{name}/telemetry", tele)
            cur = {
                "state": {"reported": {"seq": self.seq, "values": READINGS}},
                "metadata": {},
                "version": self.seq,
            }
            self.pub(f"$aws/things/{name}/shadow/name/app2/update/documents", {"current": cur})
            if (i // n) % 6 == 0:
                diag = {
                    "thing": name,
                    "ts": now_ms,
                    "heap_free": 120000,
                    "heap_min_free": 80000,
                    "rssi": -55,
                    "reconnects": 0,
                    "outbox": {"queued": 0},
                }
                self.pub(f"{self.prefix}/{name}/diag", diag)
            i += 1
            t_next += step
            d = t_next - time.monotonic()
            if d > 0:
                time.sleep(d)

    def close(self) -> None:
        self.stop.set()
        self.client.disconnect()
        self.client.loop_stop()


def flip_latency(page, load: Load, thing: str, flips: int, say) -> list[float]:
    """Publish ``flips`` status changes of ``thing``; the page's delay for each, in s."""
    out = []
    state = "offline"
    for _ in range(flips):
        n0 = page.evaluate("window.__flips.length")
        t = time.time()
        load.pub(
            f"{load.prefix}/{thing}/status",
            {"thing": thing, "state": state, "reason": "connection_lost"},
            True,
        )
        page.wait_for_function(f"() => window.__flips.length > {n0}", timeout=10_000)
        v, ms = page.evaluate("window.__flips[window.__flips.length - 1]")
        assert v == ("true" if state == "online" else "false"), v
        out.append(ms / 1000 - t)
        state = "online" if state == "offline" else "offline"
        time.sleep(0.5)
    say(
        f"  status flips: median {statistics.median(out) * 1000:.0f} ms, max {max(out) * 1000:.0f} ms"
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kits", type=int, default=1000, help="things the load stands for (1000)")
    ap.add_argument("--measure", type=float, default=60.0, help="CPU window, s (60)")
    ap.add_argument("--flips", type=int, default=20, help="status flips timed (20)")
    ap.add_argument("--real", type=int, default=0, help="real virtual kits to add (0)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    def say(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="view-bench-"))
    bench = Bench(tmp / "bench")
    bench.up()
    names = [PROBE] + [f"load-{i:04d}" for i in range(1, args.kits)]
    registry.register_things(bench, {n: "" for n in names})
    load = Load(bench, names, bench.topic_prefix)
    fleet = None
    view = None
    result: dict = {"kits": args.kits, "interval_s": INTERVAL_S, "cpus": os.cpu_count()}
    try:
        load.announce()
        if args.real:
            from host_tools.fleet_sim.fleet import Fleet

            say(f"booting {args.real} real virtual kits")
            fleet = Fleet(tmp / "fleetsim", bench_root=bench.layout.root)
            fleet.up(count=args.real, interval_s=int(INTERVAL_S), timeout=300)
        argv = [
            sys.executable,
            "-m",
            "host_tools.view",
            "--bench-root",
            str(bench.layout.root),
            "--port",
            "0",
            "--kits",
            str(tmp / "fleetsim" / "kits"),
        ]
        view = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
        line = view.stdout.readline()
        url = line.split()[2]
        say(f"view at {url}; load {args.kits} kits")
        runner = threading.Thread(target=load.run, daemon=True)
        runner.start()
        with sync_playwright() as p:
            b = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox"] if os.geteuid() == 0 else []
            )
            page = b.new_page(viewport={"width": 1400, "height": 900})
            t_open = time.time()
            page.goto(url)
            page.wait_for_function(
                f"() => document.querySelectorAll('#fleet tbody tr').length >= {args.kits}",
                timeout=60_000,
            )
            result["page_ready_s"] = round(time.time() - t_open, 2)
            page.evaluate(WATCH_JS, PROBE)
            time.sleep(5)  # the load settles
            c0, w0, s0 = cpu_seconds(view.pid), time.monotonic(), load.sent
            time.sleep(args.measure)
            c1, w1, s1 = cpu_seconds(view.pid), time.monotonic(), load.sent
            result["server_cpu_pct_of_one_core"] = round(100 * (c1 - c0) / (w1 - w0), 2)
            result["published_per_s"] = round((s1 - s0) / (w1 - w0), 1)
            say(
                f"  server CPU {result['server_cpu_pct_of_one_core']} % of one core at {result['published_per_s']} msg/s published"
            )
            lat = flip_latency(page, load, PROBE, args.flips, say)
            result["status_to_screen_ms"] = {
                "median": round(statistics.median(lat) * 1000),
                "max": round(max(lat) * 1000),
                "n": len(lat),
            }
            if fleet is not None:
                result["power_cut_to_screen_ms"] = real_power_cut(page, bench, fleet, say)
            page.screenshot(path=str(tmp / "fleet.png"))
            b.close()
    finally:
        load.close()
        if view is not None:
            view.terminate()
            try:
                view.wait(10)
            except subprocess.TimeoutExpired:
                view.kill()
        if fleet is not None:
            fleet.down()
        bench.down()
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


def real_power_cut(page, bench: Bench, fleet, say) -> dict:
    """Cut a real kit's power; from the Last Will's arrival to the page showing it.

    The Last Will is timed by a client subscribed to that one topic only (an observer of
    everything would queue it behind the load and time it late)."""
    thing = min(fleet.things())
    kit = fleet.kit(thing)
    got: list[float] = []
    c = clients.make_client(bench.layout, OPERATOR_CN, f"lw-{uuid.uuid4().hex[:6]}")

    def on_message(cl, ud, msg) -> None:
        if not msg.retain and b'"offline"' in msg.payload:
            got.append(time.time())

    c.on_message = on_message
    clients.connect_subscribed(c, bench.port, [(f"{bench.topic_prefix}/{thing}/status", 1)], 10)
    page.evaluate(WATCH_JS, thing)
    shown = page.evaluate("window.__flips")
    assert shown and shown[-1][0] == "true", f"{thing} not shown online before the cut: {shown}"
    try:
        t0 = time.time()
        kit.power_off()
        after = int(t0 * 1000)
        page.wait_for_function(
            f"() => window.__flips.some(f => f[0] === 'false' && f[1] >= {after})", timeout=30_000
        )
        ms = next(
            f[1] for f in page.evaluate("window.__flips") if f[0] == "false" and f[1] >= after
        )
        assert got, "no Last Will"
    finally:
        c.disconnect()
        c.loop_stop()
    d = round(ms - got[0] * 1000)
    say(f"  real power cut of {thing}: Last Will -> page {d} ms")
    return {
        "thing": thing,
        "last_will_to_screen_ms": d,
        "cut_to_last_will_ms": round((got[0] - t0) * 1000),
    }


if __name__ == "__main__":
    sys.exit(main())
