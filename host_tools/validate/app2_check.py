"""App #2 and the practices around it, judged from what the broker carried.

For every component of the board definition: readings on the telemetry topic at the
configured interval (device timestamps within a tolerance of it) over several
intervals, every advertised reading present, numeric values inside their range.
"""

from __future__ import annotations

import itertools

from host_tools.bench.observer import Message
from host_tools.validate import checklist as cl

TOLERANCE = 0.2  # fraction of the interval


def telemetry(messages: list[Message], topic: str, since: float) -> list[dict]:
    out = []
    for m in messages:
        d = m.json()
        if m.t >= since and m.topic == topic and isinstance(d, dict):
            out.append(d)
    return out


def _in_range(value: object, spec: dict) -> bool:
    rng = spec.get("range")
    if rng is None or isinstance(value, bool):
        return True
    return isinstance(value, int | float) and rng[0] <= value <= rng[1]


def check_component(comp: dict, msgs: list[dict], interval_s: float, need: int) -> cl.Result:
    cid = comp["id"]
    item = f"app2.{cid}"
    title = f"App #2 publishes the readings of {cid} ({comp.get('kind')}, {comp.get('driver')})"
    seen = [
        (d["ts"], d["readings"][cid])
        for d in msgs
        if isinstance(d.get("readings"), dict) and cid in d["readings"]
    ]
    errors = [
        d["errors"][cid] for d in msgs if isinstance(d.get("errors"), dict) and cid in d["errors"]
    ]
    problems = []
    if len(seen) < need:
        problems.append(
            f"{len(seen)} readings in {len(msgs)} messages, {need} needed"
            + (f"; device errors: {errors[-1]}" if errors else "")
        )
    wanted = comp.get("readings", {})
    for ts, r in seen:
        missing = [k for k in wanted if k not in r]
        if missing:
            problems.append(f"reading(s) {', '.join(missing)} missing at ts {ts}")
            break
        bad = [
            f"{k}={r[k]} outside {wanted[k]['range']}"
            for k in wanted
            if not _in_range(r[k], wanted[k])
        ]
        if bad:
            problems.append("; ".join(bad))
            break
    gaps = [(b[0] - a[0]) / 1000 for a, b in itertools.pairwise(seen)]
    off = [g for g in gaps if abs(g - interval_s) > TOLERANCE * interval_s]
    if off:
        problems.append(
            f"intervals {', '.join(f'{g:.2f}' for g in off)} s differ from "
            f"{interval_s} s by more than {TOLERANCE:.0%}"
        )
    if problems:
        return cl.Result(item, cl.NOT_MET, problems, title)
    last = seen[-1][1]
    units = ", ".join(f"{k}={last[k]} {wanted[k].get('unit', '')}".strip() for k in wanted)
    ev = [
        f"{len(seen)} readings, device timestamps {seen[0][0]}..{seen[-1][0]}",
        f"intervals {min(gaps):.2f}..{max(gaps):.2f} s (configured {interval_s} s, "
        f"tolerance {TOLERANCE:.0%})"
        if gaps
        else "one reading",
        f"latest: {units}; all in range",
    ]
    return cl.Result(item, cl.MET, ev, title)


def check_timestamps(messages: list[Message], prefix: str, since: float) -> cl.Result:
    """Every device message (status, pong, telemetry, diag) carries a device timestamp
    that agrees with the host's clock."""
    checked, bad = 0, []
    for m in messages:
        if m.t < since or not m.topic.startswith(prefix) or m.retain:
            continue
        kind = m.topic.rsplit("/", 1)[-1]
        if kind not in ("status", "pong", "telemetry", "diag"):
            continue
        d = m.json()
        if not isinstance(d, dict) or d.get("reason") == "connection_lost":
            continue  # the Last Will is composed before the link dies: no time to stamp
        checked += 1
        ts = d.get("ts")
        if not isinstance(ts, int) or abs(ts / 1000 - m.t) > 5:
            bad.append(f"{m.topic}: ts {ts} vs host {m.t:.3f}")
    if not checked or bad:
        return cl.not_met("lens.timestamps", f"{checked} messages checked", *bad[:5])
    return cl.met(
        "lens.timestamps",
        f"{checked} device messages (status, pong, telemetry, "
        "diag) carry ts in Unix ms, all within 5 s of the bench clock",
    )
