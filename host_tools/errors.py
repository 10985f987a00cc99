"""The one kind of error the CLI reports without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A fault of input, environment or device: printed as one line, exit status 1.

    Args:
        what: what failed.
        cause: the likely cause.
        where: where to look (a file, a log, a command).
    """

    def __init__(self, what: str, cause: str = "", where: str = "") -> None:
        self.what, self.cause, self.where = what, cause, where
        super().__init__(self.line())

    def line(self) -> str:
        parts = [self.what]
        if self.cause:
            parts.append(self.cause)
        if self.where:
            parts.append(f"see {self.where}")
        return "; ".join(parts)
