"""tk.settings: settings changed through the shadow's desired state."""

from __future__ import annotations

import json

import pytest

APPLY = """
import json
from tk import settings, log
from tkfakes import out
settings.configure(["env", "imu", "led"])
out({"before": settings.current()})
with open("cases.json") as f:
    cases = json.load(f)
for desired in cases:
    cur, rejected = settings.apply(desired)
    out({"current": cur, "rejected": rejected, "level": log.level_name()})
"""


DEFAULTS = {
    "log_level": "info",
    "components": "all",
    "telemetry_interval_s": 10,
    "diag_interval_s": 60,
}


def cur(level: str, **other: object) -> dict:
    """The reported settings: defaults, this log level, any other changes."""
    return {**DEFAULTS, "log_level": level, **other}


def apply(mpy, *cases) -> list[dict]:
    """Apply each desired ``settings`` value in turn in one process; before + results."""
    mpy.write("cases.json", json.dumps(list(cases)))
    return mpy.json(APPLY)


def test_default_is_info(mpy):
    [before, r] = apply(mpy, {})
    assert before == {"before": cur("info")}
    assert r == {"current": cur("info"), "rejected": {}, "level": "info"}


@pytest.mark.parametrize("level", ["debug", "info", "warn", "error"])
def test_valid_log_level_applied_and_reported(mpy, level):
    [_, r] = apply(mpy, {"log_level": level})
    assert r == {"current": cur(level), "rejected": {"log_level": None}, "level": level}


@pytest.mark.parametrize("value", ["verbose", "DEBUG", "", 10, None, ["debug"], {"l": 1}, True])
def test_invalid_value_refused_and_previous_kept(mpy, value):
    [_, first, second] = apply(mpy, {"log_level": "warn"}, {"log_level": value})
    assert first["level"] == "warn"
    assert second == {
        "current": cur("warn"),
        "rejected": {"log_level": "must be one of debug, error, info, warn"},
        "level": "warn",
    }


def test_unknown_key_refused_known_key_still_applied(mpy):
    [_, r] = apply(mpy, {"sample_rate": 5, "log_level": "debug"})
    assert r == {
        "current": cur("debug"),
        "rejected": {"sample_rate": "unknown setting", "log_level": None},
        "level": "debug",
    }


@pytest.mark.parametrize("desired", [None, "debug", [1], 3])
def test_settings_not_an_object(mpy, desired):
    [_, r] = apply(mpy, desired)
    assert r == {
        "current": cur("info"),
        "rejected": {"*": "settings must be an object"},
        "level": "info",
    }


def test_accepted_value_clears_an_earlier_rejection(mpy):
    [_, bad, good] = apply(mpy, {"log_level": "loud"}, {"log_level": "error"})
    assert bad["rejected"] == {"log_level": "must be one of debug, error, info, warn"}
    assert good["rejected"] == {"log_level": None}
    assert good["current"] == cur("error")


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


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("telemetry_interval_s", 5),
        ("telemetry_interval_s", 0.5 + 0.5),
        ("diag_interval_s", 10),
        ("components", ["env", "led"]),
        ("components", "all"),
    ],
)
def test_other_settings_applied(mpy, key, value):
    [_, r] = apply(mpy, {key: value})
    assert r["current"] == cur("info", **{key: value})
    assert r["rejected"] == {key: None}


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("telemetry_interval_s", 0, "must be between 1 and 3600"),
        ("telemetry_interval_s", 3601, "must be between 1 and 3600"),
        ("telemetry_interval_s", "5", "must be a number"),
        ("telemetry_interval_s", True, "must be a number"),
        ("diag_interval_s", 5, "must be between 10 and 86400"),
        ("components", ["env", "gps"], "unknown component(s): gps"),
        ("components", "some", 'must be "all" or a list of component ids'),
        ("components", [1], 'must be "all" or a list of component ids'),
    ],
)
def test_other_settings_refused_and_previous_kept(mpy, key, value, why):
    [_, r] = apply(mpy, {key: value})
    assert r["current"] == cur("info")
    assert r["rejected"] == {key: why}


ENABLED = """
from tk import settings
from tkfakes import out
settings.configure(["env", "imu", "led"], 7, 30)
out([settings.value("telemetry_interval_s"), settings.value("diag_interval_s"),
     settings.enabled_components()])
settings.apply({"components": ["led", "env"]})
out(settings.enabled_components())
"""


def test_configure_defaults_and_enabled_components_in_board_order(mpy):
    first, second = mpy.json(ENABLED)
    assert first == [7, 30, ["env", "imu", "led"]]
    assert second == ["env", "led"]
