# thingkit device package. See tk/main.py for the entry point.


def forget(names):
    """Drop modules of this package loaded for one task (boot, an update): with no
    other reference left their code objects and globals go back to the heap at the
    next collection. Interned names stay (MicroPython never frees qstrs).

    ``names`` is a tuple of short names (``forget(("app2", "outbox"))``). Clean-up paths
    call this when the heap may be exhausted, so it allocates nothing: a tuple of
    constants is a constant, loops over a tuple or dict use no heap, and no string is
    built and no exception raised.
    """
    import sys
    mods = sys.modules
    pkg = mods.get("tk")
    d = pkg.__dict__ if pkg is not None else None
    for name in names:
        if d is not None and name in d:
            del d[name]
        key = _key(mods, name)
        if key is not None:
            del mods[key]


def _key(mods, name):
    """The key "tk.<name>" of sys.modules, found without building the string."""
    n = len(name) + 3
    for k in mods:
        if len(k) == n and k.startswith("tk.") and k.endswith(name):
            return k
    return None
