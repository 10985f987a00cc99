"""Tests for the documentation (docs/): coverage of boards and checklist ids, the URL
single source, and an HTML build (multi-page and single-page) into a temporary directory.

The PDF is built by ``bash scripts/docs.sh`` (about 20 s), not here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools import doc_urls
from host_tools.audit import audit
from host_tools.boards.registry import all_boards
from host_tools.paths import REPO

DOCS = REPO / "docs"
CHECKLISTS = REPO.parent / "shared" / "CHECKLISTS.md"
sys.path.insert(0, str(DOCS / "_ext"))
import thingkit_docs


def sources() -> dict[str, str]:
    """The hand-written reST pages (not the generated board pages)."""
    return {
        p.relative_to(DOCS).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(DOCS.glob("*.rst"))
    }


def checklist_ids() -> list[str]:
    text = CHECKLISTS.read_text(encoding="utf-8")
    return re.findall(r"^\| `([a-z0-9]+\.[^`]+)` \|", text, re.MULTILINE)


@pytest.fixture(scope="module")
def board_pages(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("docs-src")
    thingkit_docs.generate_board_pages(src)
    return src / "boards"


def test_every_checklist_id_is_in_the_docs() -> None:
    if not CHECKLISTS.exists():
        pytest.skip(f"{CHECKLISTS} not beside the repository")
    ids = checklist_ids()
    assert len(ids) >= 30 and "app2.<component>" in ids
    text = sources()["checklist.rst"]
    missing = [i for i in ids if f"``{i}``" not in text]
    assert not missing, f"checklist ids missing from docs/checklist.rst: {missing}"


def test_every_board_has_a_page_with_its_app2_items(board_pages: Path) -> None:
    boards = all_boards()
    assert {p.stem for p in board_pages.glob("*.rst")} == {b.id for b in boards} | {"index"}
    index = (board_pages / "index.rst").read_text()
    for b in boards:
        page = (board_pages / f"{b.id}.rst").read_text()
        assert b.name in page and f"``boards/{b.id}.json``" in page
        for c in b.components:
            assert f"``app2.{c['id']}``" in page, (b.id, c["id"])
        assert "App #1 on this board" in page
        assert f":doc:`{b.id}`" in index


def test_board_pages_link_vendor_docs_through_urls_toml(board_pages: Path) -> None:
    vendor = doc_urls.load().boards
    for b in all_boards():
        key = b.data.get("url_key")
        page = (board_pages / f"{b.id}.rst").read_text()
        assert "://" not in page
        if key and key != "sim":
            assert key in vendor, f"boards/{b.id}.json url_key {key} has no [boards] entry"
            assert f":vendor:`{key}`" in page


def test_stale_board_pages_are_removed(tmp_path: Path) -> None:
    (tmp_path / "boards").mkdir()
    (tmp_path / "boards" / "gone-board.rst").write_text("old\n")
    ids = thingkit_docs.generate_board_pages(tmp_path)
    assert not (tmp_path / "boards" / "gone-board.rst").exists()
    assert all((tmp_path / "boards" / f"{i}.rst").exists() for i in ids)


def test_required_content_is_there() -> None:
    src = sources()
    feats = src["aws_features.rst"]
    for heading in ("Supported", "Planned", "Not supported"):
        assert f"\n{heading}\n---" in feats
    for feature in (
        "Device Shadow service, named shadows",
        "Jobs",
        "Fleet provisioning",
        "Lifecycle events",
        "Amazon Cognito",
    ):
        assert feature in feats, feature
    uses = src["use_cases.rst"]
    assert "Best suited" in uses and "Not suited" in uses
    flow = src["provisioning_flow.rst"]
    assert all(s in flow for s in ("Manufacturing", "Provisioning", "Activation", "who"))
    sec = src["security.rst"]
    assert all(s in sec for s in ("espefuse", "espsecure", "What MicroPython cannot protect"))
    trouble = src["troubleshooting.rst"]
    assert all(s in trouble for s in ("Clock", "TLS errors", "Memory"))
    assert "bash scripts/dev.sh validate" in src["quickstart.rst"]
    assert "bash scripts/dev.sh test" in src["quickstart.rst"]
    assert "Updates (OTA) and rollback" in src["ota.rst"]


def test_the_three_diagrams_are_drawn_and_shown() -> None:
    """The bench and a kit, A/B update and rollback, manufacturing to first connect:
    Graphviz sources that ``dot`` draws, each included by the page it explains."""
    import shutil
    import subprocess

    pages = {
        "bench_and_kit.dot": "quickstart.rst",
        "ota_ab.dot": "ota.rst",
        "provisioning_flow.dot": "provisioning_flow.rst",
    }
    src = sources()
    assert sorted(p.name for p in (DOCS / "diagrams").glob("*.dot")) == sorted(pages)
    dot = shutil.which("dot")
    assert dot, "Graphviz missing: bash scripts/dev.sh setup installs it"
    for name, page in pages.items():
        assert f".. graphviz:: diagrams/{name}" in src[page], name
        svg = subprocess.run(
            [dot, "-Tsvg", str(DOCS / "diagrams" / name)], capture_output=True, check=True
        ).stdout
        assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg


def test_every_page_is_in_the_toctree() -> None:
    index = sources()["index.rst"]
    for name in sources():
        if name != "index.rst":
            assert f"   {name.removesuffix('.rst')}\n" in index, name


def test_docs_pass_the_audit() -> None:
    """No literal URL, endpoint or credential in the sources: links come from urls.toml."""
    report = audit([DOCS])
    assert report.findings == [], "\n".join(f.line_str() for f in report.findings)


@pytest.mark.parametrize("builder", ["html", "singlehtml"])
def test_html_builds_without_warnings(builder: str, tmp_path: Path) -> None:
    pytest.importorskip("sphinx", reason="docs tools not installed: bash scripts/docs.sh")
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        builder,
        "-W",
        "--keep-going",
        "-n",
        "-q",
        "-d",
        str(tmp_path / "doctrees"),
        str(DOCS),
        str(tmp_path / builder),
    ]
    run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    out = tmp_path / builder
    index = (out / "index.html").read_text(encoding="utf-8")
    assert doc_urls.base_url() in index  # canonical link from the one configured value
    if builder == "html":
        for b in all_boards():
            assert (out / "boards" / f"{b.id}.html").exists()
        assert (out / "aws_features.html").exists()
        # the command reference is generated from the CLI's parser: every command is there
        import html

        from host_tools.cli import build_parser

        sys.path.insert(0, str(DOCS / "_ext"))
        from thingkit_cli_docs import leaves

        ref = html.unescape((out / "cli.html").read_text(encoding="utf-8"))
        missing = [w for w, _ in leaves(build_parser()) if f"thingkit {' '.join(w)}" not in ref]
        assert missing == []
        assert "--bench-root" in ref and "exit status" in ref
    else:
        assert all(f"app2.{c['id']}" in index for b in all_boards() for c in b.components)
        assert "What MicroPython cannot protect" in index
