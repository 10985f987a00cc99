"""tk.backoff: full-jitter exponential backoff, on the unix port."""

from __future__ import annotations

import pytest

from .harness import parse_json_lines


def test_windows_double_from_base_to_cap_and_stay(mpy):
    r = mpy.one("""
        from tk.backoff import Backoff
        from tkfakes import out
        b = Backoff(1000, 20000)
        draws = [b.next() for _ in range(10)]
        out({"windows": [w for _, w in draws], "delays": [d for d, _ in draws],
             "attempt": b.attempt})
    """)
    assert r["windows"] == [1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000, 20000, 20000]
    assert r["attempt"] == 10
    for d, w in zip(r["delays"], r["windows"]):
        assert 0 <= d <= w


def test_window_reaches_cap_exactly_when_cap_is_a_power_of_two_multiple(mpy):
    r = mpy.one("""
        from tk.backoff import Backoff
        from tkfakes import out
        b = Backoff(250, 2000)
        out([b.next()[1] for _ in range(6)])
    """)
    assert r == [250, 500, 1000, 2000, 2000, 2000]


def test_base_equal_to_cap_is_a_constant_window(mpy):
    r = mpy.one("""
        from tk.backoff import Backoff
        from tkfakes import out
        b = Backoff(500, 500)
        out([b.next()[1] for _ in range(4)])
    """)
    assert r == [500, 500, 500, 500]


def test_window_stays_at_cap_after_many_attempts(mpy):
    r = mpy.one("""
        from tk.backoff import Backoff
        from tkfakes import out
        b = Backoff(1, 3600000)
        b.attempt = 10000      # a kit that has been offline for a long time
        out([b.window_ms(), b.next()[1], b.attempt])
    """)
    assert r == [3600000, 3600000, 10001]


def test_every_delay_within_window(mpy):
    r = mpy.one("""
        from tk.backoff import Backoff
        from tkfakes import out
        b = Backoff(100, 1600)
        bad = []
        for i in range(2000):
            if i % 7 == 0:
                b.reset()
            d, w = b.next()
            if not (0 <= d <= w) or w > 1600:
                bad.append((d, w))
        out(bad)
    """)
    assert r == []


def test_reset_returns_to_base(mpy):
    r = mpy.one("""
        from tk.backoff import Backoff
        from tkfakes import out
        b = Backoff(1000, 120000)
        for _ in range(5):
            b.next()
        before = b.window_ms()
        b.reset()
        out([before, b.attempt, b.window_ms(), b.next()[1], b.next()[1]])
    """)
    assert r == [32000, 0, 1000, 1000, 2000]


def test_delays_are_jittered(mpy):
    r = mpy.one("""
        from tk.backoff import Backoff
        from tkfakes import out
        b = Backoff(120000, 120000)
        out([b.next()[0] for _ in range(200)])
    """)
    assert len(r) == 200
    assert all(0 <= d <= 120000 for d in r)
    # Full jitter over [0, 120000]: 200 draws are nowhere near all equal, and spread.
    assert len(set(r)) > 150
    assert min(r) < 30000 and max(r) > 90000


def test_two_kits_started_together_draw_different_sequences(mpy):
    code = """
        from tk.backoff import Backoff
        from tkfakes import out
        b = Backoff(1000, 1000000)
        out([b.next()[0] for _ in range(20)])
    """
    procs = [mpy.spawn(code) for _ in range(2)]
    seqs = [parse_json_lines(mpy.finish(p))[0] for p in procs]
    assert len(seqs[0]) == len(seqs[1]) == 20
    assert seqs[0] != seqs[1]


def test_module_seeds_random_from_urandom(mpy):
    # With os.urandom returning the same bytes, two imports give the same sequence: the
    # seed comes from os.urandom (and not, say, from a clock both kits share).
    code = """
        import sys
        class FixedOs:
            @staticmethod
            def urandom(n):
                return b"\\x01\\x02\\x03\\x04"[:n]
        sys.modules["os"] = FixedOs
        import tk.backoff
        import random
        from tkfakes import out
        out([random.randint(0, 1 << 20) for _ in range(5)])
    """
    a = mpy.one(code)
    b = mpy.one(code)
    assert a == b


@pytest.mark.parametrize("base, cap", [(0, 1000), (-1, 1000), (1000, 999), (5, 0)])
def test_constructor_rejects_bad_parameters(mpy, base, cap):
    r = mpy.one(f"""
        from tk.backoff import Backoff
        from tkfakes import out, err
        try:
            Backoff({base}, {cap})
            out("accepted")
        except ValueError as e:
            out(err(e))
    """)
    assert r == ["ValueError", "backoff needs 0 < base <= cap"]


def test_jitter_off_waits_full_windows(mpy):
    r = mpy.one("""
        from tk.backoff import Backoff
        from tkfakes import out
        b = Backoff(100, 800, jitter=False)
        out([b.next() for _ in range(6)])
    """)
    assert r == [[100, 100], [200, 200], [400, 400], [800, 800], [800, 800], [800, 800]]


@pytest.mark.parametrize(
    "up_ms, peer_closed, reset",
    [
        (29999, False, False),  # not yet stable
        (30000, False, True),  # stable, ended on our side (time-out, error)
        (30000, True, False),  # closed by the broker: could be a kick fight
        (239999, True, False),  # a kick fight never lasts twice the cap
        (240000, True, True),  # longer: a broker restart after a quiet time
    ],
)
def test_session_ended_resets_only_after_a_stable_session(mpy, up_ms, peer_closed, reset):
    r = mpy.one(f"""
        from tk.backoff import Backoff
        from tkfakes import out
        b = Backoff(1000, 120000)
        for _ in range(4):
            b.next()
        did = b.session_ended({up_ms}, {peer_closed}, 30000)
        out([did, b.attempt, b.next()[1]])
    """)
    assert r == ([True, 0, 1000] if reset else [False, 4, 16000])
