"""HIL fixtures: a bench, devices under test on it, and an operator's view of the broker.

- ``bench``: one bench for the session; ``own_bench``: a bench for one test that breaks
  it (broker stopped, NTP blocked, ...).
- ``make_kit(bench, thing=None, state="provisioned", **config)``: a device of the
  configured target, walked by its strategy to ``state`` (``"online"``: powered on and
  shadow synced). ``config`` is what provisioning writes (``backoff_base_ms=200``, ...)
  plus, on the virtual kit, ``heap``/``mode``/``board``. Every kit is powered off at
  teardown.
- ``observer``: every message on the session bench, and shadow requests as the operator.
- ``hil_target``: the target itself (where a test's own server must listen, ...).

Each fixture registers what it made with the test's artifacts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil_tests.plugin.artifacts import Artifacts
from hil_tests.plugin.session import ARTIFACTS, hil_session
from hil_tests.targets.base import Dut, Target
from hil_tests.targets.strategy import Strategy
from host_tools import device_deps
from host_tools.bench.bench import Bench
from host_tools.bench.observer import Observer


def _artifacts(request: pytest.FixtureRequest) -> Artifacts | None:
    return request.node.stash.get(ARTIFACTS, None)


@pytest.fixture(scope="session")
def hil_target(pytestconfig: pytest.Config) -> Target:
    return hil_session(pytestconfig).require_target()


@pytest.fixture(scope="session", autouse=True)
def _device_packages() -> None:
    device_deps.fetch()


def _start_bench(root: Path, target: Target) -> Bench:
    target.prepare_bench(root)
    b = Bench(root)
    b.up()
    return b


@pytest.fixture(scope="session")
def bench(tmp_path_factory: pytest.TempPathFactory, hil_target: Target) -> Iterator[Bench]:
    """One bench for the session; tests that stop or skew it use ``own_bench``."""
    b = _start_bench(tmp_path_factory.mktemp("bench"), hil_target)
    yield b
    b.down()


@pytest.fixture(autouse=True)
def _bench_transcript(request: pytest.FixtureRequest) -> None:
    """Mark where the session bench's broker log stood when this test started."""
    art = _artifacts(request)
    if art is not None and "bench" in request.fixturenames:
        art.add_bench(request.getfixturevalue("bench"))


@pytest.fixture
def own_bench(
    tmp_path: Path, hil_target: Target, request: pytest.FixtureRequest
) -> Iterator[Bench]:
    """A bench for one test that breaks it (broker stopped, NTP blocked, ...)."""
    b = _start_bench(tmp_path / "bench", hil_target)
    art = _artifacts(request)
    if art is not None:
        art.add_bench(b, from_start=True)
    yield b
    b.down()


class KitFactory:
    """Make devices of the configured target; every one is powered off at teardown."""

    def __init__(self, target: Target, root: Path, artifacts: Artifacts | None = None) -> None:
        self.target = target
        self.root = root
        self.artifacts = artifacts
        self.kits: list[Dut] = []

    def __call__(
        self, bench: Bench, thing: str | None = None, state: str = "provisioned", **config: Any
    ) -> Any:
        thing = thing or f"hil-{uuid.uuid4().hex[:8]}"
        dut, steps = self.target.steps(self.root, bench, thing, config)
        dut.strategy = Strategy(dut, steps)  # type: ignore[attr-defined]
        self.kits.append(dut)
        if self.artifacts is not None:
            self.artifacts.add_kit(dut)
        dut.strategy.to(state)  # type: ignore[attr-defined]
        return dut

    def close(self) -> None:
        """Power every kit off (and release its port); the first error is raised after."""
        errors: list[BaseException] = []
        for k in self.kits:
            for step in (k.power_off, getattr(k, "close", None)):
                if step is None:
                    continue
                try:
                    step()
                except Exception as exc:  # noqa: BLE001  (finish the others first)
                    errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def make_kit(
    tmp_path: Path, hil_target: Target, request: pytest.FixtureRequest
) -> Iterator[KitFactory]:
    f = KitFactory(hil_target, tmp_path / "kits", _artifacts(request))
    yield f
    f.close()


@pytest.fixture
def observer(bench: Bench, request: pytest.FixtureRequest) -> Iterator[Observer]:
    with Observer(bench) as obs:
        art = _artifacts(request)
        if art is not None:
            art.add_observer(obs)
        yield obs
