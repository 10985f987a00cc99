"""Settings a person or the cloud may change through the shadow's desired state.

Desired: {"settings": {"log_level": "debug"}}. Each value is checked; a valid one is
applied at once and reported back in reported.settings, an invalid one is refused with
a reason in reported.settings_rejected and the device keeps its previous value.
"""
from tk import log


def _log_level(v):
    if not isinstance(v, str) or v not in log.LEVELS:
        return "must be one of %s" % ", ".join(sorted(log.LEVELS))
    log.set_level(v)
    return None


# name -> (apply(value) -> error or None, read() -> current value)
_TABLE = {
    "log_level": (_log_level, log.level_name),
}


def current():
    return {k: read() for k, (_, read) in _TABLE.items()}


def apply(desired):
    """Apply a desired ``settings`` object; return (current, rejected) for the report.

    ``rejected`` maps each refused key to its reason; keys accepted this time are set
    to None so an earlier rejection is cleared from the shadow.
    """
    rejected = {}
    if not isinstance(desired, dict):
        return current(), {"*": "settings must be an object"}
    for k, v in desired.items():
        entry = _TABLE.get(k)
        if entry is None:
            rejected[k] = "unknown setting"
            continue
        err = entry[0](v)
        rejected[k] = err
    return current(), rejected
