"""The virtual kit as a HIL target: thingkit's firmware on the MicroPython unix port.

Everything runs on this host and talks to the bench on 127.0.0.1. One step makes a kit
flashed and provisioned (:func:`host_tools.kit.provision.create_sim_kit`, the same path
``thingkit kit create`` takes); power is the process; the console is its log file; the
flash filesystem is a directory.

Beyond the common :class:`Dut` API a virtual kit has the capabilities ``virtual_kit``
(its flash directory, ``set_hw``/``unplug``, ``set_time``: reached through the SimKit it
wraps), ``live_fs`` (files written while it runs are seen by the firmware),
``power_cut`` and ``rtc_set``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from hil_tests.targets.base import Dut, Endpoint, Step, Target, TargetInfo
from host_tools.boards.registry import Board, load_board
from host_tools.kit.provision import create_sim_kit
from host_tools.kit.sim import DEFAULT_HEAP, SimKit

SIM_CAPABILITIES = frozenset({"virtual_kit", "live_fs", "power_cut", "rtc_set", "sim_hw"})


class _SimConsole:
    def __init__(self, dut: SimDut) -> None:
        self.dut = dut

    @property
    def log_path(self) -> Path:
        return self.dut.kit.console_log

    def text(self, since_boot: bool = True) -> str:
        return self.dut.kit.console(since_boot)

    def mark_boot(self, note: str) -> None:
        """SimKit.power_on writes its own power-on mark."""


class _SimPower:
    def __init__(self, dut: SimDut) -> None:
        self.dut = dut

    def on(self) -> None:
        self.dut.kit.power_on()

    def off(self) -> None:
        self.dut.kit.power_off()

    def is_on(self) -> bool:
        return self.dut.kit.is_running()

    def reset(self) -> None:
        self.dut.kit.reset()


class _SimFiles:
    """The flash filesystem is a directory: read and write it directly."""

    def __init__(self, dut: SimDut) -> None:
        self.dut = dut

    def _path(self, path: str) -> Path:
        p = (self.dut.kit.flash / path.lstrip("/")).resolve()
        if self.dut.kit.flash.resolve() not in p.parents:
            raise ValueError(f"{path!r} is outside the device filesystem")
        return p

    def deploy_firmware(self) -> str:
        return ", ".join(self.dut.kit.install_firmware())

    def read_file(self, path: str) -> bytes:
        return self._path(path).read_bytes()

    def write_file(self, path: str, data: bytes) -> None:
        p = self._path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(p)


class SimDut(Dut):
    """A virtual kit. Attributes the common API lacks (``flash``, ``set_hw``,
    ``set_time``, ...) are the wrapped :class:`SimKit`'s: tests that use them declare the
    ``virtual_kit`` capability."""

    def __init__(self, kit: SimKit, thing: str, board: Board) -> None:
        self.kit = kit
        self.thing = thing
        self.board = board
        self.artifacts_name = thing
        self.console_driver = _SimConsole(self)
        self.power_driver = _SimPower(self)
        self.reset_driver = self.power_driver
        self.deployer = _SimFiles(self)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes SimDut lacks: the SimKit's own (flash, set_hw, ...).
        if name == "kit":
            raise AttributeError(name)
        return getattr(self.kit, name)

    # SimKit's own power and console calls keep their exact behaviour and arguments.
    def power_on(self, *args: Any, **kwargs: Any) -> int:
        return self.kit.power_on(*args, **kwargs)

    def wait_for(self, pattern: str, timeout: float, since_boot: bool = True) -> re.Match:
        return self.kit.wait_for(pattern, timeout, since_boot)


class SimTarget(Target):
    name = "sim"
    capabilities = SIM_CAPABILITIES

    def __init__(self, board: str = "sim") -> None:
        self.board = load_board(board)

    def info(self) -> TargetInfo:
        return TargetInfo(
            "sim",
            self.board.id,
            "virtual kit: the firmware on the MicroPython unix port, bench on 127.0.0.1",
            self.capabilities,
        )

    def expose(self, bench: Any) -> tuple[Endpoint, Endpoint]:
        return (
            Endpoint("localhost", "127.0.0.1", bench.port),
            Endpoint("127.0.0.1", "127.0.0.1", bench.ntp_port),
        )

    def device_endpoint(self) -> Endpoint:
        return Endpoint("localhost", "127.0.0.1", 0)

    def steps(
        self, dut_root: Path, bench: Any, thing: str, config: dict
    ) -> tuple[SimDut, list[Step]]:
        config = dict(config)
        config.setdefault("board", self.board.id)
        board = self.board if config["board"] == self.board.id else load_board(config["board"])
        dut = SimDut(SimKit(dut_root / thing), thing, board)

        def flash_and_provision(d: Dut) -> str:
            assert isinstance(d, SimDut)
            d.kit = create_sim_kit(bench, dut_root, thing, **config)
            return f"firmware and identity in {d.kit.flash}"

        return dut, [Step("provisioned", flash_and_provision)]

    def bundle_steps(
        self, dut_root: Path, bundle: Path, thing: str, config: dict
    ) -> tuple[SimDut, list[Step]]:
        """Like :meth:`steps`, with an identity and config made elsewhere (a device bundle
        from ``thingkit provision`` for a remote cloud) instead of the bench's."""
        board = load_board(config.get("board", self.board.id))
        dut = SimDut(SimKit(dut_root / thing), thing, board)

        def flash_and_install_bundle(d: Dut) -> str:
            assert isinstance(d, SimDut)
            kit = SimKit(dut_root / thing, heap=str(config.get("heap", DEFAULT_HEAP)))
            kit.install_board(board.id)
            kit.install_firmware(mode=config.get("mode"))
            kit.calibrate()
            copy_bundle(bundle, kit.flash)
            d.kit = kit
            return f"firmware in {kit.flash}, identity and config from {bundle}"

        return dut, [Step("provisioned", flash_and_install_bundle)]


def copy_bundle(bundle: Path, fs: Path) -> list[str]:
    """Copy a device bundle's files (config.json, certs/) into a device filesystem tree."""
    copied = []
    for src in sorted(Path(bundle).rglob("*")):
        if src.is_file():
            rel = src.relative_to(bundle)
            (fs / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, fs / rel)
            copied.append(str(rel))
    return copied
