"""HIL targets: what the suite runs on, chosen by configuration.

``--target sim`` (default): virtual kits on this host. ``--target serial --port URL
--board ID``: one board on a serial port. ``--env-file bench.toml``: a bench with one or
more boards, their ports and how to reset or power-cycle them (implies ``serial``).
Targets are registered by name in :data:`TARGETS`; tests never see which one they have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hil_tests.targets.base import Target


@dataclass(frozen=True)
class TargetOptions:
    """The command-line choices that select a target (all optional)."""

    target: str | None = None
    port: str | None = None
    board: str | None = None
    env_file: Path | None = None
    env_board: str | None = None
    firmware: Path | None = None

    def name(self) -> str:
        if self.target:
            return self.target
        return "serial" if self.env_file else "sim"


def _sim(o: TargetOptions) -> Target:
    from hil_tests.targets.sim import SimTarget

    return SimTarget(o.board or "sim")


def _serial(o: TargetOptions) -> Target:
    from hil_tests.targets.serial_board import SerialTarget

    return SerialTarget.from_options(o)


TARGETS: dict[str, Callable[[TargetOptions], Target]] = {"sim": _sim, "serial": _serial}


def make_target(options: TargetOptions) -> Target:
    """The target the options name.

    Raises:
        UserError: the options do not describe a usable target (e.g. serial without a
            port), with what to pass instead.
    """
    return TARGETS[options.name()](options)
