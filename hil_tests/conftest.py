"""HIL fixtures: a bench, virtual kits on it, and an operator's view of the broker.

The target is chosen by configuration (``--target sim``, the default); tests never
branch on which target they have. Only the virtual kit exists so far: other targets
skip with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools import device_deps
from host_tools.bench.bench import Bench
from host_tools.bench.observer import Observer
from host_tools.kit.provision import create_sim_kit
from host_tools.kit.sim import SimKit


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("thingkit HIL")
    g.addoption(
        "--target",
        default="sim",
        choices=["sim", "serial"],
        help="sim: virtual kit (default); serial: a board on --port",
    )
    g.addoption("--port", default=None, help="pyserial URL of the board (serial target)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--target") == "sim":
        return
    skip = pytest.mark.skip(
        reason="serial target: not implemented yet (HIL on real boards is "
        "its own issue); run with --target sim"
    )
    for item in items:
        if "hil_tests" in item.nodeid:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _device_packages() -> None:
    device_deps.fetch()


@pytest.fixture(scope="session")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    """One bench for the session; tests that stop or skew it use ``own_bench``."""
    b = Bench(tmp_path_factory.mktemp("bench"))
    b.up()
    yield b
    b.down()


@pytest.fixture
def own_bench(tmp_path: Path) -> Iterator[Bench]:
    """A bench for one test that breaks it (broker stopped, NTP blocked, ...)."""
    b = Bench(tmp_path / "bench")
    b.up()
    yield b
    b.down()


class KitFactory:
    """Make provisioned virtual kits; every kit is powered off at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.kits: list[SimKit] = []

    def __call__(self, bench: Bench, thing: str | None = None, **config: object) -> SimKit:
        thing = thing or f"hil-{uuid.uuid4().hex[:8]}"
        kit = create_sim_kit(bench, self.root, thing, **config)
        kit.thing = thing  # type: ignore[attr-defined]
        self.kits.append(kit)
        return kit

    def close(self) -> None:
        for k in self.kits:
            k.power_off()


@pytest.fixture
def make_kit(tmp_path: Path) -> Iterator[KitFactory]:
    f = KitFactory(tmp_path / "kits")
    yield f
    f.close()


@pytest.fixture
def observer(bench: Bench) -> Iterator[Observer]:
    with Observer(bench) as obs:
        yield obs
