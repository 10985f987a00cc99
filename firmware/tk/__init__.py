# thingkit device package. See tk/main.py for the entry point.


def forget(*names):
    """Drop modules of this package loaded for one task (boot, an update): with no
    other reference left their code objects and globals go back to the heap at the
    next collection. Interned names stay (MicroPython never frees qstrs)."""
    import sys
    for name in names:
        sys.modules.pop("tk." + name, None)
        try:
            delattr(sys.modules["tk"], name)
        except (AttributeError, KeyError):  # not loaded
            pass
