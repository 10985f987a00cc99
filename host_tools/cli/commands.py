"""The command table: every ``thingkit`` command, gathered from the feature modules.

Each feature lists its commands in ``COMMANDS`` (see :mod:`host_tools.cli.table`); this
module is the one place that says which features the CLI has.
"""

from __future__ import annotations

from host_tools.audit import cli as audit_cli
from host_tools.board_tools import cli as board_tools_cli
from host_tools.boards import cli as boards_cli
from host_tools.cli import bench_cmds, kit_cmds
from host_tools.cli.table import Command
from host_tools.fleet_sim import cli as fleet_cli
from host_tools.identity import cli as identity_cli
from host_tools.ldt import cli as ldt_cli
from host_tools.ota import cli as ota_cli
from host_tools.validate import cli as validate_cli
from host_tools.view import cli as view_cli

GROUPS: dict[str, str] = {
    **bench_cmds.GROUPS,
    **kit_cmds.GROUPS,
    **boards_cli.GROUPS,
    **ota_cli.GROUPS,
    **fleet_cli.GROUPS,
    **identity_cli.GROUPS,
    **validate_cli.OPERATOR_GROUP,
}

COMMANDS: tuple[Command, ...] = (
    *bench_cmds.COMMANDS,
    *kit_cmds.COMMANDS,
    *boards_cli.COMMANDS,
    *board_tools_cli.COMMANDS,
    *audit_cli.COMMANDS,
    *ota_cli.COMMANDS,
    *fleet_cli.COMMANDS,
    *identity_cli.COMMANDS,
    *validate_cli.COMMANDS,
    *ldt_cli.COMMANDS,
    *view_cli.COMMANDS,
)
