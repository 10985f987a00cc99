"""Clean-up paths run when the heap is exhausted, so they allocate nothing.

``micropython.heap_lock()`` makes every heap allocation raise MemoryError: code that
completes under it allocated nothing."""

from __future__ import annotations


def test_forget_allocates_nothing(mpy):
    r = mpy.one("""
        import sys, micropython
        from tk import forget, clock, topics, drivers
        from tkfakes import out
        import tk.drivers.led
        before = [m for m in ("tk.clock", "tk.topics", "tk.drivers") if m in sys.modules]
        err = None
        micropython.heap_lock()
        try:
            forget(("clock", "topics", "not_loaded"))
            err = None
        except MemoryError as e:
            err = "MemoryError"
        micropython.heap_unlock()
        import tk
        out({"before": before, "err": err,
             "left": [m for m in ("tk.clock", "tk.topics") if m in sys.modules],
             "attrs": [a for a in ("clock", "topics") if a in tk.__dict__],
             "kept": "tk.drivers" in sys.modules})
    """)
    assert r == {
        "before": ["tk.clock", "tk.topics", "tk.drivers"],
        "err": None,
        "left": [],
        "attrs": [],
        "kept": True,
    }


def test_forgetting_app2_allocates_nothing(mpy):
    r = mpy.one("""
        import sys, micropython
        from tk import device
        import tk.drivers.led, tk.drivers.button, tk.app2, tk.outbox
        from tkfakes import out
        err = None
        micropython.heap_lock()
        try:
            device._forget_app2()
            err = None
        except MemoryError:
            err = "MemoryError"
        micropython.heap_unlock()
        out({"err": err, "left": sorted(m for m in sys.modules
                                        if m.startswith("tk.drivers") or m in ("tk.app2", "tk.outbox"))})
    """)
    assert r == {"err": None, "left": []}


def test_a_log_line_without_heap_is_dropped_not_raised(mpy):
    out = mpy("""
        import micropython
        from tk.log import Logger
        log = Logger("device")
        args = (OSError(5),)  # a call's argument tuple is made by the caller
        ok = None  # globals set under the lock must exist already (a dict may grow)
        micropython.heap_lock()
        try:
            log._emit(30, "W", "session ended: %r", args)
            ok = True
        except MemoryError:
            ok = False
        micropython.heap_unlock()
        print("OK" if ok else "RAISED")
    """)
    assert out.strip().splitlines()[-1] == "OK"
    assert "W device (line dropped: out of memory)" in out
