"""``thingkit ota``: build, sign and inspect update bundles; deploy them through jobs.

The bundle commands live in ``bundle_cli`` and the rollout commands in ``rollout_cli``;
both are gathered here for the command table (host_tools/cli/commands.py).
"""

from __future__ import annotations

from host_tools.ota import bundle_cli, rollout_cli

GROUPS = {"ota": "signed update bundles and staged rollout"}
COMMANDS = (*bundle_cli.COMMANDS, *rollout_cli.COMMANDS)


def register(sub) -> None:
    """Add ``thingkit ota ...`` to a parser (for tests of this feature alone)."""
    from host_tools.cli.table import build

    build(sub, COMMANDS, GROUPS)
