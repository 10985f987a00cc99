"""The LDT's summary: what was sent, received, lost and duplicated, reconnects and their
delays, resets with their cause, heap per hour and its trend, shadow versions, and a
pass/fail per phase; written as ``summary.json`` and ``summary.txt``.

How readings are counted and put in phases: :mod:`host_tools.ldt.evidence`; the heap
trend: :mod:`host_tools.ldt.heap`.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

from host_tools.ldt.context import Check, Context
from host_tools.ldt.evidence import Phases, console, delays, readings
from host_tools.ldt.heap import HEAP_TOLERANCE_B, heap_report, heap_trend
from host_tools.ldt.profile import fmt_s

__all__ = ["build", "heap_trend", "render", "verdict_line", "write"]


# -- the summary ------------------------------------------------------------------------------
def build(ctx: Context, final: dict[str, dict], wall_s: float, runtime: str) -> dict:
    """The summary document. ``final``: per kit, what was read at the end (``boot_id``
    and ``app2_seq`` of the current boot, final ``shadow_versions``)."""
    phases = Phases(ctx)
    prof = ctx.profile
    per_phase: dict[str, dict[str, Any]] = {
        p.name: {
            "sent": 0,
            "received": 0,
            "lost": 0,
            "pending": 0,
            "duplicated": 0,
            "intervals_missed": 0,
            "reconnects": 0,
            "sessions_ended": 0,
            "delays": [],
            "resets": [],
        }
        for p in ctx.phases
    }
    lost_all, pending_all, resets_all, late_all = [], [], [], []
    kits_doc: dict[str, Any] = {}
    heap_doc: dict[str, Any] = {}
    for k in ctx.kits:
        fin = final.get(k.name, {})
        current = {fin["boot_id"]: int(fin.get("app2_seq") or 0)} if fin.get("boot_id") else {}
        r = readings(k, current, phases, prof.telemetry_interval_s)
        c = console(ctx, k, phases, fin.get("running", k.kit.is_running()))
        for ph, f in r["per_phase"].items():
            for key, n in f.items():
                per_phase[ph][key] += n
        for rc in c["reconnects"]:
            per_phase[rc["phase"]]["reconnects"] += 1
            per_phase[rc["phase"]]["delays"].append(rc["delay_s"])
        for se in c["sessions_ended"]:
            per_phase[se["phase"]]["sessions_ended"] += 1
        for rs in c["resets"]:
            rs = dict(rs, t_s=round(rs.pop("t") - ctx.t_start, 1))
            resets_all.append(rs)
            per_phase[rs["phase"]]["resets"].append(rs)
        lost_all += r["lost"]
        pending_all += r["pending"]
        late_all += [(k.name, *x) for x in r["out_of_order"]]
        diags = [
            (m.t, m.json())
            for m in list(ctx.observer.messages)
            if m.topic == f"{ctx.bench.topic_prefix}/{k.name}/diag" and isinstance(m.json(), dict)
        ]
        tol = max(HEAP_TOLERANCE_B, k.kit.heap_bytes() // 50)
        heap_doc[k.name] = dict(heap_report(diags, ctx.t_start, tol), tolerance_b=tol)  # type: ignore[arg-type]
        versions = c["sync_versions"]
        kits_doc[k.name] = {
            "boots": len([x for x in c["resets"] if x["cause"] != "stopped"]),
            "boot_clock_offsets_s": r["boot_offsets_s"],
            "watchdog_resets": c["watchdog_lines"],
            "reconnects": [{**rc, "t": round(rc["t"] - ctx.t_start, 1)} for rc in c["reconnects"]],
            "tracebacks": c["tracebacks"],
            "shadow": {
                "versions_at_sync": versions,
                "final": fin.get("shadow_versions", {}),
                "only_grew": all(a < b for a, b in itertools.pairwise(versions)),
            },
            "running_at_end": fin.get("running", k.kit.is_running()),
        }

    phase_docs = []
    for p in ctx.phases:
        f = per_phase[p.name]
        unexplained = [r for r in f["resets"] if not r["explained"]]
        checks = list(p.checks)
        checks.append(Check("0 lost", f["lost"] == 0, f"{f['lost']} of {f['sent']} readings lost"))
        checks.append(
            Check(
                "no unexplained reset",
                not unexplained,
                "; ".join(f"{r['kit']}: {r['why']}" for r in unexplained)
                or f"{len(f['resets'])} resets, all explained",
            )
        )
        phase_docs.append(
            {
                "name": p.name,
                "passed": all(c.ok for c in checks),
                "start_s": round(p.t0 - ctx.t_start, 1),
                "end_s": round(p.t1 - ctx.t_start, 1),
                "budget_s": round(p.budget_s, 1),
                "figures": {
                    "sent": f["sent"],
                    "received": f["received"],
                    "lost": f["lost"],
                    "pending": f["pending"],
                    "duplicated": f["duplicated"],
                    "intervals_missed": f["intervals_missed"],
                    "sessions_ended": f["sessions_ended"],
                    "reconnects": f["reconnects"],
                    "reconnect_delay_s": delays(f["delays"]),
                    "resets": f["resets"],
                },
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
                "actions": p.actions,
                "evidence": p.evidence,
            }
        )

    tot = {
        key: sum(per_phase[p][key] for p in per_phase)
        for key in (
            "sent",
            "received",
            "lost",
            "pending",
            "duplicated",
            "intervals_missed",
            "reconnects",
            "sessions_ended",
        )
    }
    all_delays = [d for p in per_phase.values() for d in p["delays"]]
    unexplained = [r for r in resets_all if not r["explained"]]
    downs = {k: [b for b in h["per_boot"] if b["downtrend"]] for k, h in heap_doc.items()}
    # A run too short for a trend (a phase on its own) is not failed for it; the summary
    # says so ("heap_judged": false) and a full CI-length run has enough samples.
    judged = sum(1 for h in heap_doc.values() for b in h["per_boot"] if b["judged"])
    overall = [
        Check(
            "every phase passed",
            all(p["passed"] for p in phase_docs),
            ", ".join(str(p["name"]) for p in phase_docs if not p["passed"]) or "all passed",
        ),
        Check(
            "0 lost",
            tot["lost"] == 0,
            f"{tot['lost']} of {tot['sent']} readings lost"
            + (f", e.g. {lost_all[:10]}" if lost_all else ""),
        ),
        Check(
            "everything delivered by the end",
            tot["pending"] == 0,
            f"{tot['pending']} readings still on flash"
            + (f", e.g. {pending_all[:10]}" if pending_all else ""),
        ),
        Check(
            "readings arrived in order",
            not late_all,
            f"{len(late_all)} first copies arrived after a later reading"
            + (f", e.g. (kit, boot, seq, after) {late_all[:5]}" if late_all else ""),
        ),
        Check(
            "0 unexplained resets",
            not unexplained,
            "; ".join(f"{r['kit']} at {r['t_s']} s: {r['why']}" for r in unexplained)
            or f"{len(resets_all)} boots, all explained",
        ),
        Check(
            "no heap downtrend",
            not any(downs.values()),
            "not judged: no boot had enough diag samples (a run this short cannot show a trend)"
            if not judged
            else "; ".join(
                f"{k}: {b['change_b']} B ({b['slope_b_per_h']} B/h)"
                for k, bs in downs.items()
                for b in bs
            )
            or f"{judged} boots judged, none going down",
        ),
        Check(
            "shadow versions only grew",
            all(d["shadow"]["only_grew"] for d in kits_doc.values()),
            str({k: d["shadow"]["versions_at_sync"] for k, d in kits_doc.items()}),
        ),
        Check(
            "kits running at the end",
            all(d["running_at_end"] for d in kits_doc.values()),
            str({k: d["running_at_end"] for k, d in kits_doc.items()}),
        ),
    ]
    passed = all(c.ok for c in overall)
    return {
        "verdict": "pass" if passed else "fail",
        "runtime": runtime,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ctx.t_start)),
        "wall_s": round(wall_s, 1),
        "profile": prof.to_json(),
        "kits": [k.name for k in ctx.kits],
        "totals": {
            **tot,
            "reconnect_delay_s": delays(all_delays),
            "resets": len(resets_all),
            "unexplained_resets": len(unexplained),
            "watchdog_resets": sum(d["watchdog_resets"] for d in kits_doc.values()),
        },
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in overall],
        "phases": phase_docs,
        "resets": resets_all,
        "lost": [list(x) for x in lost_all[:200]],
        "out_of_order": [list(x) for x in late_all[:200]],
        "heap": heap_doc,
        "heap_judged": judged > 0,
        "per_kit": kits_doc,
    }


def render(doc: dict) -> str:
    """The summary as text: one line per phase, then the run's figures and checks."""
    t = doc["totals"]
    lines = [
        (
            f"LDT {doc['started']}: {len(doc['kits'])} kit(s), profile {doc['profile']['name']}, "
            f"{fmt_s(doc['wall_s'])} wall; runtime {doc['runtime']}"
        ),
        "",
        (
            f"{'phase':16} {'result':6} {'sent':>6} {'recv':>6} {'lost':>5} {'dup':>4} "
            f"{'gaps':>4} {'recon':>5} {'delay med/max s':>16} resets"
        ),
    ]
    for p in doc["phases"]:
        f = p["figures"]
        d = f["reconnect_delay_s"]
        dl = f"{d['median']}/{d['max']}" if d["count"] else "-"
        lines.append(
            f"{p['name']:16} {'pass' if p['passed'] else 'FAIL':6} {f['sent']:>6} "
            f"{f['received']:>6} {f['lost']:>5} {f['duplicated']:>4} "
            f"{f['intervals_missed']:>4} {f['reconnects']:>5} {dl:>16} {len(f['resets'])}"
        )
        for c in p["checks"]:
            if not c["ok"]:
                lines.append(f"    FAILED {c['name']}: {c['detail']}")
    d = t["reconnect_delay_s"]
    lines += [
        "",
        (
            f"messages: sent {t['sent']}, received {t['received']}, lost {t['lost']}, "
            f"pending {t['pending']}, duplicated {t['duplicated']}; intervals without a "
            f"reading (gaps) {t['intervals_missed']}"
        ),
        f"reconnects: {t['reconnects']} (delay s: "
        + (f"min {d['min']}, median {d['median']}, max {d['max']})" if d["count"] else "none)"),
        (
            f"resets: {t['resets']} boots, {t['unexplained_resets']} unexplained, "
            f"{t['watchdog_resets']} by the watchdog"
        ),
    ]
    for r in doc["resets"]:
        lines.append(f"    {r['kit']} at {r['t_s']} s ({r['phase']}): {r['cause']}: {r['why']}")
    for kit, h in doc["heap"].items():
        for hr in h["per_hour"]:
            lines.append(
                f"heap {kit} hour {hr['hour']}: {hr['samples']} samples, free median "
                f"{hr['free_median']} min {hr['free_min']} B, lowest {hr['lowest']} B"
            )
        for i, b in enumerate(h["per_boot"]):
            trend = (
                f"{b['change_b']:+d} B first->last third, {b['slope_b_per_h']:+d} B/h"
                if b["judged"]
                else b["why"]
            )
            lines.append(f"    boot {i + 1} ({b['reset_cause']}): {b['samples']} samples, {trend}")
    for kit, k in doc["per_kit"].items():
        lines.append(
            f"shadow {kit}: versions at each sync {k['shadow']['versions_at_sync']}, "
            f"final {k['shadow']['final']}"
        )
    lines.append("")
    for c in doc["checks"]:
        lines.append(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['detail']}")
    lines.append(verdict_line(doc))
    return "\n".join(lines)


def verdict_line(doc: dict) -> str:
    t = doc["totals"]
    failed = [p["name"] for p in doc["phases"] if not p["passed"]]
    head = "LDT passed" if doc["verdict"] == "pass" else "LDT FAILED"
    return (
        f"{head}: {len(doc['phases']) - len(failed)}/{len(doc['phases'])} phases"
        + (f" (failed: {', '.join(failed)})" if failed else "")
        + f", {t['sent']} sent, {t['lost']} lost, {t['duplicated']} duplicated, "
        f"{t['reconnects']} reconnects, {t['unexplained_resets']} unexplained resets, "
        f"{fmt_s(doc['wall_s'])}"
    )


def write(doc: dict, out: Path) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``summary.txt`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    j, t = out / "summary.json", out / "summary.txt"
    j.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    t.write_text(render(doc) + "\n")
    return j, t
