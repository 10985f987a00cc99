"""``thingkit view``: serve the live view of a running bench in a browser.

Listed in ``COMMANDS`` (host_tools/cli/table.py)::

    thingkit view [--bench-root DIR] [--host 127.0.0.1] [--port N] [--token T]
                  [--read-only] [--open] [--kits DIR ...]
    thingkit view --cloud remote --endpoint HOST[:PORT] --operator-cert F --operator-key F
                  [--ca F] (--things a,b,c | --bundle DIR) [--topic-prefix P] [--client-id C]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from host_tools.cli.table import BENCH_ROOT, Command, arg, build
from host_tools.errors import UserError
from host_tools.paths import state_home
from host_tools.view.remote import RemoteSpec, split_endpoint, things_of_bundle

THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")

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
    remote: RemoteSpec | None = None,
) -> None:
    """Serve the live view of the bench at ``root`` (or, with ``remote``, of a remote
    cloud over MQTT only) until interrupted.

    Raises:
        UserError: a non-loopback ``host`` without ``token``, the bench is not up, or the
            remote endpoint refuses the operator identity.
    """
    from host_tools.bench.bench import Bench
    from host_tools.view.server import ViewServer, check_bind, serve

    check_bind(host, token)  # before touching the bench: the refusal is one line
    if remote is not None:
        remote.check()
        server = ViewServer(None, [], host, port, token, read_only, remote=remote)
        where = f"followed on the remote cloud {remote.describe()}"
    else:
        bench = Bench(root or state_home() / "bench")
        server = ViewServer(bench, kits_dirs(bench.layout.root, kits), host, port, token, read_only)
        where = f"on the bench at {bench.layout.root}"

    def ready(s: ViewServer) -> None:
        n = len(s.source.model.things)
        mode = ", read-only" if read_only else ""
        print(
            f"thingkit view: {s.url(with_token=True)} ({n} things {where}{mode}; Ctrl-C stops)",
            flush=True,
        )
        if open_browser:
            import webbrowser

            webbrowser.open(s.url(with_token=True))

    serve(server, ready)


def remote_spec(args: argparse.Namespace) -> RemoteSpec | None:
    """The remote cloud the arguments name (``--cloud remote``), else None.

    Raises:
        UserError: remote options with ``--cloud bench``, bench options with
            ``--cloud remote``, or what ``--cloud remote`` needs is missing.
    """
    remote_opts = (args.endpoint, args.operator_cert, args.operator_key, args.ca, args.things)
    if args.cloud != "remote":
        if any(remote_opts) or args.bundle:
            raise UserError(
                "--endpoint, --operator-cert, --operator-key, --ca, --things and --bundle "
                "go with --cloud remote"
            )
        return None
    if args.bench_root or args.kits:
        raise UserError("--bench-root and --kits go with --cloud bench (the default)")
    things = [t.strip() for t in (args.things or "").split(",") if t.strip()]
    prefix = args.topic_prefix
    if args.bundle:
        name, bundle_prefix, bundle_endpoint = things_of_bundle(args.bundle)
        things += [name] if name and name not in things else []
        prefix = prefix or bundle_prefix
        if not args.endpoint and bundle_endpoint:
            args.endpoint = bundle_endpoint
    missing = [
        f
        for f, v in (
            ("--endpoint HOST", args.endpoint),
            ("--operator-cert FILE", args.operator_cert),
            ("--operator-key FILE", args.operator_key),
        )
        if not v
    ]
    if missing:
        raise UserError(f"--cloud remote needs {', '.join(missing)}")
    bad = [t for t in things if not THING_NAME.fullmatch(t)]
    if bad:
        raise UserError(f"bad thing name {bad[0]!r}", "letters, digits, : _ - (at most 128)")
    host, port = split_endpoint(args.endpoint, args.endpoint_port)
    spec = RemoteSpec(
        host, port, args.operator_cert, args.operator_key, args.ca, things, prefix or "thingkit"
    )
    if args.client_id:
        spec.client_id = args.client_id
    return spec


def cmd_view(args: argparse.Namespace) -> int:
    view(
        args.bench_root,
        args.host,
        args.port,
        args.token or os.environ.get("THINGKIT_VIEW_TOKEN") or None,
        args.read_only,
        args.open,
        args.kits,
        remote_spec(args),
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
    # a remote cloud, as thingkit validate --cloud remote names it
    arg(
        "--cloud",
        choices=["bench", "remote"],
        default="bench",
        help="bench: the local bench's files and broker (default); remote: an MQTT endpoint "
        "such as AWS IoT Core, read over MQTT only",
    ),
    arg(
        "--endpoint", help="remote broker host (or HOST:PORT): AWS IoT Core's iot:Data-ATS endpoint"
    ),
    arg("--endpoint-port", type=int, default=8883, help="remote broker port (default 8883)"),
    arg("--operator-cert", type=Path, help="PEM certificate of the operator identity (remote)"),
    arg("--operator-key", type=Path, help="its private key (PEM)"),
    arg(
        "--ca",
        type=Path,
        help="CA file the remote broker's certificate chains to (default: the system's)",
    ),
    arg("--things", help="the things to follow on the remote cloud, comma-separated"),
    arg(
        "--bundle",
        type=Path,
        help="a device bundle (config.json from thingkit provision): its thing is followed",
    ),
    arg(
        "--topic-prefix",
        help="the kits' topic prefix on the remote cloud (default thingkit, or the bundle's)",
    ),
    arg(
        "--client-id",
        help="MQTT client id of the view (default thingkit-view-<random>; the operator policy may fix it)",
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
    p = argparse.ArgumentParser(prog="thingkit view", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return cmd_view(args)
    except UserError as e:
        print(f"thingkit: {e.line()}", file=sys.stderr)
        return 1
