"""Documented exceptions to the audit rules, all in one file (``allowlist.json``).

Each entry names a path (a glob, relative to the repository root), the rule it excuses,
optionally a ``match`` the finding's text must contain, and a ``reason`` (required)::

    {"path": "firmware/deps.json", "rule": "appb.hardcoded_url",
     "match": "files.pythonhosted.org/packages/", "reason": "..."}

An entry that excuses nothing is reported as stale, so the list cannot silently outgrow
the code.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from host_tools.audit.rules import RULES, Finding
from host_tools.errors import UserError

ALLOWLIST_FILE = Path(__file__).with_name("allowlist.json")


@dataclass
class Allow:
    """One documented exception."""

    path: str
    rule: str
    reason: str
    match: str = ""
    used: int = 0

    def covers(self, rel_path: str, finding: Finding) -> bool:
        return (
            finding.rule == self.rule
            and fnmatch.fnmatchcase(rel_path, self.path)
            and (not self.match or self.match in finding.text or self.match in finding.message)
        )

    def describe(self) -> str:
        m = f" (match {self.match!r})" if self.match else ""
        return f"{self.path}: {self.rule}{m}: {self.reason}"


def load(path: Path | None = None) -> list[Allow]:
    """Read and check an allow-list file (default: the repository's ``allowlist.json``).

    Raises:
        UserError: unreadable file, unknown rule, or an entry without a reason.
    """
    path = Path(path) if path else ALLOWLIST_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read audit allow-list {path}", str(exc)) from exc
    entries = doc.get("allow") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise UserError(f'{path}: expected {{"allow": [...]}}', where=str(path))
    out = []
    for i, e in enumerate(entries):
        where = f"{path} entry {i + 1}"
        if not isinstance(e, dict):
            raise UserError(f"{where}: not an object", where=str(path))
        if e.get("rule") not in RULES:
            raise UserError(
                f"{where}: unknown rule {e.get('rule')!r}", f"rules: {', '.join(RULES)}", str(path)
            )
        if not str(e.get("reason", "")).strip():
            raise UserError(f"{where}: every exception needs a reason", where=str(path))
        if not str(e.get("path", "")).strip():
            raise UserError(f"{where}: missing path", where=str(path))
        out.append(Allow(e["path"], e["rule"], e["reason"].strip(), str(e.get("match", ""))))
    return out


def allowed(entries: list[Allow], rel_path: str | None, finding: Finding) -> Allow | None:
    """The entry that excuses ``finding`` (whose file is ``rel_path`` under the repo), if any."""
    if rel_path is None:
        return None
    for a in entries:
        if a.covers(rel_path, finding):
            a.used += 1
            return a
    return None
