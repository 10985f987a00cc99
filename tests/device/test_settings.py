"""tk.settings: settings changed through the shadow's desired state."""

from __future__ import annotations

import json

import pytest

APPLY = """
import json
from tk import settings, log
from tkfakes import out
out({"before": settings.current()})
with open("cases.json") as f:
    cases = json.load(f)
for desired in cases:
    cur, rejected = settings.apply(desired)
    out({"current": cur, "rejected": rejected, "level": log.level_name()})
"""


def apply(mpy, *cases) -> list[dict]:
    """Apply each desired ``settings`` value in turn in one process; before + results."""
    mpy.write("cases.json", json.dumps(list(cases)))
    return mpy.json(APPLY)


def test_default_is_info(mpy):
    [before, r] = apply(mpy, {})
    assert before == {"before": {"log_level": "info"}}
    assert r == {"current": {"log_level": "info"}, "rejected": {}, "level": "info"}


@pytest.mark.parametrize("level", ["debug", "info", "warn", "error"])
def test_valid_log_level_applied_and_reported(mpy, level):
    [_, r] = apply(mpy, {"log_level": level})
    assert r == {"current": {"log_level": level}, "rejected": {"log_level": None}, "level": level}


@pytest.mark.parametrize("value", ["verbose", "DEBUG", "", 10, None, ["debug"], {"l": 1}, True])
def test_invalid_value_refused_and_previous_kept(mpy, value):
    [_, first, second] = apply(mpy, {"log_level": "warn"}, {"log_level": value})
    assert first["level"] == "warn"
    assert second == {
        "current": {"log_level": "warn"},
        "rejected": {"log_level": "must be one of debug, error, info, warn"},
        "level": "warn",
    }


def test_unknown_key_refused_known_key_still_applied(mpy):
    [_, r] = apply(mpy, {"sample_rate": 5, "log_level": "debug"})
    assert r == {
        "current": {"log_level": "debug"},
        "rejected": {"sample_rate": "unknown setting", "log_level": None},
        "level": "debug",
    }


@pytest.mark.parametrize("desired", [None, "debug", [1], 3])
def test_settings_not_an_object(mpy, desired):
    [_, r] = apply(mpy, desired)
    assert r == {
        "current": {"log_level": "info"},
        "rejected": {"*": "settings must be an object"},
        "level": "info",
    }


def test_accepted_value_clears_an_earlier_rejection(mpy):
    [_, bad, good] = apply(mpy, {"log_level": "loud"}, {"log_level": "error"})
    assert bad["rejected"] == {"log_level": "must be one of debug, error, info, warn"}
    assert good["rejected"] == {"log_level": None}
    assert good["current"] == {"log_level": "error"}


def test_applied_level_filters_log_output(mpy):
    out = mpy("""
        from tk import settings
        from tk.log import Logger
        log = Logger("t")
        log.debug("hidden")
        settings.apply({"log_level": "debug"})
        log.debug("shown")
        settings.apply({"log_level": "error"})
        log.warn("hidden too")
        log.error("shown too")
    """)
    msgs = [line.split(" ", 2)[2] for line in out.splitlines()]
    assert msgs == ["t: shown", "t: shown too"]
