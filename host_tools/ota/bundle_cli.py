"""Placeholder until its owner lands it: adds no subcommands yet."""

from __future__ import annotations

import argparse


def register(ota: argparse._SubParsersAction) -> None:
    return None
