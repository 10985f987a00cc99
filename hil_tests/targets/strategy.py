"""Walk a device through its states: off -> flashed -> provisioned -> online.

Each target gives the steps that reach ``flashed`` and ``provisioned`` (a board: esptool,
then mpremote; the virtual kit: one step does both); ``online`` is the same everywhere:
power on and wait for the firmware to say its shadow is synced. After a failed step the
strategy stays broken: every later request fails at once with the first cause, instead of
flashing or booting again and hiding what went wrong.

    s = Strategy(dut, steps)
    s.to("provisioned")   # flash and deploy as needed
    s.to("online", timeout=30)
"""

from __future__ import annotations

import time

from hil_tests.targets.base import Dut, Step

STATES = ("off", "flashed", "provisioned", "online")
ONLINE_RX = r"I device: shadow synced: connected=true"


class StrategyError(Exception):
    """A step failed, now or earlier (the device stays broken)."""


class Strategy:
    def __init__(self, dut: Dut, steps: list[Step]) -> None:
        self.dut = dut
        self.steps = steps
        self.state = "off"
        self.broken: BaseException | None = None
        self.history: list[tuple[str, str, float]] = []  # (state, note, seconds)

    def to(self, state: str, timeout: float = 60.0) -> Dut:
        """Bring the device to ``state`` (no-op if it is there or further)."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; one of {', '.join(STATES)}")
        if self.broken is not None:
            raise StrategyError(
                f"kit {self.dut.thing} is broken (stuck in {self.state!r}): {self.broken}"
            ) from self.broken
        want = STATES.index(state)
        for step in self.steps:
            if STATES.index(step.reaches) <= STATES.index(self.state):
                continue
            if STATES.index(self.state) >= want:
                break
            self._run(step.reaches, lambda s=step: s.run(self.dut))
        if want == STATES.index("online") and self.state != "online":
            self._run("online", lambda: self._online(timeout))
        return self.dut

    def _run(self, state: str, fn) -> None:
        t0 = time.monotonic()
        try:
            note = fn()
        except BaseException as exc:
            self.broken = exc
            raise StrategyError(
                f"kit {self.dut.thing}: {self.state} -> {state} failed: {exc}"
            ) from exc
        self.history.append((state, str(note or ""), time.monotonic() - t0))
        self.state = state

    def _online(self, timeout: float) -> str:
        self.dut.power_on()
        m = self.dut.wait_for(ONLINE_RX, timeout)
        return m.group(0)

    def off(self) -> None:
        """Power off; the device keeps its flash and identity (back to ``provisioned``)."""
        self.dut.power_off()
        if self.state == "online":
            self.state = "provisioned"
