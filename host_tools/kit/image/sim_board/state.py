"""What the virtual kit's parts sense, and where they sit on the board.

    from sim_board import state as sim_state
    sim_state.poll()                       # pick up a changed state file (cheap)
    sim_state.value(comp, "temperature", 22.0)
    sim_state.present(comp)                # False once listed in "unplugged"

State file: $TK_SIM_HW, JSON keyed by component id, written by the host (the kit runner
replaces it atomically: write a temporary file, then rename)::

    {"env": {"temperature": 21.5, "humidity": 40.0, "pressure": 1013.25},
     "imu": {"accel_z": 1.0}, "boot_button": {"pressed": true},
     "adc0": {"voltage": 1.2}, "mcu_temp": {"temperature": 45.0},
     "unplugged": ["env"]}

Besides readings, a component's object may hold faults for the emulators: "chip_id"
(an id register that reads another value) and "bad_crc" (SHT31: corrupt checksums).
A value that is missing gets the emulator's default, moved to the middle of the
reading's board "range" if it falls outside it.

Board: $TK_SIM_BOARD (default "board.json" in the cwd), read once, maps component ids to
buses, addresses and pins.

Polling: a stat allocates about 160 bytes on the unix port (its 10-tuple and a path
string), so the file is stat'ed at most every $TK_SIM_HW_POLL_MS ms (default 500; 0: on
every access) and parsed again only when its inode, size or mtime changed (mtime has
1 s resolution: writers should replace the file, which gives it a new inode). reload()
forces both. ``gen`` counts
the parses: emulators compare it to redo their work only when the state changed.
"""
import json
import os
import time

_EMPTY = {}  # shared, never written: a default that allocates nothing

_path = os.getenv("TK_SIM_HW") or None
_poll_ms = int(os.getenv("TK_SIM_HW_POLL_MS") or 500)
_data = _EMPTY
_unplugged = ()
_stamp = None  # (inode, size, mtime) of the parsed file
_t_stat = None  # ticks_ms of the last stat
gen = 0  # bumped on every parse
_board = None
_comps = None  # the board's component dicts (cached)


def poll():
    """Re-read the state file if it changed; at most one stat per poll interval."""
    global _t_stat
    if _path is None:
        return
    now = time.ticks_ms()
    if _t_stat is not None and time.ticks_diff(now, _t_stat) < _poll_ms:
        return
    _t_stat = now
    try:
        st = os.stat(_path)
    except OSError:
        if _stamp is not None:
            _load(None, None)  # the file went away: defaults again
        return
    s = _stamp
    if s is None or s[0] != st[1] or s[1] != st[6] or s[2] != st[8]:
        _load(_path, (st[1], st[6], st[8]))


def reload():
    """Read the state file now (tests: after writing it in the same process)."""
    global _t_stat
    _t_stat = None
    if _path is not None:
        try:
            st = os.stat(_path)
            _load(_path, (st[1], st[6], st[8]))
        except OSError:
            _load(None, None)


def _load(path, stamp):
    global _data, _unplugged, _stamp, gen
    data = _EMPTY
    if path is not None:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return  # half-written or gone: keep the old state, try again next poll
        if not isinstance(data, dict):
            data = _EMPTY
    _data = data
    u = data.get("unplugged")
    _unplugged = tuple(u) if isinstance(u, list) else ()
    _stamp = stamp
    gen += 1


def comp_state(cid):
    """The state file's object for a component (never None)."""
    s = _data.get(cid, _EMPTY)
    return s if isinstance(s, dict) else _EMPTY


def present(comp):
    return comp["id"] not in _unplugged


def value(comp, name, default):
    """A reading's value from the state file, else ``default`` (kept inside the range)."""
    v = comp_state(comp["id"]).get(name)
    if v is None:
        v = default
        spec = comp.get("readings", _EMPTY).get(name)
        rng = spec.get("range") if isinstance(spec, dict) else None
        if rng and not rng[0] <= v <= rng[1]:
            v = (rng[0] + rng[1]) / 2
    return v


# -- the board ---------------------------------------------------------------------------
def board():
    """The board's buses and components, with only the fields the sim uses (the full
    definition, kept twice in RAM, would cost the kit's heap several KB)."""
    global _board
    if _board is None:
        path = os.getenv("TK_SIM_BOARD") or "board.json"
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            doc = _EMPTY
        buses = doc.get("buses")
        comps = doc.get("components")
        _board = {"buses": buses if isinstance(buses, dict) else {},
                  "components": [_slim(c) for c in comps if isinstance(c, dict)]
                  if isinstance(comps, list) else []}
    return _board


_KEEP = ("id", "driver", "pin", "bus", "address", "active_low")


def _slim(comp):
    c = {k: comp[k] for k in _KEEP if k in comp}
    readings = comp.get("readings")
    if isinstance(readings, dict):
        c["readings"] = {n: {"range": s["range"]} for n, s in readings.items()
                         if isinstance(s, dict) and s.get("range")}
    return c


def components():
    global _comps
    if _comps is None:
        _comps = [c for c in board()["components"] if isinstance(c, dict) and "id" in c]
    return _comps


def comp_at_pin(n):
    for c in components():
        if c.get("pin") == n:
            return c
    return None


def comp_by_driver(driver):
    for c in components():
        if c.get("driver") == driver:
            return c
    return None


def comps_on_bus(bus_id):
    """{address: component} for the components on the board's I2C bus ``bus_id``."""
    names = [name for name, b in board()["buses"].items()
             if isinstance(b, dict) and b.get("id") == bus_id]
    out = {}
    for c in components():
        if c.get("bus") in names and isinstance(c.get("address"), int):
            out[c["address"]] = c
    return out
