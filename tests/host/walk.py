"""What the README and quick-start walk tests share: a scratch clone, and finding the
processes a walk left behind."""

from __future__ import annotations

import os
from pathlib import Path

from host_tools.paths import REPO


def scratch_clone(work: Path) -> dict[str, str]:
    """Link every top-level entry of the repository into ``work`` (the clone a new user
    stands in, without ``.git`` or ``.thingkit``); return the environment of a walk there
    (its own ``THINGKIT_HOME``, no colour, no AWS profile)."""
    work.mkdir(parents=True, exist_ok=True)
    for entry in REPO.iterdir():
        if entry.name not in (".git", ".thingkit"):
            (work / entry.name).symlink_to(entry)
    env = {**os.environ, "THINGKIT_HOME": str(work / ".thingkit"), "NO_COLOR": "1"}
    env.pop("AWS_PROFILE", None)
    return env


def procs_under(path: Path) -> list[str]:
    """Processes whose command line names ``path`` (kits, broker, bench services)."""
    found = []
    needle = str(path).encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{d.name}: {shown}")
    return found
