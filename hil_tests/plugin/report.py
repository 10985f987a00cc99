"""The HIL summary: which checklist items the run showed met, with the tests behind each.

Built from test outcomes (during a run, or afterwards from JUnit XML files, e.g. one per
board of a CI matrix) and written as Markdown, HTML and JSON, fit to attach to a kit
validation submission::

    python -m hil_tests.plugin.report reports/junit-*.xml --out reports/

An item is **met** when at least one test shows it and every test that shows it and ran
passed; **not met** when one of them failed, errored or is a known failure (xfail);
**not run** when all its tests were skipped (the reasons are listed); **no test** when no
HIL test shows it, and **not HIL** for items another check covers (image scans, docs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import sys
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hil_tests.plugin import checklist

PASSED, FAILED, ERROR, SKIPPED, XFAILED, XPASSED = (
    "passed",
    "failed",
    "error",
    "skipped",
    "xfailed",
    "xpassed",
)
RAN = {PASSED, FAILED, ERROR, XFAILED, XPASSED}
BAD = {FAILED, ERROR, XFAILED}

MET, NOT_MET, NOT_RUN, NO_TEST, NOT_HIL = "met", "not met", "not run", "no test", "not HIL"


@dataclass
class Outcome:
    """One test's result as the summary needs it."""

    nodeid: str
    outcome: str
    duration: float = 0.0
    checklist: list[str] = field(default_factory=list)
    detail: str = ""  # skip reason, xfail reason or the failure's first line
    # directory of the test's console logs and broker transcript, relative to the report
    # directory (where summary.* live, so it is also the link from the summary)
    artifacts: str = ""
    target: str = ""


@dataclass
class ItemResult:
    id: str
    section: str
    title: str
    status: str
    tests: list[dict] = field(default_factory=list)
    note: str = ""


def expand(ids: list[str], components: dict[str, str]) -> list[str]:
    """Replace ``app2.*`` by one id per component; keep order, drop duplicates."""
    out: list[str] = []
    for i in ids:
        for j in [f"app2.{c}" for c in components] if i == checklist.APP2_ALL else [i]:
            if j not in out:
                out.append(j)
    return out


def summarize(outcomes: list[Outcome], components: dict[str, str]) -> list[ItemResult]:
    """One result per catalogue item (plus any app2 item a test names), in order."""
    items = checklist.catalogue(components)
    known = {i.id for i in items}
    for o in outcomes:
        for i in expand(o.checklist, components):
            if i not in known:
                items.append(checklist.item(i, components))
                known.add(i)
    results = []
    for it in items:
        tests = [o for o in outcomes if it.id in expand(o.checklist, components)]
        ran = [o for o in tests if o.outcome in RAN]
        if any(o.outcome in BAD for o in ran):
            status = NOT_MET
        elif ran:
            status = MET
        elif tests:
            status = NOT_RUN
        elif it.id in checklist.NOT_HIL:
            status = NOT_HIL
        else:
            status = NO_TEST
        note = checklist.NOT_HIL.get(it.id, "") if status == NOT_HIL else ""
        results.append(
            ItemResult(
                it.id,
                it.section,
                it.title,
                status,
                [{"test": o.nodeid, "outcome": o.outcome, "detail": o.detail} for o in tests],
                note,
            )
        )
    return results


def counts(results: list[ItemResult]) -> dict[str, int]:
    c = {s: 0 for s in (MET, NOT_MET, NOT_RUN, NO_TEST, NOT_HIL)}
    for r in results:
        c[r.status] += 1
    return c


def outcome_counts(outcomes: list[Outcome]) -> dict[str, int]:
    c: dict[str, int] = {}
    for o in outcomes:
        c[o.outcome] = c.get(o.outcome, 0) + 1
    return c


# -- rendering -----------------------------------------------------------------------------
_MARK = {MET: "MET", NOT_MET: "NOT MET", NOT_RUN: "not run", NO_TEST: "no test", NOT_HIL: "-"}


def render_json(results: list[ItemResult], outcomes: list[Outcome], meta: dict) -> str:
    return json.dumps(
        {
            **meta,
            "items": [asdict(r) for r in results],
            "item_counts": counts(results),
            "tests": [asdict(o) for o in outcomes],
            "outcome_counts": outcome_counts(outcomes),
        },
        indent=1,
    )


def _meta_lines(meta: dict) -> list[tuple[str, str]]:
    keys = [
        ("Target", "target"),
        ("Board", "board"),
        ("Firmware", "firmware"),
        ("Source", "commit"),
        ("Host", "host"),
        ("Started", "started"),
        ("Duration", "duration"),
        ("Workers", "workers"),
    ]
    return [(label, str(meta[k])) for label, k in keys if meta.get(k) not in (None, "")]


def render_markdown(results: list[ItemResult], outcomes: list[Outcome], meta: dict) -> str:
    c, tc = counts(results), outcome_counts(outcomes)
    lines = ["# thingkit HIL report", ""]
    lines += [f"- **{label}:** {value}" for label, value in _meta_lines(meta)]
    lines += [
        (
            f"- **Checklist:** {c[MET]} met, {c[NOT_MET]} not met, {c[NOT_RUN]} not run, "
            f"{c[NO_TEST]} without a HIL test, {c[NOT_HIL]} covered by other checks"
        ),
        "- **Tests:** " + ", ".join(f"{n} {k}" for k, n in sorted(tc.items())),
        "",
    ]
    for section in checklist.SECTIONS:
        rows = [r for r in results if r.section == section]
        if not rows:
            continue
        lines += [
            f"## {section}",
            "",
            "| item | status | requirement | tests |",
            "|---|---|---|---|",
        ]
        for r in rows:
            tests = "<br>".join(
                f"`{t['test'].split('::', 1)[-1]}` {t['outcome']}" for t in r.tests
            ) or (r.note or "")
            lines.append(f"| `{r.id}` | **{_MARK[r.status]}** | {r.title} | {tests} |")
        lines.append("")
    lines += ["## Tests", "", "| test | outcome | s | items | detail | artifacts |"]
    lines += ["|---|---|---|---|---|---|"]
    for o in outcomes:
        detail = o.detail.replace("|", "\\|").replace("\n", " ")[:160]
        items = ", ".join(o.checklist)
        link = f"[{o.artifacts}]({o.artifacts}/)" if o.artifacts else ""
        lines.append(
            f"| `{o.nodeid}` | {o.outcome} | {o.duration:.1f} | {items} | {detail} | {link} |"
        )
    return "\n".join(lines) + "\n"


_CSS = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
    "td,th{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top}"
    ".met{background:#d9f2d9}.notmet{background:#f7d4d4}.notrun{background:#f5ecd0}"
    "code{font-size:90%}"
)


def render_html(results: list[ItemResult], outcomes: list[Outcome], meta: dict) -> str:
    e = html.escape
    c = counts(results)
    cls = {MET: "met", NOT_MET: "notmet", NOT_RUN: "notrun"}
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>thingkit HIL report</title>",
        f"<style>{_CSS}</style></head><body><h1>thingkit HIL report</h1><ul>",
    ]
    out += [f"<li><b>{e(k)}:</b> {e(v)}</li>" for k, v in _meta_lines(meta)]
    out.append(
        f"<li><b>Checklist:</b> {c[MET]} met, {c[NOT_MET]} not met, {c[NOT_RUN]} not run, "
        f"{c[NO_TEST]} without a HIL test, {c[NOT_HIL]} covered by other checks</li></ul>"
    )
    for section in checklist.SECTIONS:
        rows = [r for r in results if r.section == section]
        if not rows:
            continue
        out.append(f"<h2>{e(section)}</h2><table><tr><th>item</th><th>status</th>")
        out.append("<th>requirement</th><th>tests</th></tr>")
        for r in rows:
            tests = "<br>".join(
                f"<code>{e(t['test'].split('::', 1)[-1])}</code> {e(t['outcome'])}" for t in r.tests
            ) or e(r.note)
            out.append(
                f"<tr class='{cls.get(r.status, '')}'><td><code>{e(r.id)}</code></td>"
                f"<td><b>{e(_MARK[r.status])}</b></td><td>{e(r.title)}</td><td>{tests}</td></tr>"
            )
        out.append("</table>")
    out.append("<h2>Tests</h2><table><tr><th>test</th><th>outcome</th><th>s</th>")
    out.append("<th>items</th><th>detail</th><th>artifacts</th></tr>")
    for o in outcomes:
        row_cls = "met" if o.outcome == PASSED else "notmet" if o.outcome in BAD else "notrun"
        link = f"<a href='{e(o.artifacts)}/'>{e(o.artifacts)}</a>" if o.artifacts else ""
        out.append(
            f"<tr class='{row_cls}'><td><code>{e(o.nodeid)}</code></td><td>{e(o.outcome)}</td>"
            f"<td>{o.duration:.1f}</td><td>{e(', '.join(o.checklist))}</td>"
            f"<td>{e(o.detail[:300])}</td><td>{link}</td></tr>"
        )
    out.append("</table></body></html>")
    return "\n".join(out) + "\n"


def write(
    out_dir: Path, outcomes: list[Outcome], components: dict[str, str], meta: dict
) -> dict[str, Path]:
    """Write summary.md, summary.html and summary.json into ``out_dir``."""
    results = summarize(outcomes, components)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "md": out_dir / "summary.md",
        "html": out_dir / "summary.html",
        "json": out_dir / "summary.json",
    }
    meta = {**meta, "components": components}
    paths["md"].write_text(render_markdown(results, outcomes, meta))
    paths["html"].write_text(render_html(results, outcomes, meta))
    paths["json"].write_text(render_json(results, outcomes, meta) + "\n")
    return paths


# -- JUnit ---------------------------------------------------------------------------------
def from_junit(path: Path) -> tuple[list[Outcome], dict[str, str]]:
    """Outcomes from a pytest JUnit XML file (with the plugin's testcase properties), and
    the components of the board it ran on."""
    root = ET.parse(path).getroot()
    outcomes, components = [], {}
    for tc in root.iter("testcase"):
        props = {p.get("name"): p.get("value", "") for p in tc.iter("property")}
        if "hil_nodeid" not in props:
            continue  # not a HIL test
        outcome, detail = PASSED, ""
        for child in tc:
            msg = child.get("message", "")
            if child.tag == "skipped":
                is_xfail = child.get("type") == "pytest.xfail"
                outcome, detail = (XFAILED if is_xfail else SKIPPED), msg
            elif child.tag == "failure":
                outcome, detail = FAILED, msg
            elif child.tag == "error" and outcome != FAILED:
                outcome, detail = ERROR, msg
        if props.get("hil_outcome") == XPASSED:
            outcome = XPASSED
        try:
            comps = json.loads(props.get("hil_components") or "{}")
        except ValueError:
            comps = {}
        for cid, what in comps.items():
            components.setdefault(cid, what)
        outcomes.append(
            Outcome(
                nodeid=props["hil_nodeid"],
                outcome=outcome,
                duration=float(tc.get("time", 0) or 0),
                checklist=props.get("checklist", "").split(),
                detail=detail.splitlines()[0] if detail else "",
                artifacts=props.get("artifacts", ""),
                target=props.get("hil_target", ""),
            )
        )
    return outcomes, components


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hil_tests.plugin.report",
        description="Build the HIL checklist summary from JUnit XML files of HIL runs.",
    )
    p.add_argument("junit", nargs="+", type=Path, help="JUnit XML files written by pytest")
    p.add_argument("--out", type=Path, default=Path("reports"), help="output directory")
    args = p.parse_args(argv)
    outcomes: list[Outcome] = []
    components: dict[str, str] = {}
    for f in args.junit:
        try:
            o, c = from_junit(f)
        except (OSError, ET.ParseError) as exc:
            print(f"hil report: cannot read {f}: {exc}", file=sys.stderr)
            return 1
        outcomes += o
        for k, v in c.items():
            components.setdefault(k, v)
    targets = sorted({o.target for o in outcomes if o.target})
    meta = {
        "target": ", ".join(targets),
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sources": [str(f) for f in args.junit],
    }
    paths = write(args.out, outcomes, components, meta)
    c = counts(summarize(outcomes, components))
    print(
        f"hil report: {len(outcomes)} tests, {c[MET]} items met, {c[NOT_MET]} not met; "
        f"{paths['md']}"
    )
    return 0 if c[NOT_MET] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
