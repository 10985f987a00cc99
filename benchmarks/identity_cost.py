"""Benchmark: what making a device key and its CSR costs on the device (tk.identity).

Runs ``identity.make_key`` (a P-256 scalar and its public point) and ``identity.csr``
(PKCS#10 signed with RFC 6979 ECDSA) on two MicroPython runtimes of this machine:

- unix64: the MicroPython unix port (64-bit), as the virtual kit runs it;
- wasm32: MicroPython's official WebAssembly port under Node.js (32-bit words, as on an
  ESP32; see host_tools/kit/wasm32). It has no ``os.urandom``, so its key is drawn from
  ``random.getrandbits``: right for timing, never for a key.

Median of ``--runs``, and the first run (cold; on wasm32 before Node's JIT has warmed
up, the closer to an interpreter without one); the ESP32 itself is not measured here (no board). Times are wall
clock inside the interpreter (``time.ticks_ms``), process start excluded.

    .venv/bin/python -m benchmarks.identity_cost [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from host_tools.kit import wasm32
from host_tools.kit.sim import micropython_binary
from host_tools.paths import FIRMWARE

CODE = """
import time
from tk import identity
t0 = time.ticks_ms()
key = identity.make_key("k%d.der", rng=RNG, replace=True)
t1 = time.ticks_ms()
der = identity.csr(key, "kit-0042")
t2 = time.ticks_ms()
print("RESULT", time.ticks_diff(t1, t0), time.ticks_diff(t2, t1), len(der))
"""


def _parse(out: str) -> tuple[int, int]:
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT"))
    _, key_ms, csr_ms, _n = line.split()
    return int(key_ms), int(csr_ms)


def unix64(runs: int, work: Path) -> list[tuple[int, int]]:
    out = []
    for i in range(runs):
        src = "import os\nRNG = os.urandom\n" + CODE % i
        r = subprocess.run(
            [micropython_binary(), "-X", "heapsize=224k", "-c", src],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        out.append(_parse(r.stdout))
    return out


def wasm(runs: int, work: Path) -> list[tuple[int, int]]:
    setup = "import random\nRNG = lambda n: bytes(random.getrandbits(8) for _ in range(n))\n"
    steps = [setup] + [CODE % i for i in range(runs)]
    res = wasm32.run_steps(steps, heap=224 * 1024, files=work, timeout=900)
    bad = [s for s in res if not s.ok]
    if bad:
        raise RuntimeError(bad[0].error)
    return [_parse(s.out) for s in res[1:]]


def run(runs: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        shutil.copytree(FIRMWARE / "tk", work / "tk")
        doc = {"benchmark": "identity_cost", "runs": runs}
        for name, fn in (("unix64", unix64), ("wasm32", wasm)):
            if name == "wasm32" and wasm32.unavailable():
                doc[name] = {"not_run": wasm32.unavailable()}
                continue
            got = fn(runs, work)
            doc[name] = {
                "make_key_ms": statistics.median(k for k, _ in got),
                "csr_ms": statistics.median(c for _, c in got),
                # the first run: cold caches (and, on wasm32, Node's JIT not yet warm)
                "first_make_key_ms": got[0][0],
                "first_csr_ms": got[0][1],
            }
        if "make_key_ms" in doc.get("wasm32", {}):
            doc["wasm32"]["runtime"] = wasm32.runtime_info()
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    doc = run(args.runs)
    if args.json:
        print(json.dumps(doc))
        return 0
    for name in ("unix64", "wasm32"):
        r = doc[name]
        if "not_run" in r:
            print(f"identity_cost {name}: not run: {r['not_run']}")
        else:
            print(
                f"identity_cost {name}: make_key {r['make_key_ms']:.0f} ms, "
                f"csr {r['csr_ms']:.0f} ms (median of {args.runs}; first run "
                f"{r['first_make_key_ms']} + {r['first_csr_ms']} ms)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
