"""The board file a device gets: only what its drivers and App #2 read.

The host's board definitions carry units, ranges, partitions and notes for people and
validators; a device needs none of that, and on a 56 KiB heap every parsed key counts.
"""

from __future__ import annotations

# Component fields a driver or App #2 reads on the device.
DEVICE_FIELDS = (
    "id",
    "kind",
    "driver",
    "pin",
    "pins",
    "bus",
    "address",
    "active_low",
    "atten",
    "count",
    "pull",
    "optional",
)


def device_board(board: dict) -> dict:
    """A slim copy of a board definition for the device's ``board.json``."""
    comps = []
    for c in board.get("components", []):
        d = {k: c[k] for k in DEVICE_FIELDS if k in c}
        # Drivers check the reading names they are asked for; units and ranges stay home.
        d["readings"] = {name: {} for name in c.get("readings", {})}
        comps.append(d)
    return {
        "id": board.get("id"),
        "chip": board.get("chip"),
        "buses": board.get("buses", {}),
        "components": comps,
    }
