"""Render validation results: text for people, JSON for CI, Markdown, and one
self-contained HTML file to submit (verdict banner first, then each item with its
evidence, the kit and firmware identity, board, target, cloud, date and tool version).

The verdict: ``MET`` when every item run is met (some may be ``not run``: the target or
cloud cannot show them, and the report says what they need), ``NOT MET`` when any item
is not met.
"""

from __future__ import annotations

import html
import json

from host_tools.checklist import catalog
from host_tools.validate.checklist import MET, NOT_MET, NOT_RUN, Result

_MARK = {MET: "MET    ", NOT_MET: "NOT MET", NOT_RUN: "NOT RUN"}
_WORD = {MET: "met", NOT_MET: "not met", NOT_RUN: "not run"}
# Report header lines: meta key -> label (those present are shown, in this order).
_META = (
    ("verdict", "Verdict"),
    ("board", "Board"),
    ("target", "Target"),
    ("cloud", "Cloud"),
    ("thing", "Thing"),
    ("kit", "Kit identity"),
    ("firmware", "Firmware"),
    ("tool_version", "thingkit"),
    ("date", "Date"),
    ("duration_s", "Duration (s)"),
)


def counts(results: list[Result]) -> dict[str, int]:
    c = {s: sum(r.status == s for r in results) for s in (MET, NOT_MET, NOT_RUN)}
    return {**c, "total": len(results)}


def ok(results: list[Result]) -> bool:
    """True when no item is not met and at least one is met."""
    c = counts(results)
    return c[NOT_MET] == 0 and c[MET] > 0


def verdict(results: list[Result]) -> str:
    c = counts(results)
    if not ok(results):
        return f"NOT MET: {c[NOT_MET]} of {c['total']} items not met"
    extra = f"; {c[NOT_RUN]} not run on this target or cloud" if c[NOT_RUN] else ""
    return f"MET: {c[MET]} of {c['total']} items met{extra}"


def _meta_text(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    return str(value)


def render_json(results: list[Result], meta: dict) -> str:
    c = counts(results)
    summary = {"met": c[MET], "not_met": c[NOT_MET], "total": c["total"]}
    if c[NOT_RUN]:
        summary["not_run"] = c[NOT_RUN]
    return json.dumps(
        {
            **meta,
            "items": [r.to_json() for r in results],
            "summary": summary,
            "ok": ok(results),
        },
        indent=1,
    )


def render_text(results: list[Result], meta: dict) -> str:
    lines = [f"thingkit validate: board {meta.get('board')}, thing {meta.get('thing')}"]
    for key, label in _META:
        if key in meta and key not in ("board", "thing", "duration_s", "verdict"):
            lines.append(f"  {label}: {_meta_text(meta[key])}")
    lines.append("")
    for r in results:
        lines.append(f"[{_MARK.get(r.status, r.status)}] {r.id:26} {r.title}")
        for e in r.evidence:
            lines.append(f"            - {e}")
    c = counts(results)
    tail = f"{c[MET]}/{c['total']} items met in {meta.get('duration_s')} s"
    if c[NOT_RUN]:
        tail += f", {c[NOT_RUN]} not run (see each for what it needs)"
    lines += ["", tail]
    return "\n".join(lines)


def _sections(results: list[Result]) -> list[tuple[str, list[Result]]]:
    out: dict[str, list[Result]] = {}
    for r in results:
        sec = catalog.item(r.id).section if catalog.is_known(r.id) else "Other"
        out.setdefault(sec, []).append(r)
    order = [*catalog.SECTIONS, "Other"]
    return sorted(out.items(), key=lambda kv: order.index(kv[0]))


def render_markdown(results: list[Result], meta: dict) -> str:
    lines = [
        f"# thingkit validate: {meta.get('board')} — **{verdict(results)}**",
        "",
        "| | |",
        "|---|---|",
    ]
    for key, label in _META[1:]:
        if key in meta:
            lines.append(f"| {label} | {_meta_text(meta[key])} |")
    for section, rs in _sections(results):
        lines += ["", f"## {section}", "", "| id | status | item |", "|---|---|---|"]
        lines += [
            f"| `{r.id}` | **{_WORD.get(r.status, r.status).upper()}** | {r.title} |" for r in rs
        ]
        for r in rs:
            lines += ["", f"### `{r.id}`: {_WORD.get(r.status, r.status)}", ""]
            lines += [f"- {e}" for e in r.evidence] or ["- (no evidence)"]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}
main{max-width:70rem;margin:0 auto;padding:1rem 1.5rem}
#verdict{padding:1.2rem 1.5rem;font-size:1.5rem;font-weight:700;color:#fff}
#verdict.met{background:#1b7f3b}#verdict.not_met{background:#b3261e}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
.s-met{color:#1b7f3b;font-weight:700}.s-not_met{color:#b3261e;font-weight:700}
.s-not_run{color:#8a6d00;font-weight:700}
code,.ev{font-family:ui-monospace,monospace;font-size:.85rem}
.ev{white-space:pre-wrap;word-break:break-all;margin:.2rem 0}
"""


def render_html(results: list[Result], meta: dict) -> str:
    """One self-contained HTML page (no external files, scripts or fonts)."""
    e = html.escape
    good = ok(results)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>thingkit validate: {e(str(meta.get('board')))}: {e(verdict(results))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<div id="verdict" class="{MET if good else NOT_MET}">{e(verdict(results))}</div>',
        "<main>",
        '<table id="meta">',
    ]
    for key, label in _META[1:]:
        if key in meta:
            parts.append(f"<tr><th>{e(label)}</th><td>{e(_meta_text(meta[key]))}</td></tr>")
    parts.append("</table>")
    for section, rs in _sections(results):
        parts.append(
            f"<h2>{e(section)}</h2><table><tr><th>id</th><th>status</th><th>item</th></tr>"
        )
        for r in rs:
            anchor = "item-" + r.id.replace(".", "-")
            parts.append(
                f'<tr><td><a href="#{anchor}"><code>{e(r.id)}</code></a></td>'
                f'<td class="s-{e(r.status)}">{e(_WORD.get(r.status, r.status))}</td>'
                f"<td>{e(r.title)}</td></tr>"
            )
        parts.append("</table>")
    parts.append("<h2>Evidence</h2>")
    for r in results:
        anchor = "item-" + r.id.replace(".", "-")
        parts.append(
            f'<section id="{anchor}"><h3><code>{e(r.id)}</code> '
            f'<span class="s-{e(r.status)}">{e(_WORD.get(r.status, r.status))}</span>: '
            f"{e(r.title)}</h3>"
        )
        parts += [f'<p class="ev">{e(x)}</p>' for x in r.evidence] or ["<p>(no evidence)</p>"]
        parts.append('<p><a href="#verdict">back to the verdict</a></p></section>')
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"
