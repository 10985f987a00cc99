"""``thingkit``: the command line. Each command is a thin wrapper over a library function.

The commands are data: :mod:`host_tools.cli.commands` is the table, built into one
argparse parser by :mod:`host_tools.cli.table`. Errors of input, environment or device
(:class:`~host_tools.errors.UserError`, :class:`~provisioning.errors.ProvisioningError`)
print one line and exit 1; Ctrl-C says what was kept and exits 130; anything else is a bug
and keeps its traceback.

Exit status: 0 done; 1 a user error or a check that failed; 2 partly done (e.g. not every
kit came online); 3 ``status`` commands when what they show is down; 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys

from host_tools.cli.interrupt import interrupted_line, on_interrupt, reset
from host_tools.errors import UserError

EXIT_CODES = """exit status:
  0    done
  1    a user error (one line on stderr) or a check that failed
  2    partly done (e.g. not every kit came online)
  3    a status command found what it shows down
  130  interrupted (Ctrl-C); the line says what was kept"""

__all__ = ["build_parser", "main", "on_interrupt", "tool_version"]


def tool_version() -> str:
    """thingkit's version (the installed package's, as pyproject.toml gives it), and the
    firmware version it deploys when that differs."""
    from importlib.metadata import PackageNotFoundError, version

    from host_tools.paths import FIRMWARE

    try:
        tool = version("thingkit")
    except PackageNotFoundError:
        tool = "unknown (not installed)"
    text = (FIRMWARE / "tk" / "version.py").read_text()
    fw = text.split('"')[1] if '"' in text else "?"
    return tool if fw == tool else f"{tool} (firmware {fw})"


def build_parser() -> argparse.ArgumentParser:
    """The whole ``thingkit`` parser, from the command table."""
    from host_tools.cli import commands
    from host_tools.cli.table import build

    p = argparse.ArgumentParser(
        prog="thingkit",
        description="thingkit: MicroPython firmware for ESP32 kits on AWS IoT, and its host tools",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--version", action="version", version=f"thingkit {tool_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    build(sub, commands.COMMANDS, commands.GROUPS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status."""
    args = build_parser().parse_args(argv)
    reset()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="thingkit: %(message)s"
    )
    from provisioning.errors import ProvisioningError

    try:
        return args.func(args)
    except UserError as exc:
        print(f"thingkit: {exc.line()}", file=sys.stderr)
        return 1
    except ProvisioningError as exc:  # a bad bundle, CA, manifest, spec, image, store
        print(f"thingkit: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(interrupted_line(), file=sys.stderr)
        return 130
