"""Sphinx configuration of the thingkit documentation.

Build everything with ``bash scripts/docs.sh`` (multi-page HTML, single-page HTML, PDF in
docs/_build/). Every URL comes from docs/urls.toml.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path[:0] = [str(REPO), str(DOCS / "_ext")]

URLS = tomllib.loads((DOCS / "urls.toml").read_text(encoding="utf-8"))
_pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

project = "thingkit"
author = "the thingkit engineers"
copyright = "thingkit contributors"
release = version = _pyproject["project"]["version"]
language = "en"

extensions = ["sphinx.ext.extlinks", "sphinx.ext.graphviz", "thingkit_docs", "thingkit_cli_docs"]
# Diagrams: Graphviz sources in docs/diagrams/, drawn by Debian's ``dot`` at build time as
# SVG (sharp in HTML and in the PDF WeasyPrint renders from the single-page HTML).
graphviz_output_format = "svg"
if importlib.util.find_spec("sphinx_simplepdf"):
    extensions.append("sphinx_simplepdf")

exclude_patterns = ["_build", "README.md", "requirements.txt"]
root_doc = "index"
nitpicky = False
rst_epilog = "\n.. |docs_base_url| replace:: ``base_url`` of ``docs/urls.toml``\n"

# Links to other sites: :aws_iot:`Device Shadow <iot-device-shadows.html>`.
extlinks = {name: (pattern, "%s") for name, pattern in URLS.get("links", {}).items()}
extlinks_detect_hardcoded_links = True
thingkit_urls = URLS

# -- HTML (multi-page and single-page) -------------------------------------------------
html_theme = "alabaster"
html_title = f"thingkit {release}"
html_baseurl = URLS["base_url"]  # canonical links point at the published copy
html_theme_options = {
    "description": "MicroPython reference firmware and tools for ESP32 kits on AWS IoT",
    "fixed_sidebar": True,
    "show_relbars": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_show_sourcelink = False
html_copy_source = False

# -- PDF: sphinx-simplepdf renders the single-page HTML with WeasyPrint ---------------
simplepdf_file_name = "thingkit.pdf"
simplepdf_use_weasyprint_api = True  # in-process: no dependence on PATH
simplepdf_vars = {
    "primary": "#1f4e79",
    "secondary": "#2f6f9f",
    "cover": "#ffffff",
    "white": "#ffffff",
    "links": "#1f4e79",
    "cover-bg": "#1f4e79",
    "cover-overlay": "rgba(31, 78, 121, 0.85)",
    "top-left-content": "counter(page)",
    "bottom-center-content": "'thingkit documentation'",
}
simplepdf_theme_options = {"nocover": False}
