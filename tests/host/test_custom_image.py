"""boards/custom-image/: the manifest names files that exist, and the ROMFS table is the
one boards/sim-romfs.json describes. (The image itself needs ESP-IDF and is not built.)"""

from __future__ import annotations

import re
from pathlib import Path

from host_tools import device_deps
from host_tools.board_tools.images import parse_table, table_bin
from host_tools.boards import stock
from host_tools.boards.registry import load_board
from host_tools.paths import BOARDS, FIRMWARE

HERE = BOARDS / "custom-image"


def _calls(text: str, fn: str) -> list[list[str]]:
    return [re.findall(r'"([^"]*)"', m) for m in re.findall(rf"^{fn}\((.*)\)$", text, re.MULTILINE)]


def test_manifest_names_existing_thingkit_paths() -> None:
    text = (HERE / "manifest.py").read_text()
    # package("tk", base_path="../../firmware"); package("umqtt", base_path=_lib) has one
    # quoted argument: its directory comes from the environment at build time.
    local = [tuple(args) for args in _calls(text, "package") if len(args) == 2]
    assert ("tk", "../../firmware") in local and ("hal", "../../firmware") in local
    for name, base in local:
        assert (HERE / base / name / "__init__.py").is_file(), name
    for name, base in _calls(text, "module"):
        assert (HERE / base / name).is_file(), name
    # Every firmware package and module but main.py (a filesystem file) is frozen.
    frozen = {n for n, _ in local} | {n for n, _ in _calls(text, "module")}
    tops = {p.name for p in FIRMWARE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert tops <= frozen
    assert {p.name for p in (FIRMWARE / "lib").glob("*.py")} <= frozen


def test_manifest_freezes_the_pinned_umqtt_not_the_stock_one() -> None:
    text = (HERE / "manifest.py").read_text()
    assert 'require("umqtt.simple")' not in text and 'require("umqtt.robust")' not in text
    assert 'package("umqtt", base_path=_lib)' in text
    pinned = device_deps.packages()["umqtt.simple"]
    assert list(pinned["files"].values()) == ["lib/umqtt/simple.py"]  # THINGKIT_DEVICE_LIB/umqtt


def test_romfs_csv_is_the_sim_romfs_table() -> None:
    rows = []
    for line in (HERE / "partitions-4MiB-romfs.csv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, ptype, sub, off, size = [c.strip() for c in line.split(",")][:5]
            rows.append((name, ptype, sub.lower(), int(off, 0), int(size, 0)))
    board = load_board("sim-romfs")
    assert rows == [(p.name, p.type, p.subtype, p.offset, p.size) for p in board.partitions]
    assert stock.expected_table(board.data).custom
    assert parse_table(table_bin(board.partitions)) == list(board.partitions)


def test_custom_image_doc_says_it_was_not_built() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "custom_image.rst").read_text()
    assert "was not built" in doc and "boards/custom-image/manifest.py" in doc
