"""Portability guard for firmware/: it must run on ESP32 MicroPython as it runs on the
virtual kit. Every file compiles with mpy-cross; nothing imports a module MicroPython
lacks; the ESP32 board layer and the drivers type-check against micropython-esp32-stubs."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.kit.sim import mpy_cross_binary
from host_tools.paths import FIRMWARE, REPO

STUBS = REPO / ".thingkit" / "stubs" / "esp32"
# MicroPython's built-in modules that thingkit uses (ESP32 port and unix port alike),
# plus the firmware's own packages and its pinned device-side package.
MICROPYTHON_MODULES = {
    "array",
    "binascii",
    "collections",
    "errno",
    "esp32",
    "gc",
    "hashlib",
    "io",
    "json",
    "machine",
    "math",
    "micropython",
    "neopixel",
    "network",
    "os",
    "random",
    "select",
    "socket",
    "ssl",
    "struct",
    "sys",
    "time",
    "vfs",
}
# sim_board: the virtual kit's board layer, part of the kit's image (never deployed).
OWN = {"tk", "hal", "umqtt", "ussl", "sim_board"}

FILES = sorted(p for p in FIRMWARE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(FIRMWARE).as_posix())
def test_compiles_with_mpy_cross(path: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [mpy_cross_binary(), "-o", str(tmp_path / "x.mpy"), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_no_cpython_only_imports() -> None:
    bad = [
        f"{p.relative_to(REPO)}:{line}: import {mod}"
        for p in FILES
        for line, mod in _imports(p)
        if mod not in MICROPYTHON_MODULES | OWN
    ]
    assert not bad, "firmware imports modules MicroPython does not have:\n" + "\n".join(bad)


def test_import_check_catches_a_cpython_module(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("import typing\nfrom dataclasses import dataclass\nimport time\n")
    mods = [m for _, m in _imports(f) if m not in MICROPYTHON_MODULES | OWN]
    assert mods == ["typing", "dataclasses"]


@pytest.mark.skipif(
    not (STUBS / "machine.pyi").exists(),
    reason="micropython-esp32-stubs not installed (bash scripts/dev.sh setup)",
)
def test_esp32_board_layer_type_checks_against_stubs() -> None:
    targets = [
        "hal/esp32.py",
        "hal/esp32_hw.py",
        *sorted(
            p.relative_to(FIRMWARE).as_posix() for p in (FIRMWARE / "tk" / "drivers").glob("*.py")
        ),
    ]
    env = dict(os.environ, MYPYPATH=f"{STUBS}:{FIRMWARE}")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(REPO / "tests" / "portability" / "mypy-esp32.ini"),
            "--custom-typeshed-dir",
            str(STUBS),
            "--cache-dir",
            str(REPO / ".thingkit" / "mypy"),
            *targets,
        ],
        cwd=FIRMWARE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
