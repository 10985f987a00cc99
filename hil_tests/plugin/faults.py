"""HIL fixtures for fault injection: a proxy between the kit and the broker, kits behind
it, and a telemetry ledger that survives broker restarts.

- ``fault_proxy``: a :class:`~host_tools.faults.FaultProxy` in front of the test's bench
  broker (``own_bench`` if the test uses it, else the session ``bench``); stopped at
  teardown, and bounded by its own lifetime in any case.
- ``proxied_kit(state="provisioned", **config)``: ``make_kit`` on that bench with the
  kit's config ``port`` set to the proxy's, so every byte of the kit's MQTT connection
  passes through the proxy (TLS untouched: the server name and certificates are checked
  as without it).
- :class:`~host_tools.bench.ledger.TelemetryLedger`: every App #2 message of one thing, by (boot, seq), from a
  persistent-session subscriber that reconnects by itself, so a broker restart loses
  nothing on the receiving side either.

The proxy listens on 127.0.0.1, where only a device on this host (the virtual kit)
reaches it: tests using it declare the ``virtual_kit`` capability.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hil_tests.plugin.fixtures import KitFactory
from hil_tests.plugin.session import ARTIFACTS
from host_tools.bench.bench import Bench
from host_tools.bench.ledger import TelemetryLedger
from host_tools.faults import FaultProxy

PROXY_LIFETIME_S = 900.0  # longer than any HIL test; the fixture stops it sooner
ONLINE_RX = re.compile(r"^\d+ I device: shadow synced: connected=true", re.MULTILINE)


def _test_bench(request: pytest.FixtureRequest) -> Bench:
    name = "own_bench" if "own_bench" in request.fixturenames else "bench"
    return request.getfixturevalue(name)


@pytest.fixture
def fault_proxy(request: pytest.FixtureRequest) -> Iterator[FaultProxy]:
    """A fault proxy in front of this test's bench broker."""
    bench = _test_bench(request)
    with FaultProxy(bench.port, lifetime_s=PROXY_LIFETIME_S) as proxy:
        yield proxy
    assert proxy.stopped.is_set(), "fault proxy still running after its test"


@pytest.fixture
def proxied_kit(
    request: pytest.FixtureRequest, fault_proxy: FaultProxy, make_kit: KitFactory
) -> Any:
    """``proxied_kit(state="provisioned", thing=None, **config)``: a kit whose broker
    connection goes through ``fault_proxy``."""
    bench = _test_bench(request)

    def make(state: str = "provisioned", thing: str | None = None, **config: Any) -> Any:
        return make_kit(bench, thing=thing, state=state, port=fault_proxy.port, **config)

    return make


# -- watching the kit ------------------------------------------------------------------------
def online_count(kit: Any) -> int:
    """How many times this boot of the kit has synced its shadow online (one per session)."""
    return len(ONLINE_RX.findall(kit.console()))


def wait_online_again(kit: Any, before: int, timeout: float) -> int:
    """Wait until the kit has synced online more often than ``before``; return the count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = online_count(kit)
        if n > before:
            return n
        time.sleep(0.1)
    tail = "\n".join(kit.console().splitlines()[-15:])
    raise TimeoutError(
        f"kit {kit.thing} did not come back online within {timeout:.0f} s "
        f"(sessions so far: {before}); console {kit.console_log}; tail:\n{tail}"
    )


@pytest.fixture
def telemetry_ledger(request: pytest.FixtureRequest) -> Any:
    """``telemetry_ledger(thing)``: a :class:`TelemetryLedger` on this test's bench,
    closed at teardown; its messages go to the test's artifacts."""
    bench = _test_bench(request)
    made: list[TelemetryLedger] = []

    def make(thing: str) -> TelemetryLedger:
        led = TelemetryLedger(bench, thing).__enter__()
        made.append(led)
        art = request.node.stash.get(ARTIFACTS, None)
        # The session observer already records these messages for the artifacts.
        twice = "observer" in request.fixturenames and "own_bench" not in request.fixturenames
        if art is not None and not twice:
            art.add_observer(led)
        return led

    yield make
    for led in made:
        led.close()
