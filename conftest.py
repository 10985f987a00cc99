"""Suite-wide pytest hooks: the order tests are handed out in.

``bash scripts/dev.sh test`` runs the suite on pytest-xdist workers with
``--dist loadgroup``: a worker takes the next test (or the next ``xdist_group``) from
one queue when it is free. The run ends no earlier than its longest test started plus
that test's time, so the queue starts with the modules holding the longest tests and the
many short ones fill the gaps; within a module the tests keep their order. How long a test takes comes from ``tests/durations.json`` (written from
a run's JUnit XML by ``python -m benchmarks.slow_tests FILE --save-durations
tests/durations.json``); a test not in it is ranked by its markers. Without ``-n`` the
collection order is kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
HIL = ROOT / "hil_tests"
DURATIONS = ROOT / "tests" / "durations.json"


def _known() -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(DURATIONS.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def expected_seconds(item: pytest.Item, known: dict[str, float]) -> float:
    """A rank, not a promise: the recorded time, else a quarter of a HIL test's own time
    limit, else 20 s for a slow or HIL test, else 0 (kept in collection order)."""
    if item.nodeid in known:
        return known[item.nodeid]
    limit = item.get_closest_marker("hil_timeout")
    if limit is not None and limit.args:
        return float(limit.args[0]) / 4
    if item.get_closest_marker("slow") or HIL in Path(item.path).resolve().parents:
        return 20.0
    return 0.0


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        known = _known()
        # A module's tests keep their order and stay together: module-scoped fixtures (a
        # bench, a kit, a page) carry state from one test to the next (seen: the remote
        # view's tests failed when a power cut ran before "the kit is online"). Modules
        # go longest test first. Stable, so every worker gets the same order (xdist checks).
        first = {id(it): n for n, it in enumerate(items)}
        longest: dict[str, float] = {}
        for it in items:
            mod = str(it.path)
            longest[mod] = max(longest.get(mod, 0.0), expected_seconds(it, known))
        items.sort(key=lambda i: (-longest[str(i.path)], str(i.path), first[id(i)]))
