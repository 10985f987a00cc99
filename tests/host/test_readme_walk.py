"""Walk README.md's commands as a new user would: its own ```sh blocks, in order, no TTY.

The commands are read from README.md at test time, so the README and this test cannot
drift: a command that changes there is run as changed here. Each line runs in bash with
stdin from /dev/null in a scratch directory that links the repository's top-level entries
(the clone the README's user stands in, without its ``.thingkit``) and a scratch
``THINGKIT_HOME``, so nothing touches the repository's ``.thingkit``. Every line
must exit 0 and print no traceback. A few lines are not run; each is named in ``SKIP``
with the reason, and a placeholder is filled only where the README's own comment on that
line says where its value comes from (``FILL``). After the walk, the kit made by
``kit create`` must report the update that the README's OTA commands deployed.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from walk import procs_under, scratch_clone

from host_tools.paths import REPO

pytestmark = pytest.mark.slow

README = REPO / "README.md"
CMD_TIMEOUT_S = 300.0
WALK_TIMEOUT_S = 900.0
UPDATE_TIMEOUT_S = 240.0

# Lines not run (matched against the command, comments stripped): substring -> reason.
SKIP = {
    "bash scripts/dev.sh ": "the set-up commands: this test runs inside what they set up",
    "--target serial": "hardware: a board on a serial port",
    "pytest hil_tests --target sim": "the whole HIL suite: the test command runs it",
    "thingkit fleet up --count 100": "100 kits: minutes on this 2-CPU host (test_fleet_sim)",
    "bash scripts/docs.sh": "Sphinx HTML + PDF build, minutes: tests/host/test_docs.py",
    "-m benchmarks.": "speed measurements, minutes each: their figures are in the README",
}


def _first_thing(home: Path, _outputs: list[str]) -> str:
    with (home / "fleet" / "manifest.csv").open() as f:
        return next(csv.DictReader(f))["thing_name"]


def _last_job(_home: Path, outputs: list[str]) -> str:
    for out in reversed(outputs):
        m = re.search(r"^(ota-[\w-]+): deployed", out, re.MULTILINE)
        if m:
            return m.group(1)
    raise AssertionError("no `ota deploy` printed a job id before `ota status JOB`")


# Placeholder -> (what the README's comment on that line must say, how to get the value).
FILL: dict[str, tuple[str, Callable[[Path, list[str]], str]]] = {
    "THING": (".thingkit/fleet/manifest.csv", _first_thing),
    "JOB": ("the job id deploy printed", _last_job),
}


def readme_commands() -> list[tuple[str, str]]:
    """(command, its comment) for every line of every ```sh block, in README order."""
    lines: list[tuple[str, str]] = []
    for block in re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL):
        for raw in block.splitlines():
            if re.search(r"\s+#\s", raw):
                cmd, comment = re.split(r"\s+#\s", raw, maxsplit=1)
            else:
                cmd, comment = raw, ""
            if cmd.strip():
                lines.append((cmd.strip(), comment.strip()))
    return lines


def _skip_reason(cmd: str) -> str | None:
    return next((why for key, why in SKIP.items() if key in cmd), None)


def _fill(cmd: str, comment: str, home: Path, outputs: list[str]) -> str:
    for name, (said, value) in FILL.items():
        if re.search(rf"\b{name}\b", cmd):
            assert said in comment, f"README line {cmd!r} must say where {name} comes from"
            cmd = re.sub(rf"\b{name}\b", value(home, outputs), cmd)
    return cmd


def test_skip_list_is_small_and_each_entry_used() -> None:
    cmds = [c for c, _ in readme_commands()]
    assert len(SKIP) <= 6
    for key in SKIP:
        assert any(key in c for c in cmds), f"SKIP entry {key!r} matches no README line"
    # More of the README is walked than skipped.
    assert sum(_skip_reason(c) is None for c in cmds) > sum(
        _skip_reason(c) is not None for c in cmds
    )
    assert "THINGKIT_CA_PASSPHRASE" in README.read_text()  # why the walk may set it


def test_readme_walk(tmp_path: Path) -> None:
    work = tmp_path / "clone"
    # The clone as the README's user has it (no .git, and no .thingkit: the walk's own).
    env = scratch_clone(work)
    home = work / ".thingkit"
    env["THINGKIT_CA_PASSPHRASE"] = "readme-walk"  # the README: no terminal, so from the env
    tk = [str(REPO / ".venv" / "bin" / "thingkit")]

    def run(cmd: str, timeout: float = CMD_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: PLW1510 (exit codes checked)
            ["bash", "-c", f"set -eo pipefail\n{cmd}"],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    outputs: list[str] = []
    ran, skipped = [], []
    t0 = time.monotonic()
    try:
        for cmd, comment in readme_commands():
            why = _skip_reason(cmd)
            if why:
                skipped.append((cmd, why))
                continue
            line = _fill(cmd, comment, home, outputs)
            left = WALK_TIMEOUT_S - (time.monotonic() - t0)
            assert left > 0, f"the walk took over {WALK_TIMEOUT_S:.0f} s; at {line!r}"
            res = run(line, timeout=min(CMD_TIMEOUT_S, left))
            out = res.stdout + res.stderr
            outputs.append(out)
            ran.append(line)
            assert res.returncode == 0, f"{line!r} exited {res.returncode}:\n{out[-3000:]}"
            assert "Traceback (most recent call last)" not in out, f"{line!r}:\n{out[-3000:]}"

        # The bar: the kit made by `kit create` took the update the README deployed.
        job = _last_job(home, outputs)
        deadline = time.monotonic() + UPDATE_TIMEOUT_S
        rows: list[dict] = []
        while time.monotonic() < deadline:
            res = subprocess.run(  # noqa: PLW1510 (exit codes checked)
                [*tk, "ota", "status", job, "--json"],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
            )
            rows = json.loads(res.stdout) if res.stdout.strip() else []
            if rows and all(r["status"] not in ("QUEUED", "IN_PROGRESS") for r in rows):
                break
            time.sleep(1.0)
        console = home / "kits" / "kit-1" / "console.log"
        tail = console.read_text(errors="replace")[-2000:] if console.exists() else ""
        assert [(r["thing"], r["status"]) for r in rows] == [("kit-1", "SUCCEEDED")], (rows, tail)
        assert rows[0]["statusDetails"].get("version") == "0.2.0", rows
        assert res.returncode == 0
    finally:
        for kit in sorted((home / "kits").glob("*")) if (home / "kits").exists() else []:
            subprocess.run(  # noqa: PLW1510 (exit codes checked)
                [*tk, "kit", "stop", kit.name],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
            )
        subprocess.run(  # noqa: PLW1510 (exit codes checked)
            [*tk, "bench", "down"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
        )
        end = time.monotonic() + 15
        while procs_under(work) and time.monotonic() < end:
            time.sleep(0.2)
        left = procs_under(work)
        assert not left, f"processes left after the walk: {left}"
    assert len(ran) > len(skipped)
    print(
        f"readme walk: {len(ran)} lines run, {len(skipped)} skipped in "
        f"{time.monotonic() - t0:.1f} s"
    )
