"""Progress of long commands: rich on a terminal (NO_COLOR honoured), plain lines
otherwise, nothing with --json; results stay alone on stdout."""

from __future__ import annotations

import argparse
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from host_tools.cli.output import Progress

REPO = Path(__file__).resolve().parents[2]


def test_plain_lines_when_not_a_terminal(capsys) -> None:
    with Progress(argparse.Namespace(json=False)) as p:
        p.step("doing a thing")
        for i in range(1, 21):
            p.advance("items", i, 20)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "thingkit: doing a thing…"
    # the first item, then a line per tenth; the last one once
    assert err[1:] == [f"thingkit: items: {n}/20…" for n in (1, *range(2, 21, 2))]


def test_json_is_silent(capsys) -> None:
    with Progress(argparse.Namespace(json=True)) as p:
        p.step("doing a thing")
        p.advance("items", 1, 1)
    assert capsys.readouterr() == ("", "")


def _build_in_pty(tmp_path: Path, env: dict[str, str]) -> bytes:
    """``thingkit ota build`` with a terminal on stderr; what the terminal received."""
    src = tmp_path / "src"
    (src / "tk").mkdir(parents=True)
    (src / "main.py").write_text("import tk.main\n")
    (src / "tk" / "main.py").write_text("print('hi')\n")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "host_tools.cli",
            "ota",
            "build",
            "--version",
            "1.0.0",
            "--boards",
            "sim",
            "--source",
            str(src),
            "-o",
            str(tmp_path / "b.tkb"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, **env},
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    assert proc.returncode == 0, seen
    assert out.decode().startswith(f"built {tmp_path / 'b.tkb'}: app 1.0.0")
    return seen


def test_rich_progress_on_a_terminal(tmp_path: Path) -> None:
    env = {"TERM": "xterm-256color", "THINGKIT_PLAIN": "", "NO_COLOR": ""}
    seen = _build_in_pty(tmp_path, env)
    assert b"compiling" in seen and b"thingkit: compiling" not in seen  # drawn, not a line
    assert b"\x1b[" in seen  # cursor control and colour


def test_no_color_honoured(tmp_path: Path) -> None:
    seen = _build_in_pty(tmp_path, {"TERM": "xterm-256color", "NO_COLOR": "1"})
    assert b"compiling" in seen
    # no SGR colour sequences (ESC [ ... 3x/9x m); cursor movement may remain
    import re

    assert not re.search(rb"\x1b\[[0-9;]*(3[0-7]|9[0-7]|38;[0-9;]+)m", seen), seen


def test_json_result_alone_on_stdout(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.py").write_text("print('x')\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "host_tools.cli",
            "ota",
            "build",
            "--version",
            "1.0.0",
            "--boards",
            "sim",
            "--source",
            str(src),
            "-o",
            str(tmp_path / "b.tkb"),
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["version"], doc["signed"], r.stderr) == ("1.0.0", False, "")
