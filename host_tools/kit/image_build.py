"""The virtual kit's image modules (``host_tools/kit/image``) compiled by mpy-cross.

On a board, the board layer and the port's modules are built into the firmware image and
cost no heap to load. On the virtual kit they are Python modules; compiled once to .mpy
(cached by content) they load without running the compiler inside the kit's small heap,
and what they still cost is measured and reserved on top of the kit's budget
(:meth:`host_tools.kit.sim.SimKit.calibrate`).

    path = compiled_image()   # a folder laid out as host_tools/kit/image, with .mpy files
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from host_tools.errors import UserError
from host_tools.paths import SIM_IMAGE, cache_dir


def _sources(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*.py") if "__pycache__" not in p.parts)


def compiled_image(src: Path = SIM_IMAGE) -> Path:
    """The image folder with every module as .mpy; built on first use, then cached."""
    from host_tools.kit.sim import mpy_cross_binary

    cross = mpy_cross_binary()
    h = hashlib.sha256(cross.encode())
    for p in _sources(src):
        h.update(p.relative_to(src).as_posix().encode() + b"\0" + p.read_bytes())
    dest = cache_dir() / "sim-image" / h.hexdigest()[:16]
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        for p in _sources(src):
            rel = p.relative_to(src).as_posix()
            out = stage / (rel[:-3] + ".mpy")
            out.parent.mkdir(parents=True, exist_ok=True)
            run = subprocess.run(
                [cross, "-o", str(out), "-s", rel, str(p)],
                capture_output=True,
                text=True,
                check=False,
            )
            if run.returncode != 0:
                raise UserError(f"mpy-cross failed on {rel}", run.stderr.strip()[-300:])
        try:
            os.rename(stage, dest)  # atomic: another process may have built it meanwhile
        except OSError:
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dest
