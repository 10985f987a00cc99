"""Is a kit's free heap going down? Judged from its ``diag`` reports (tk/diag.py):
``heap_free`` is measured after a collect, so it is what is in use, not garbage.

    heap_trend([(t, free), ...])["downtrend"]
"""

from __future__ import annotations

import statistics

HEAP_TOLERANCE_B = 4096  # heap_free moves this much between samples without a leak
HEAP_WARMUP_SAMPLES = 2  # the first samples of a boot (still settling) are left out


def heap_trend(samples: list[tuple[float, int]], tolerance: int = HEAP_TOLERANCE_B) -> dict:
    """Is free heap going down over one boot? ``samples``: (host time, heap_free after a
    collect), oldest first.

    A downtrend is a least-squares slope below zero together with the median of the last
    third of the samples lower than that of the first third by more than ``tolerance``
    bytes: both, so that one low sample (a message being built) is not a leak, and a
    steady loss is, however noisy.
    """
    s = samples[HEAP_WARMUP_SAMPLES:]
    if len(s) < 6:
        return {
            "samples": len(samples),
            "downtrend": False,
            "judged": False,
            "why": "too few samples to judge a trend",
        }
    ts = [t for t, _ in s]
    ys = [float(y) for _, y in s]
    tm, ym = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - tm) ** 2 for t in ts)
    slope = sum((t - tm) * (y - ym) for t, y in zip(ts, ys, strict=True)) / var if var else 0.0
    third = len(s) // 3
    first, last = statistics.median(ys[:third]), statistics.median(ys[-third:])
    down = slope < 0 and first - last > tolerance
    return {
        "samples": len(samples),
        "judged": True,
        "slope_b_per_h": round(slope * 3600),
        "first_third_median": int(first),
        "last_third_median": int(last),
        "change_b": int(last - first),
        "downtrend": down,
    }


def heap_report(diags: list[tuple[float, dict]], t_start: float, tolerance: int) -> dict:
    """Per hour (free and lowest) and per boot (trend) from a kit's diag reports."""
    hours: dict[int, list[dict]] = {}
    boots: list[list[tuple[float, dict]]] = []
    prev_up = None
    for t, d in diags:
        up = d.get("uptime_s", 0)
        if prev_up is None or up < prev_up:
            boots.append([])
        boots[-1].append((t, d))
        prev_up = up
        hours.setdefault(int((t - t_start) // 3600), []).append(d)
    per_hour = []
    for h, ds in sorted(hours.items()):
        free = [d["heap_free"] for d in ds if "heap_free" in d]
        low = [d["heap_min_free"] for d in ds if "heap_min_free" in d]
        per_hour.append(
            {
                "hour": h,
                "samples": len(ds),
                "free_min": min(free, default=None),
                "free_median": int(statistics.median(free)) if free else None,
                "free_last": free[-1] if free else None,
                "lowest": min(low, default=None),
            }
        )
    per_boot = []
    for b in boots:
        tr = heap_trend([(t, d["heap_free"]) for t, d in b if "heap_free" in d], tolerance)
        tr["reset_cause"] = b[0][1].get("reset_cause")
        per_boot.append(tr)
    # Every sample, for a closer look: [seconds into the run, uptime, free, lowest so far].
    series = [
        [round(t - t_start, 1), d.get("uptime_s"), d.get("heap_free"), d.get("heap_min_free")]
        for t, d in diags
    ]
    return {"per_hour": per_hour, "per_boot": per_boot, "samples": series}
