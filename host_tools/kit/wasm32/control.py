"""The control test a 32-bit runtime passes before any heap figure is taken from it.

A 32-bit MicroPython tried earlier (the unix port compiled to wasm32 for Pyodide) freed
live objects: its collector could not see pointers held in WebAssembly locals. So a
runtime is checked first, and a figure is taken only when all three checks pass:

- ``structures`` (sound): linked structures with checksums survive many collections
  made under memory pressure, starting from a small heap; the garbage made between
  checks is reclaimed (the collections really ran);
- ``firmware_imports`` (sound): the scenario that broke the Pyodide build: the
  firmware's modules, as ``.mpy`` files on the filesystem exactly as the virtual kit's
  "mpy" install writes them, imported one by one with ``gc.collect()`` between, a list
  of them kept; the list and the modules still work at the end;
- ``budget`` (bounded): inside one call, garbage of four times the heap with
  ``gc.collect()`` between allocations; the heap must stay within its size. A runtime
  that grows its heap instead of collecting cannot say what fits in a budget.

    report = control_test(heap=64 * 1024)
    if not report.usable:
        print(report.summary())
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.kit import wasm32

_NODES = 50
_CHAINS = 40

_BUILD = f"""
import gc
def build(n, seed):
    head = None
    s = 0
    for i in range(n):
        v = (seed * 7919 + i * 104729) % 1000003
        head = [v, head, "n%d" % v]
        s = (s + v) % 1000000007
    return head, s
def check(head, s, n):
    t = 0
    k = 0
    while head is not None:
        v, head, name = head
        if name != "n%d" % v:
            return False
        t = (t + v) % 1000000007
        k += 1
    return k == n and t == s
keep = []
for j in range({_CHAINS}):
    h, s = build({_NODES}, j)
    keep.append((h, s, {{"j": j, "b": bytes([j]) * 20}}))
    gc.collect()
h = s = None
"""

_PRESSURE = f"""
junk = [bytearray(300) for i in range(200)]
junk = dict((str(i), [i] * 5) for i in range(300))
gc.collect()
junk = None
bad = [j for j, (h, s, d) in enumerate(keep)
       if not check(h, s, {_NODES}) or d["j"] != j or d["b"] != bytes([j]) * 20]
h = s = d = None
print("BAD", bad)
"""

# Garbage made per pressure step, at least (bytearrays alone): the collector must give
# most of it back for the check to count as having collected at all.
_PRESSURE_GARBAGE = 200 * 300


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class ControlReport:
    """The three checks, at one heap size, on the runtime :func:`wasm32.runtime_info` names."""

    heap: int
    runtime: dict
    checks: list[Check] = field(default_factory=list)

    def passed(self, name: str) -> bool:
        return any(c.name == name and c.passed for c in self.checks)

    @property
    def sound(self) -> bool:
        """No live object was freed (the structure and firmware-import checks)."""
        return self.passed("structures") and self.passed("firmware_imports")

    @property
    def bounded(self) -> bool:
        """A collection inside a running program keeps the heap within its size."""
        return self.passed("budget")

    @property
    def usable(self) -> bool:
        """A GC budget figure from this runtime would mean what it says."""
        return self.sound and self.bounded

    def summary(self) -> str:
        rt = self.runtime
        head = (
            f"wasm32 control at {self.heap // 1024} KiB ({rt.get('package')} "
            f"{rt.get('version')}, node {rt.get('node')}): sound={self.sound}, "
            f"bounded={self.bounded}"
        )
        return "\n".join(
            [head]
            + [f"  {c.name}: {'pass' if c.passed else 'FAIL'}: {c.detail}" for c in self.checks]
        )


def check_structures(heap: int, rounds: int = 12) -> Check:
    """Linked structures with checksums across ``rounds`` collections under pressure."""
    steps = wasm32.run_steps([_BUILD] + [_PRESSURE] * rounds, heap=heap)
    if len(steps) != rounds + 1 or not all(s.ok for s in steps):
        bad = next((s for s in steps if not s.ok), None)
        why = f"{bad.type}: {bad.error}" if bad else f"runtime stopped after {len(steps)} steps"
        return Check("structures", False, why)
    lost = [i for i, s in enumerate(steps[1:], 1) if "BAD []" not in s.out]
    if lost:
        return Check(
            "structures",
            False,
            f"structures corrupted after rounds {lost}: " + steps[lost[0]].out[-200:],
        )
    live = steps[0].alloc
    grew = max(s.alloc for s in steps[1:]) - live
    if grew > _PRESSURE_GARBAGE // 2:
        return Check(
            "structures",
            False,
            f"garbage not reclaimed: live heap grew by {grew} "
            f"bytes over {rounds} rounds (no collection ran?)",
        )
    return Check(
        "structures",
        True,
        f"{_CHAINS} chains of {_NODES} nodes intact after "
        f"{rounds} collections under pressure; live {live} bytes, "
        f"+{grew} after the last round",
    )


def stage_firmware(dest: Path) -> list[str]:
    """The firmware as the virtual kit's "mpy" install writes it, plus the import-only
    stand-ins for ``socket`` and ``ssl`` in ``lib/``; returns the module names."""
    from host_tools.kit.sim import SimKit  # the kit's own install, unchanged

    kit = SimKit(dest)
    kit.install_firmware(mode="mpy")
    for f in sorted(wasm32.STANDIN.glob("*.py")):
        shutil.copyfile(f, kit.flash / "lib" / f.name)
    names = []
    for p in sorted(kit.flash.rglob("*.mpy")):
        rel = p.relative_to(kit.flash).with_suffix("")
        parts = rel.parts[1:] if rel.parts[0] == "lib" else rel.parts
        if parts[0] == "hal" and parts[-1] != "__init__":
            continue  # the ESP32 board layer: imports machine, esp32, network
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def check_firmware_imports(heap: int) -> Check:
    """The Pyodide scenario: firmware modules one by one, gc.collect() between."""
    with tempfile.TemporaryDirectory(prefix="thingkit-wasm32-") as d:
        names = stage_firmware(Path(d) / "kit")
        steps = ["import gc, sys\nkept = []\nmarker = [i * i for i in range(100)]\n"]
        for n in names:
            # The module and the names of its globals as imported (a package gains its
            # submodules later, so names may be added, never lost).
            steps.append(
                f"import {n}\nm = sys.modules[{n!r}]\nkept.append((m, tuple(m.__dict__)))\n"
                "m = None\ngc.collect()\n"
            )
        final = (
            "assert [m.__name__ for m, k in kept] == NAMES, 'modules lost or replaced'\n"
            "assert all(all(g in m.__dict__ for g in k) for m, k in kept), 'globals lost'\n"
            "assert marker == [i * i for i in range(100)], 'marker list changed'\n"
            "from tk.topics import Topics\n"
            "assert Topics('p', 'thing').telemetry.endswith('thing/telemetry')\n"
            "print('KEPT', len(kept))\n"
        )
        steps.append(f"NAMES = {names!r}\n" + final)
        out = wasm32.run_steps(steps, heap=heap, files=Path(d) / "kit" / "flash")
    if len(out) != len(steps):
        return Check("firmware_imports", False, f"runtime stopped after {len(out)} steps")
    failed = [(i, s) for i, s in enumerate(out) if not s.ok]
    if failed:
        i, s = failed[0]
        what = names[i - 1] if 0 < i <= len(names) else "final check"
        return Check("firmware_imports", False, f"{what}: {s.type}: {(s.error or '')[-200:]}")
    return Check(
        "firmware_imports",
        True,
        f"{len(names)} modules (.mpy) imported with a "
        f"collection after each; the list and the modules intact; live "
        f"{out[-1].alloc} bytes",
    )


def check_budget(heap: int) -> Check:
    """Garbage of 4x the heap inside one call, gc.collect() between: the heap must hold."""
    n = 4 * heap // 4096
    # The heap's size is read inside the call: the collection that ends a top-level call
    # gives empty areas back, so a reading after it would hide any growth.
    src = (
        f"import gc, micropython\npeak = 0\nfor i in range({n}):\n    b = bytearray(4096)\n"
        "    gc.collect()\n    peak = max(peak, gc.mem_alloc())\nb = None\n"
        "micropython.mem_info()\nprint('PEAK', peak)\n"
    )
    out = wasm32.run_steps([src], heap=heap)
    if not out:
        return Check("budget", False, "runtime stopped")
    s = out[0]
    if not s.ok:
        return Check(
            "budget",
            False,
            f"{s.type} inside one call with gc.collect() between "
            f"allocations of garbage (collection did not free it)",
        )
    m = re.search(r"GC: total: (\d+)", s.out)
    p = re.search(r"PEAK (\d+)", s.out)
    total = int(m.group(1)) if m else 0
    peak = int(p.group(1)) if p else 0
    if total > heap or peak > heap:
        return Check(
            "budget",
            False,
            f"heap grew from {heap} to {total} bytes ({peak} "
            f"in use at once) inside one call: gc.collect() there only requests a collection, and a full heap "
            f"gets a new area (MICROPY_GC_SPLIT_HEAP_AUTO)",
        )
    return Check(
        "budget",
        True,
        f"heap stayed at {total} bytes (of {heap}) through {n * 4096} bytes of garbage",
    )


def _import_script(names: list[str]) -> str:
    """Baseline (stand-ins or built-ins imported, collected), then every module, collected:
    prints BASE and ALL, live heap bytes."""
    return (
        "import gc, sys\nimport socket, ssl\ngc.collect()\nprint('BASE', gc.mem_alloc())\n"
        + "".join(f"import {n}\n" for n in names)
        + "gc.collect()\nprint('ALL', gc.mem_alloc())\n"
    )


def module_cost(names: list[str] | None = None) -> dict:
    """The heap that the firmware's modules (.mpy, all loaded at once) hold on both word
    sizes, measured the same way: live bytes after a collection, all imported, less a
    baseline. On wasm32 the collection runs at the top level (sound there); on the 64-bit
    unix port ``gc.collect()`` inside the script. Not a budget: code and module globals
    only, with every module loaded where the firmware keeps fewer.

    Returns:
        {"modules": n, "wasm32": bytes, "unix64": bytes}
    """
    import os
    import subprocess

    from host_tools.kit.sim import micropython_binary

    with tempfile.TemporaryDirectory(prefix="thingkit-wasm32-") as d:
        staged = stage_firmware(Path(d) / "kit")
        names = names or staged
        flash = Path(d) / "kit" / "flash"
        src = _import_script(names)
        steps = wasm32.run_steps(
            ["import gc, sys\nimport socket, ssl", "\n".join(f"import {n}" for n in names)],
            heap=64 * 1024,
            files=flash,
        )
        if len(steps) != 2 or not all(s.ok for s in steps):
            bad = next((s for s in steps if not s.ok), None)
            raise RuntimeError(f"wasm32 import failed: {bad.error if bad else 'stopped'}")
        w32 = steps[1].alloc - steps[0].alloc
        # The unix port has socket and ssl built in: no stand-ins on its path.
        for f in wasm32.STANDIN.glob("*.py"):
            (flash / "lib" / f.name).unlink(missing_ok=True)
        (flash / "_cost.py").write_text(src)
        out = subprocess.run(
            [micropython_binary(), "-X", "heapsize=4m", "_cost.py"],
            cwd=flash,
            env={"MICROPYPATH": f"{flash}:{flash}/lib:.frozen", "PATH": os.environ.get("PATH", "")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        m = re.search(r"BASE (\d+)\s+ALL (\d+)", out.stdout)
        if not m:
            raise RuntimeError(f"unix64 import failed: {(out.stdout + out.stderr)[-300:]}")
        u64 = int(m.group(2)) - int(m.group(1))
    return {"modules": len(names), "wasm32": w32, "unix64": u64}


def control_test(heap: int = 64 * 1024) -> ControlReport:
    """Run the three checks at ``heap`` bytes; see the module docstring."""
    rep = ControlReport(heap=heap, runtime=wasm32.runtime_info())
    small = max(16 * 1024, heap // 4)  # the structures start on a small heap
    rep.checks = [check_structures(small), check_firmware_imports(heap), check_budget(heap)]
    return rep
