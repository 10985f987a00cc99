"""One finding of the board checker: an error (fails ``check``) or a warning (does not)."""

from __future__ import annotations

from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Issue:
    """A problem in one board file.

    Attributes:
        level: ``"error"`` or ``"warning"``.
        file: the board file as shown to the user (``boards/x.json``).
        where: the part of the board at fault (``component 'led'``), or ``""``.
        message: what is wrong and what is needed.
    """

    level: str
    file: str
    where: str
    message: str

    def __str__(self) -> str:
        return ": ".join(p for p in (self.file, self.where, self.message) if p)

    def to_json(self) -> dict:
        return {"level": self.level, "where": self.where, "message": str(self)}


class Issues(list):
    """The issues of one file, collected in the order they are found."""

    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file

    def error(self, where: str, message: str) -> None:
        self.append(Issue(ERROR, self.file, where, message))

    def warning(self, where: str, message: str) -> None:
        self.append(Issue(WARNING, self.file, where, message))

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self if i.level == ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self if i.level == WARNING]
