"""The validator's scan of a device image: the audit's Appendix B rules, strictly applied.

One scanner serves ``thingkit audit`` and ``thingkit validate``: the rules live in
:mod:`host_tools.audit.rules`. Applied to the files a board receives, it is strict (an
example or loopback host counts: device code names no host at all) and also looks for the
values that must come from configuration only (the endpoint the kit was given).
"""

from __future__ import annotations

from pathlib import Path

from host_tools.audit.rules import scan_text


def scan(files: dict[str, Path], needles: list[str]) -> list[str]:
    """Findings ``path:line: rule: message`` in the Python files of a device image.

    ``needles`` are values that must come from config only (the endpoint, say): each line
    naming one is a finding too (``appb.configured_value``).
    """
    out = []
    for rel, path in sorted(files.items()):
        if path.suffix != ".py":
            continue
        text = path.read_text(errors="replace")
        found = [(f.line, f.line_str()) for f in scan_text(rel, text, strict=True)]
        for n, line in enumerate(text.splitlines(), 1):
            for needle in needles:
                if needle and needle in line:
                    found.append(
                        (n, f"{rel}:{n}: appb.configured_value: configured value in code: {needle}")
                    )
        out += [s for _, s in sorted(found, key=lambda x: x[0])]
    return out
