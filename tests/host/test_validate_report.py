"""The validation report in its four forms: text, JSON, Markdown and one self-contained
HTML file (parsed here; loaded in Chromium too when Debian's chromium and playwright are
installed)."""

from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from host_tools.validate import report
from host_tools.validate.checklist import met, not_met, not_run

META = {
    "board": "esp32-devkitc",
    "thing": "kit-7",
    "target": "real board b1 on /dev/ttyUSB0",
    "cloud": "remote broker xxxx-ats.iot.eu-west-1.amazonaws.com:8883",
    "kit": {"certificate_sha256": "ab" * 32},
    "firmware": "0.1.0",
    "tool_version": "0.1.0",
    "date": "2026-12-03 12:00:00 UTC",
    "duration_s": 40.5,
}


def _results(bad: bool = False) -> list:
    rs = [
        met("app1.online_topic", '12:00:01.000Z thingkit/kit-7/status: {"state": "online"}'),
        met("app2.env", "4 readings <in range> & on time"),
        not_run("lens.store_forward", "not run: needs a cloud whose broker can be stopped"),
        met("hw.tls12", "listener probe: TLSv1.2 accepted"),
    ]
    if bad:
        rs.append(not_met("lens.offline_state", "no reported.connected=false within 45 s"))
    return rs


class _Page(HTMLParser):
    """Ids, links, external resources and the first element's text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.external: list[str] = []
        self.first: tuple[str, dict] | None = None
        self.texts: dict[str, str] = {}
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "div" and self.first is None:
            self.first = (tag, a)
        if "id" in a:
            self.ids.add(a["id"])
            self._in = a["id"]
            self.texts[a["id"]] = ""
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        if tag in ("script", "img", "iframe") or (tag == "link" and a.get("rel") == "stylesheet"):
            self.external.append(tag)
        if "src" in a:
            self.external.append(a["src"])

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self.texts[self._in] += data


def test_verdict_and_ok() -> None:
    assert report.verdict(_results()) == "MET: 3 of 4 items met; 1 not run on this target or cloud"
    assert report.ok(_results())
    assert report.verdict(_results(bad=True)).startswith("NOT MET: 1 of 5 items not met")
    assert not report.ok(_results(bad=True))
    assert not report.ok([not_run("hw.tls12", "not run: needs x")])  # nothing shown


def test_json_counts_not_run_items() -> None:
    doc = json.loads(report.render_json(_results(), META))
    assert doc["summary"] == {"met": 3, "not_met": 0, "total": 4, "not_run": 1}
    assert doc["ok"] is True
    item = next(i for i in doc["items"] if i["id"] == "lens.store_forward")
    assert item["status"] == "not_run" and item["evidence"][0].startswith("not run: needs")


def test_text_and_markdown() -> None:
    text = report.render_text(_results(), META)
    assert "[NOT RUN] lens.store_forward" in text
    assert "  Cloud: remote broker xxxx-ats" in text
    assert (
        text.splitlines()[-1] == "3/4 items met in 40.5 s, 1 not run (see each for what it needs)"
    )
    md = report.render_markdown(_results(bad=True), META)
    assert md.splitlines()[0] == (
        "# thingkit validate: esp32-devkitc — **NOT MET: 1 of 5 items not met**"
    )
    assert "| `lens.offline_state` | **NOT MET** |" in md
    assert "| thingkit | 0.1.0 |" in md and "| Date | 2026-12-03 12:00:00 UTC |" in md


@pytest.mark.parametrize("bad", [False, True])
def test_html_is_self_contained_with_banner_and_working_links(bad: bool) -> None:
    page = _Page()
    page.feed(report.render_html(_results(bad), META))
    assert page.first is not None and page.first[1].get("id") == "verdict"  # banner first
    assert page.first[1]["class"] == ("not_met" if bad else "met")
    assert page.texts["verdict"] == report.verdict(_results(bad))
    assert page.external == []  # no script, image, stylesheet or src: one file
    internal = [h for h in page.hrefs if h.startswith("#")]
    assert len(internal) == len(page.hrefs) and internal
    assert all(h[1:] in page.ids for h in internal), set(internal) - {f"#{i}" for i in page.ids}
    for r in _results(bad):
        assert f"#item-{r.id.replace('.', '-')}" in internal
    html = report.render_html(_results(), META)
    assert "4 readings &lt;in range&gt; &amp; on time" in html  # evidence is escaped
    for value in ("esp32-devkitc", "remote broker", "ab" * 32, "2026-12-03 12:00:00 UTC"):
        assert value in html


CHROMIUM = Path("/usr/bin/chromium")


def test_html_in_a_browser(tmp_path: Path) -> None:
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed")
    f = tmp_path / "report.html"
    f.write_text(report.render_html(_results(bad=True), META))
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            args=["--no-sandbox"] if os.geteuid() == 0 else [],
        )
        try:
            pg = b.new_page(viewport={"width": 1200, "height": 800})
            failed: list[str] = []
            pg.on("requestfailed", lambda r: failed.append(r.url))
            pg.goto(f.as_uri())
            banner = pg.locator("#verdict")
            assert banner.is_visible() and banner.bounding_box()["y"] == 0
            assert banner.inner_text().startswith("NOT MET")
            pg.click('a[href="#item-lens-offline_state"]')
            assert pg.evaluate("location.hash") == "#item-lens-offline_state"
            assert pg.locator("#item-lens-offline_state").is_visible()
            assert failed == []
        finally:
            b.close()
