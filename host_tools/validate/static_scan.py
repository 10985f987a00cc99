"""Look for hard-coded endpoints, URLs and addresses in the files of a device image."""

from __future__ import annotations

import re
from pathlib import Path

_PATTERNS = {
    "URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"]+", re.IGNORECASE),
    "AWS endpoint": re.compile(r"\b[\w.-]+\.amazonaws\.com(\.cn)?\b", re.IGNORECASE),
    "IPv4 address": re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
}


def scan(files: dict[str, Path], needles: list[str]) -> list[str]:
    """Findings 'path:line: kind: text' for each hit of a pattern or of a configured value.

    ``needles`` are values that must come from config only (the endpoint, say).
    """
    out = []
    for rel, path in sorted(files.items()):
        if path.suffix != ".py":
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for kind, rx in _PATTERNS.items():
                for m in rx.finditer(line):
                    out.append(f"{rel}:{n}: {kind}: {m.group(0)}")
            for needle in needles:
                if needle and needle in line:
                    out.append(f"{rel}:{n}: configured value in code: {needle}")
    return out
