"""Render validation results as text for people and JSON for CI."""

from __future__ import annotations

import json

from host_tools.validate.checklist import MET, Result


def render_json(results: list[Result], meta: dict) -> str:
    met = sum(r.status == MET for r in results)
    return json.dumps(
        {
            **meta,
            "items": [r.to_json() for r in results],
            "summary": {"met": met, "not_met": len(results) - met, "total": len(results)},
            "ok": met == len(results),
        },
        indent=1,
    )


def render_text(results: list[Result], meta: dict) -> str:
    lines = [f"thingkit validate: board {meta.get('board')}, thing {meta.get('thing')}", ""]
    for r in results:
        mark = "MET    " if r.status == MET else "NOT MET"
        lines.append(f"[{mark}] {r.id:26} {r.title}")
        for e in r.evidence:
            lines.append(f"            - {e}")
    met = sum(r.status == MET for r in results)
    lines += ["", f"{met}/{len(results)} items met in {meta.get('duration_s')} s"]
    return "\n".join(lines)
