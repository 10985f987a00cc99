"""Settings a person or the cloud may change through the shadow (IoT Lens BP 14.4).

Desired: {"settings": {"telemetry_interval_s": 5, "components": ["env"], ...}}. Each
value is checked; a valid one is applied at once and reported back in
reported.settings, an invalid one is refused with a reason in
reported.settings_rejected and the device keeps its previous value.

    log_level             debug | info | warn | error
    telemetry_interval_s  App #2 interval, 1..3600 s
    diag_interval_s       diagnostics interval, 10..86400 s
    components            list of component ids App #2 reads, or "all"
"""
from tk import log

_values = {"telemetry_interval_s": 10, "diag_interval_s": 60, "components": "all"}
_known = []  # component ids of the board


def configure(known_components, telemetry_interval_s=10, diag_interval_s=60):
    """Set the board's component ids and the provisioned defaults (at boot)."""
    global _known
    _known = list(known_components)
    _values["telemetry_interval_s"] = telemetry_interval_s
    _values["diag_interval_s"] = diag_interval_s


def _number(lo, hi):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return "must be a number"
        if v < lo or v > hi:
            return "must be between %s and %s" % (lo, hi)
        return None
    return check


def _log_level(v):
    if not isinstance(v, str) or v not in log.LEVELS:
        return "must be one of %s" % ", ".join(sorted(log.LEVELS))
    return None


def _components(v):
    if v == "all":
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        return 'must be "all" or a list of component ids'
    unknown = [x for x in v if x not in _known]
    if unknown:
        return "unknown component(s): %s" % ", ".join(unknown)
    return None


_CHECKS = {
    "log_level": _log_level,
    "telemetry_interval_s": _number(1, 3600),
    "diag_interval_s": _number(10, 86400),
    "components": _components,
}


def value(name):
    if name == "log_level":
        return log.level_name()
    return _values[name]


def enabled_components():
    c = _values["components"]
    return list(_known) if c == "all" else [x for x in _known if x in c]


def current():
    return {k: value(k) for k in _CHECKS}


def apply(desired):
    """Apply a desired ``settings`` object; return (current, rejected) for the report.

    ``rejected`` maps each refused key to its reason; keys accepted this time are set
    to None so an earlier rejection is cleared from the shadow.
    """
    if not isinstance(desired, dict):
        return current(), {"*": "settings must be an object"}
    rejected = {}
    for k, v in desired.items():
        check = _CHECKS.get(k)
        if check is None:
            rejected[k] = "unknown setting"
            continue
        err = check(v)
        if err is None:
            if k == "log_level":
                log.set_level(v)
            else:
                _values[k] = v
        rejected[k] = err
    return current(), rejected
