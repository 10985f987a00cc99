"""What a HIL test may ask of a device under test, whatever the device is.

Drivers implement tiny interfaces; a :class:`Dut` (device under test) puts them
together; a :class:`Target` knows how to make one and how the bench reaches it. Tests
only see the :class:`Dut` API and never ask which target they have::

    kit = make_kit(bench)          # provisioned, powered off
    kit.power_on()
    kit.wait_for(r"I device: mqtt connected", 30)
    kit.write_file("config.json", data)   # the device filesystem, sim or board
    kit.power_off()                       # a power cut: no goodbye

Capabilities name what a target can do beyond that API (``virtual_kit``: the sim's
flash directory, simulated hardware and RTC; ``power_cut``: a real power switch). A test
declares what it needs with ``@pytest.mark.capability(...)`` and is skipped with the
reason on a target that lacks it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from host_tools.boards.registry import Board


class NotSupportedError(Exception):
    """A target or board lacks something a test or tool asked for."""

    def __init__(self, what: str, missing: str) -> None:
        super().__init__(f"{what} cannot {missing}")
        self.what, self.missing = what, missing


# -- driver interfaces -------------------------------------------------------------------
@runtime_checkable
class Console(Protocol):
    """What the device prints (its serial console), kept in one log file per device."""

    @property
    def log_path(self) -> Path: ...

    def text(self, since_boot: bool = True) -> str: ...

    def mark_boot(self, note: str) -> None: ...


@runtime_checkable
class Power(Protocol):
    """Power to the device. ``off`` is a cut: no clean shutdown, no MQTT DISCONNECT."""

    def on(self) -> None: ...

    def off(self) -> None: ...

    def is_on(self) -> bool: ...


@runtime_checkable
class Reset(Protocol):
    """Restart the firmware without a power cycle."""

    def reset(self) -> None: ...


@runtime_checkable
class Flasher(Protocol):
    """Write a firmware image to the device (esptool on a board)."""

    def flash(self) -> str: ...


@runtime_checkable
class Deployer(Protocol):
    """The device filesystem: application code, dependencies, identity and config."""

    def deploy_firmware(self) -> str: ...

    def read_file(self, path: str) -> bytes: ...

    def write_file(self, path: str, data: bytes) -> None: ...


# -- the device under test --------------------------------------------------------------
@dataclass
class Endpoint:
    """How a device reaches a service of the bench: the name it puts in its config (and
    checks in the server certificate), the address a test server must listen on, and
    the port."""

    name: str
    listen: str
    port: int


class Dut:
    """A device under test: console, power, reset and filesystem, over drivers.

    Subclasses supply the drivers; the methods below are all a test uses. Times are host
    seconds; patterns are regular expressions matched line-wise (``re.MULTILINE``).
    """

    thing: str
    board: Board
    artifacts_name: str

    # Drivers, set by the target.
    console_driver: Console
    power_driver: Power
    reset_driver: Reset
    deployer: Deployer

    # -- console -----------------------------------------------------------------------
    @property
    def console_log(self) -> Path:
        return self.console_driver.log_path

    def console(self, since_boot: bool = True) -> str:
        return self.console_driver.text(since_boot)

    def wait_for(self, pattern: str, timeout: float, since_boot: bool = True) -> re.Match:
        """Wait for console output matching ``pattern``.

        Raises:
            TimeoutError: naming the pattern, the console tail and the console log path.
        """
        return wait_console(self, pattern, timeout, since_boot)

    # -- power -------------------------------------------------------------------------
    def power_on(self) -> None:
        self.console_driver.mark_boot("power on")
        self.power_driver.on()

    def power_off(self) -> None:
        self.power_driver.off()

    def is_running(self) -> bool:
        return self.power_driver.is_on()

    def reset(self) -> None:
        self.console_driver.mark_boot("reset")
        self.reset_driver.reset()

    # -- filesystem ----------------------------------------------------------------------
    def read_file(self, path: str) -> bytes:
        return self.deployer.read_file(path)

    def write_file(self, path: str, data: bytes) -> None:
        """Write a file on the device filesystem. Do it while the device is off: the
        firmware reads its files at boot (a board's firmware is stopped to write)."""
        self.deployer.write_file(path, data)

    def config(self) -> dict:
        return json.loads(self.read_file("config.json"))

    def edit_config(self, change: Callable[[dict], Any]) -> dict:
        """Read config.json, let ``change`` edit it in place, write it back."""
        doc = self.config()
        change(doc)
        self.write_file("config.json", (json.dumps(doc, indent=1) + "\n").encode())
        return doc


def wait_console(dut: Dut, pattern: str, timeout: float, since_boot: bool = True) -> re.Match:
    """Poll ``dut``'s console for ``pattern``; a time-out names what was waited for."""
    rx = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while True:
        m = rx.search(dut.console(since_boot))
        if m:
            return m
        stopped = not dut.is_running()
        if stopped or time.monotonic() > deadline:
            if stopped:
                time.sleep(0.1)
                m = rx.search(dut.console(since_boot))
                if m:
                    return m
            tail = "\n".join(dut.console(since_boot).splitlines()[-15:])
            why = "stopped before" if stopped else f"within {timeout:.0f} s: no"
            raise TimeoutError(
                f"kit {dut.thing}: {why} console output matching {pattern!r}; "
                f"console {dut.console_log}; tail:\n{tail}"
            )
        time.sleep(0.05)


# -- targets ----------------------------------------------------------------------------
@dataclass
class Step:
    """One move of the strategy: ``run(dut)`` brings the device to state ``reaches``."""

    reaches: str
    run: Callable[[Dut], str]


@dataclass
class TargetInfo:
    """What the report header and skip reasons say about a target."""

    name: str
    board: str
    description: str
    capabilities: frozenset[str] = field(default_factory=frozenset)


class Target:
    """Makes devices under test and tells the bench how they reach it.

    Subclasses: ``sim`` (virtual kits on this host) and ``serial`` (boards on serial
    ports). Registered by name in :data:`hil_tests.targets.TARGETS`.
    """

    name = "?"
    board: Board
    capabilities: frozenset[str] = frozenset()

    def info(self) -> TargetInfo:
        raise NotImplementedError

    def missing(self, needs: set[str]) -> set[str]:
        """The capabilities in ``needs`` this target lacks."""
        return set(needs) - set(self.capabilities)

    # -- the bench, as devices see it ------------------------------------------------------
    def prepare_bench(self, bench_root: Path) -> None:
        """Called before a bench rooted there starts (e.g. broker certificate names)."""

    def expose(self, bench: Any) -> tuple[Endpoint, Endpoint]:
        """(MQTT endpoint, NTP endpoint) of ``bench`` as the device reaches them."""
        raise NotImplementedError

    def device_endpoint(self) -> Endpoint:
        """Where a test's own server must listen for the device to reach it, and the
        name the device must use (port 0: the test picks one)."""
        raise NotImplementedError

    # -- devices ---------------------------------------------------------------------------
    def steps(self, dut_root: Path, bench: Any, thing: str, config: dict) -> tuple[Dut, list[Step]]:
        """A new device (powered off) and the steps that make it flashed and provisioned."""
        raise NotImplementedError

    def bundle_steps(
        self, dut_root: Path, bundle: Path, thing: str, config: dict
    ) -> tuple[Dut, list[Step]]:
        """Like :meth:`steps`, but the identity and config come from a device bundle made
        for another cloud (``thingkit validate --cloud remote``): nothing is registered on
        a bench."""
        raise NotImplementedError

    def close(self) -> None:
        """Release ports, relays and threads (end of session)."""
