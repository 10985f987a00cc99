"""``thingkit view``: serve the live view of a running bench in a browser.

Listed in ``COMMANDS`` (host_tools/cli/table.py)::

    thingkit view [--bench-root DIR] [--host 127.0.0.1] [--port N] [--token T]
                  [--read-only] [--open] [--kits DIR ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from host_tools.cli.table import BENCH_ROOT, Command, arg, build
from host_tools.paths import state_home

DEFAULT_PORT = 8780


def kits_dirs(bench_root: Path, extra: list[Path] | None = None) -> list[Path]:
    """Where the view looks for virtual kits (console, certificate): the given
    directories, the kits beside the bench (``thingkit kit create``) and the fleet
    simulator's kits."""
    dirs = [Path(d).resolve() for d in extra or []]
    dirs += [bench_root.resolve().parent / "kits", (state_home() / "fleetsim" / "kits").resolve()]
    return list(dict.fromkeys(dirs))


def view(
    root: Path | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    read_only: bool = False,
    open_browser: bool = False,
    kits: list[Path] | None = None,
) -> None:
    """Serve the live view of the bench at ``root`` until interrupted.

    Raises:
        UserError: a non-loopback ``host`` without ``token``, or the bench is not up.
    """
    from host_tools.bench.bench import Bench
    from host_tools.view.server import ViewServer, check_bind, serve

    check_bind(host, token)  # before touching the bench: the refusal is one line
    bench = Bench(root or state_home() / "bench")
    server = ViewServer(bench, kits_dirs(bench.layout.root, kits), host, port, token, read_only)

    def ready(s: ViewServer) -> None:
        n = len(s.source.model.things)
        mode = ", read-only" if read_only else ""
        print(
            f"thingkit view: {s.url(with_token=True)} ({n} things on the bench at "
            f"{bench.layout.root}{mode}; Ctrl-C stops)",
            flush=True,
        )
        if open_browser:
            import webbrowser

            webbrowser.open(s.url(with_token=True))

    serve(server, ready)


def cmd_view(args: argparse.Namespace) -> int:
    view(
        args.bench_root,
        args.host,
        args.port,
        args.token or os.environ.get("THINGKIT_VIEW_TOKEN") or None,
        args.read_only,
        args.open,
        args.kits,
    )
    return 0


ARGS = (
    *BENCH_ROOT,
    arg("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"),
    arg("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)"),
    arg(
        "--token",
        help="require this token (needed for any address but loopback; or set THINGKIT_VIEW_TOKEN)",
    ),
    arg("--read-only", action="store_true", help="no actions from the page"),
    arg("--open", action="store_true", help="open the page in a browser"),
    arg(
        "--kits",
        type=Path,
        action="append",
        help="a directory of virtual kits to show consoles and certificates of (repeatable)",
    ),
    # no --json: it serves a page until Ctrl-C (its one line says where)
)

COMMANDS = (Command("view", cmd_view, "a live view of the bench and its kits in a browser", ARGS),)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    """The command's arguments, on a parser of its own (``python -m host_tools.view``)."""
    for a in ARGS:
        a.add_to(sp)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``view`` to a parser (for tests of this feature alone)."""
    build(sub, COMMANDS, {})


def main(argv: list[str] | None = None) -> int:
    """``python -m host_tools.view``: the same command without the main CLI."""
    from host_tools.errors import UserError

    p = argparse.ArgumentParser(prog="thingkit view", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return cmd_view(args)
    except UserError as e:
        print(f"thingkit: {e.line()}", file=sys.stderr)
        return 1
