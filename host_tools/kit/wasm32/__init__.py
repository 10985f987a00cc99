"""A 32-bit MicroPython on this machine: the official WebAssembly port under Node.js.

The npm package ``@micropython/micropython-webassembly-pyscript`` (MicroPython's
``ports/webassembly``, ``pyscript`` variant, wasm32: 4-byte words, 16-byte GC blocks as on
an ESP32) is installed by ``bash scripts/dev.sh setup`` into ``.thingkit/wasm32``.
:func:`run_steps` boots it with a given GC heap and runs Python source, one top-level
call per step, and reports the heap after each.

What this build's garbage collector does (ports/webassembly/main.c, variant
``MICROPY_GC_SPLIT_HEAP_AUTO``): a collection runs only when control is back at the top
level (no Python frame live, so no pointer can hide in a WebAssembly local: it is sound).
Inside a call, ``gc.collect()`` and an exhausted heap only *request* a collection; an
allocation that does not fit adds a new heap area instead. So ``heapsize`` is the first
area, not a budget: a program that never returns (the firmware's main loop) never
collects and its heap only grows. :mod:`host_tools.kit.wasm32.control` checks both
properties before any figure is taken from this runtime.

    steps = run_steps(["import gc", "x = [0] * 100"], heap=64 * 1024)
    print(steps[-1].alloc)
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from host_tools.errors import UserError
from host_tools.paths import REPO

PACKAGE = "@micropython/micropython-webassembly-pyscript"
# The version scripts/dev.sh installs (npm's "latest" tag when it was chosen).
VERSION = "1.27.0"
RUNNER = Path(__file__).with_name("run.mjs")
# Import-only stand-ins for modules this port lacks (socket, ssl): see standin/.
STANDIN = Path(__file__).with_name("standin")


def install_dir() -> Path:
    """Where setup installs the npm package (git-ignored, beside the repo's other state;
    fixed, like scripts/dev.sh, whatever $THINGKIT_HOME says)."""
    return REPO / ".thingkit" / "wasm32"


def package_dir() -> Path:
    return install_dir() / "node_modules" / PACKAGE


def node_binary() -> str | None:
    return shutil.which("node")


def unavailable() -> str | None:
    """Why the runtime cannot run here (None when it can)."""
    if node_binary() is None:
        return "node not installed (bash scripts/dev.sh setup installs Debian nodejs)"
    if not (package_dir() / "micropython.mjs").exists():
        return f"{PACKAGE} not installed in {install_dir()} (bash scripts/dev.sh setup)"
    return None


def runtime_info() -> dict:
    """Package name and version as installed, and the Node.js version."""
    if unavailable():
        return {"package": PACKAGE, "version": None, "node": None}
    meta = json.loads((package_dir() / "package.json").read_text())
    node = subprocess.run(
        [node_binary() or "node", "--version"], capture_output=True, text=True, check=False
    )
    return {"package": PACKAGE, "version": meta.get("version"), "node": node.stdout.strip()}


@dataclass
class Step:
    """What one top-level call did.

    Attributes:
        ok: it returned without an exception.
        type: the exception's type name, if any (``MemoryError``, ``ImportError`` ...).
        error: the traceback text, if any.
        out: what it printed.
        ms: how long it ran.
        heap_total: the GC heap's size after the call (its areas: it grows past the
            first where a fixed heap would collect; the collection that ends a top-level
            call gives empty areas back, so growth inside a call is seen only from inside).
        alloc: live heap bytes after a collection made at the top level.
    """

    ok: bool
    type: str | None
    error: str | None
    out: str
    ms: int
    heap_total: int | None
    alloc: int


def run_steps(
    steps: list[str], heap: int, files: Path | None = None, timeout: float = 300
) -> list[Step]:
    """Run Python source on the 32-bit WebAssembly port, one top-level call per step.

    Args:
        steps: Python source, one string per top-level call; names persist between steps
            (they share ``__main__``).
        heap: the first GC heap area in bytes (``loadMicroPython({heapsize})``).
        files: a host directory copied into the port's in-memory filesystem at
            ``/flash``, which becomes the working directory and the head of ``sys.path``
            (with ``/flash/lib``), as a board's filesystem.
        timeout: seconds for the whole run.

    Returns:
        One :class:`Step` per step run (a crash of the runtime ends the list early).

    Raises:
        UserError: the runtime is not installed, or Node.js failed.
    """
    why = unavailable()
    if why:
        raise UserError("the 32-bit MicroPython runtime is not available", why)
    argv = [node_binary() or "node", str(RUNNER), "--package", str(package_dir())]
    argv += ["--heap", str(int(heap))]
    if files is not None:
        argv += ["--files", str(files)]
    proc = subprocess.run(
        argv,
        input=json.dumps({"steps": steps}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    out = [_from_record(json.loads(ln)) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 and not out:
        raise UserError(
            "the 32-bit MicroPython runtime failed", proc.stderr.strip()[-300:], str(RUNNER)
        )
    return out


def _from_record(rec: dict) -> Step:
    rec = dict(rec)
    rec.pop("i", None)
    return Step(**rec)
