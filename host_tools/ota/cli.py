"""``thingkit ota``: build, sign and inspect update bundles; deploy them through jobs.

Wired into the main parser with ``register(subparsers)``; the bundle commands live in
``bundle_cli`` and the rollout commands in ``rollout_cli``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    ota = sub.add_parser("ota", help="signed update bundles and staged rollout").add_subparsers(
        dest="sub", required=True
    )
    from host_tools.ota import bundle_cli, rollout_cli

    bundle_cli.register(ota)
    rollout_cli.register(ota)
