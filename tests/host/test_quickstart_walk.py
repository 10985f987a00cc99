"""Walk the quick start's shell blocks as written: each block one bash script, in order,
no TTY, in a scratch clone. The blocks are read from docs/quickstart.rst at test time."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from walk import procs_under, scratch_clone

from host_tools.paths import REPO

pytestmark = pytest.mark.slow

QUICKSTART = REPO / "docs" / "quickstart.rst"
SETUP = "bash scripts/dev.sh"  # the two set-up commands: this test runs inside them


def blocks() -> list[str]:
    """The text of every ``.. code-block:: sh`` of the quick start, dedented, in order."""
    out = []
    for m in re.finditer(
        r"^\.\. code-block:: sh\n\n((?:   .*\n|\n)+)", QUICKSTART.read_text(), re.MULTILINE
    ):
        out.append("\n".join(ln[3:] for ln in m.group(1).splitlines()).strip() + "\n")
    return out


def test_quickstart_blocks_run_as_written(tmp_path: Path) -> None:
    work = tmp_path / "clone"
    env = scratch_clone(work)
    todo = [b for b in blocks() if SETUP not in b]
    assert len(todo) == 3, todo  # by hand; watching App #1; outage, power cut, down
    outs = []
    try:
        for block in todo:
            res = subprocess.run(  # noqa: PLW1510 (exit code checked)
                ["bash", "-c", "set -eo pipefail\n" + block],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=300,
            )
            out = res.stdout + res.stderr
            outs.append(out)
            assert res.returncode == 0, f"{block}\nexited {res.returncode}:\n{out[-3000:]}"
            assert "Traceback (most recent call last)" not in out, out
        watch = outs[1]
        assert re.search(r'^thingkit/kit-1/status \{"state": "online"', watch, re.MULTILINE)
        assert re.search(r'^thingkit/kit-1/pong \{.*"id": 1\b', watch, re.MULTILINE), watch
        assert "bench down" in outs[2]
    finally:
        tk = str(REPO / ".venv" / "bin" / "thingkit")
        for cmd in ([tk, "kit", "stop", "kit-1"], [tk, "bench", "down"]):
            subprocess.run(cmd, cwd=work, env=env, capture_output=True, timeout=120)  # noqa: PLW1510
        end = time.monotonic() + 15
        while procs_under(work) and time.monotonic() < end:
            time.sleep(0.2)
        assert not procs_under(work), procs_under(work)
