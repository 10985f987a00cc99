"""Checklist results: an item of the catalogue (:mod:`host_tools.checklist.catalog`) with
its status and the evidence that shows it.

A status is ``met``, ``not_met`` or ``not_run`` (the target or cloud cannot show the
item: the evidence says what it needs). Only ``met`` and ``not_met`` are verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from host_tools.checklist import catalog

# id -> title of every item in the catalogue (a view on it, never a second list).
TITLES = {i: it.title for i, it in catalog.ITEMS.items()}

MET = "met"
NOT_MET = "not_met"
NOT_RUN = "not_run"


@dataclass
class Result:
    id: str
    status: str
    evidence: list[str] = field(default_factory=list)
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or catalog.title(self.id)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "evidence": list(self.evidence),
        }


def met(item: str, *evidence: str) -> Result:
    return Result(item, MET, list(evidence))


def not_met(item: str, *evidence: str) -> Result:
    return Result(item, NOT_MET, list(evidence))


def not_run(item: str, why: str, *evidence: str) -> Result:
    """An item this run could not show; ``why`` says what it needs ("needs a power
    switch", "not shown on this cloud: ...")."""
    return Result(item, NOT_RUN, [why, *evidence])
