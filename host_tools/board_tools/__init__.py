"""Real-board tooling: ``thingkit flash``, ``thingkit deploy`` and ``thingkit console``.

Each command is a thin wrapper over a library function usable from Python scripts and
the HIL suite's serial target:

- :func:`host_tools.board_tools.flash.flash`: esptool, chip and partition checks;
- :func:`host_tools.board_tools.deploy.deploy`: mpy-cross and mpremote: firmware,
  device-side packages (mip), identity and config;
- :class:`host_tools.board_tools.console.SerialConsole`: a serial monitor with reset.

Ports are pyserial URLs (``/dev/ttyUSB0``, ``rfc2217://``, ``socket://``).
"""

from __future__ import annotations

from host_tools.errors import UserError


class NotSupportedError(UserError):
    """A board lacks something a command needs (``NotSupportedError(board, "deep sleep")``)."""

    def __init__(self, board: str, what: str) -> None:
        super().__init__(f"board {board} cannot {what}", where="thingkit boards show " + board)
        self.board, self.capability = board, what
