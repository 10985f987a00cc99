"""Where thingkit finds its own files and keeps its state."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
BOARDS = REPO / "boards"
# What the virtual kit's MicroPython image holds beyond the unix port (never on a board).
SIM_IMAGE = REPO / "host_tools" / "kit" / "image"


def state_home() -> Path:
    """Root of thingkit's working state: $THINGKIT_HOME, else ./.thingkit under the repo."""
    env = os.environ.get("THINGKIT_HOME")
    return Path(env) if env else REPO / ".thingkit"


def cache_dir() -> Path:
    """Downloads that outlive a bench or kit (device packages)."""
    env = os.environ.get("THINGKIT_CACHE")
    return Path(env) if env else REPO / ".thingkit" / "cache"
