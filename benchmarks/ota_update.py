"""Benchmark: a ~256 KB signed app bundle delivered, verified and activated on the
virtual kit, against a raw TLS transfer of the same bytes, in the same run.

The update goes the whole way: a job on the bench's Jobs service, the bundle in 1 KiB
blocks over MQTT file delivery (JSON, base64), the signature checked on the device
before the payload, the payload written to the inactive slot and hashed, the boot slot
switched, a reboot, the self-test and the confirmation (job SUCCEEDED). The baseline is
a MicroPython script on the same unix port reading the same bytes from one TLS 1.2
mutual-auth connection into a file (benchmarks/ota_raw_tls.py). Figures:

- ``download_s``: job taken -> bundle written and checked (device clock);
- ``end_to_end_s``: job created -> execution SUCCEEDED (host clock; with reboot);
- ``raw_tls_s``: the baseline, process start to exit (host clock);
- ratios of both to the baseline (target: download at most 3x);
- ``verify_ms``: the on-device ECDSA P-256 check of the manifest;
- ``peak_heap``: the most GC heap the firmware used during the update (sim-only
  reserve excluded).

    .venv/bin/python -m benchmarks.ota_update [--runs 3] [--heap 192k] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from host_tools import device_deps
from host_tools.bench.bench import Bench
from host_tools.bench.jobs_service import JobsOperator
from host_tools.bench.streams_service import register_stream
from host_tools.kit.provision import create_sim_kit
from host_tools.kit.sim import micropython_binary
from host_tools.ota import bundle as ob
from host_tools.ota import keys
from host_tools.paths import FIRMWARE

TARGET = 3.0
SIZE = 256 * 1024
# The firmware's budget is 96 KiB; running an app from slot .mpy files needs more (see
# docs/ota.rst, "Memory"): the default here is what the HIL tests use.
HEAP = "192k"


def make_bundle(version: str, key) -> bytes:
    """The app at ``version`` padded with a never-imported file to about SIZE bytes."""
    files = ob.compile_app(FIRMWARE, version)
    pad = max(0, SIZE - sum(len(d) for d in files.values()) - 7000)
    files["tk/zpad.mpy"] = random.Random(0).randbytes(pad)
    return ob.sign(ob.build(files, version=version, boards=["sim"]), key)


class OneShotTLS:
    """A TLS 1.2 server on 127.0.0.1 that sends ``data`` to each client (mutual auth,
    the bench broker's identity and client CAs)."""

    def __init__(self, bench: Bench, data: bytes) -> None:
        lay = bench.layout
        cert, key = lay.identity("localhost")
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(str(cert), str(key))
        self.ctx.load_verify_locations(cafile=str(lay.client_cafile))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.data = data
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(c, server_side=True) as s:
                    s.sendall(self.data)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def raw_tls(kit, server: OneShotTLS, workdir: Path) -> float:
    f = kit.flash / "certs"
    argv = [
        micropython_binary(),
        "-X",
        f"heapsize={kit.heap}",
        str(Path(__file__).with_name("ota_raw_tls.py")),
        "localhost",
        str(server.port),
        str(f / "device.crt.der"),
        str(f / "device.key.der"),
        str(f / "server-ca.der"),
        str(workdir / "raw.bin"),
    ]
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    dt = time.perf_counter() - t0
    if not out.stdout.startswith(f"raw {len(server.data)} "):
        raise RuntimeError(f"raw TLS transfer failed: {out.stdout}{out.stderr}")
    return dt


def one_update(bench: Bench, kit, data: bytes, version: str) -> dict:
    job = f"bench-{version.replace('.', '-')}-{int(time.time())}"
    register_stream(bench.layout.streams, f"s-{job}", {0: data})
    doc = {
        "operation": "thingkit.ota",
        "version": version,
        "kind": "app",
        "streamId": f"s-{job}",
        "fileId": 0,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    mark = len(kit.console(since_boot=False))
    t0 = time.perf_counter()
    with JobsOperator(bench) as ops:
        ops.create_job(job, doc, [kit.root.name])
        while True:
            ex = ops.describe_job_execution(job, kit.root.name)
            ex = ex.get("execution", ex)
            if ex["status"] in ("SUCCEEDED", "FAILED", "REJECTED"):
                break
            if time.perf_counter() - t0 > 300:
                raise RuntimeError(f"update {version} did not finish: {ex}")
            time.sleep(0.1)
    end_to_end = time.perf_counter() - t0
    if ex["status"] != "SUCCEEDED":
        raise RuntimeError(f"update {version}: {ex}")
    log = kit.console(since_boot=False)[mark:]
    t_job = int(re.search(rf"^(\d+) I ota: job {job}:", log, re.MULTILINE).group(1))
    m = re.search(r"^(\d+) I ota: job \S+: version \S+ written to", log, re.MULTILINE)
    heap = re.search(
        r"update heap: peak (\d+) of (\d+) bytes \((\d+) before the job\); "
        r"signature check (\d+) ms",
        log,
    )
    return {
        "download_s": (int(m.group(1)) - t_job) / 1000,
        "end_to_end_s": end_to_end,
        "peak_heap": int(heap.group(1)),
        "heap_budget": int(heap.group(2)),
        "heap_before": int(heap.group(3)),
        "verify_ms": int(heap.group(4)),
    }


def factory_reset(kit) -> None:
    """Back to the factory app (ROMFS), so each run starts from the same state."""
    import shutil

    kit.power_off()
    for d in ("ota", "slot_a", "slot_b"):
        shutil.rmtree(kit.flash / d, ignore_errors=True)
    kit.power_on()
    kit.wait_for(r"shadow synced", 60)


def run(runs: int, heap: str) -> dict:
    device_deps.fetch()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        bench = Bench(root / "bench")
        bench.up()
        server = None
        kit = None
        try:
            kit = create_sim_kit(bench, root / "kits", "ota-bench-1", heap=heap)
            key = keys.generate_key(root / "ota.pem")
            (kit.flash / "certs" / "ota-signing.der").write_bytes(keys.public_der(key))
            kit.power_on()
            kit.wait_for(r"shadow synced", 60)
            results, raws = [], []
            for i in range(runs):
                version = f"0.{i + 2}.0"
                data = make_bundle(version, key)
                server = server or OneShotTLS(bench, data)
                server.data = data
                raws.append(raw_tls(kit, server, root))
                results.append(one_update(bench, kit, data, version))
                factory_reset(kit)
            size = len(data)
        finally:
            if kit is not None:
                kit.power_off()
            if server is not None:
                server.close()
            bench.down()
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    raw = statistics.median(raws)
    return {
        "bundle_bytes": size,
        "runs": runs,
        "heap": heap,
        "raw_tls_s": round(raw, 3),
        "download_s": round(med["download_s"], 3),
        "end_to_end_s": round(med["end_to_end_s"], 3),
        "ratio_download": round(med["download_s"] / raw, 2),
        "ratio_end_to_end": round(med["end_to_end_s"] / raw, 2),
        "target_ratio": TARGET,
        "verify_ms": med["verify_ms"],
        "peak_heap": int(max(r["peak_heap"] for r in results)),
        "heap_before": int(max(r["heap_before"] for r in results)),
        "heap_budget": results[0]["heap_budget"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--heap", default=HEAP)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    r = run(a.runs, a.heap)
    if a.json:
        print(json.dumps(r))
    else:
        print(
            f"OTA {r['bundle_bytes']} B: download+verify+write {r['download_s']} s, "
            f"end to end (with reboot and self-test) {r['end_to_end_s']} s; raw TLS "
            f"{r['raw_tls_s']} s; ratio {r['ratio_download']}x (end to end "
            f"{r['ratio_end_to_end']}x; target <= {TARGET}x); signature check "
            f"{r['verify_ms']} ms; peak live heap {r['peak_heap']} B of {r['heap_budget']} B "
            f"({r['heap_before']} B before the job)"
        )
    return 0 if r["ratio_download"] <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
