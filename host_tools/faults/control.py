"""The fault proxy's control interface: text commands, a client, and the process entry.

One command per line on the control port (127.0.0.1), one JSON line back::

    cut [REFUSE_S] [fin]     close every connection (RST; FIN with "fin"), refuse new
                             ones for REFUSE_S seconds
    stall                    forward nothing, keep the sockets
    delay UP_S [DOWN_S]      added latency per direction
    drop up|down|both        blackhole a direction
    heal                     end every fault
    stats                    the counters
    state                    the faults in force
    quit                     stop the proxy

Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.

As a process (bounded by ``--lifetime``; SIGTERM or ``quit`` stop it sooner)::

    python -m host_tools.faults.proxy --upstream 8883
    {"port": 40123, "control_port": 40125, "pid": 4242, "lifetime_s": 900.0}
    echo "cut 3" | nc -q1 127.0.0.1 40125

From Python: ``command(40125, "stall")``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
from dataclasses import asdict
from typing import Any

from host_tools.errors import UserError


def _cut(p: Any, args: list[str]) -> dict:
    refuse = float(args[0]) if args else 0.0
    reset = not (len(args) > 1 and args[1] == "fin")
    return {"closed": p.cut(refuse, reset=reset)}


def _delay(p: Any, args: list[str]) -> dict:
    if not args:
        raise ValueError("delay UP_S [DOWN_S]")
    p.delay(float(args[0]), float(args[1]) if len(args) > 1 else 0.0)
    return {}


def _drop(p: Any, args: list[str]) -> dict:
    p.drop(args[0] if args else "down")
    return {}


def _quit(p: Any, args: list[str]) -> dict:
    p._stopping.set()  # the loop ends after this reply
    return {}


COMMANDS = {
    "cut": _cut,
    "stall": lambda p, a: p.stall() or {},
    "delay": _delay,
    "drop": _drop,
    "heal": lambda p, a: p.heal() or {},
    "stats": lambda p, a: asdict(p.stats()),
    "state": lambda p, a: p.state(),
    "quit": _quit,
}


def execute(proxy: Any, line: str) -> dict:
    """Run one command line against ``proxy``; never raises (errors are in the reply)."""
    words = line.split()
    if not words:
        return {"ok": False, "error": "empty command"}
    fn = COMMANDS.get(words[0].lower())
    if fn is None:
        return {"ok": False, "error": f"unknown command {words[0]!r}; one of {', '.join(COMMANDS)}"}
    try:
        return {"ok": True, **fn(proxy, words[1:])}
    except (ValueError, IndexError) as exc:
        return {"ok": False, "error": str(exc)}


def command(control_port: int, line: str, timeout: float = 5.0) -> dict:
    """Send one command to a proxy's control port; return its reply.

    Raises:
        UserError: no proxy answers there, or it refused the command.
    """
    try:
        with socket.create_connection(("127.0.0.1", control_port), timeout) as s:
            s.sendall(line.strip().encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                part = s.recv(4096)
                if not part:
                    break
                buf += part
    except OSError as exc:
        raise UserError(
            "fault proxy control failed", f"127.0.0.1:{control_port}: {exc}", "is it running?"
        ) from exc
    reply = json.loads(buf or b'{"ok": false, "error": "no reply"}')
    if not reply.get("ok"):
        raise UserError("fault proxy refused the command", f"{line!r}: {reply.get('error')}")
    return reply


def main(argv: list[str] | None = None) -> int:
    """Run a proxy in this process until its lifetime ends, ``quit``, or SIGTERM/SIGINT."""
    from host_tools.faults.proxy import DEFAULT_LIFETIME_S, FaultProxy

    ap = argparse.ArgumentParser(
        prog="python -m host_tools.faults.proxy", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--upstream", type=int, required=True, help="broker port")
    ap.add_argument("--upstream-host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
    ap.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME_S, help="seconds")
    a = ap.parse_args(argv)
    try:
        proxy = FaultProxy(a.upstream, a.upstream_host, a.port, lifetime_s=a.lifetime, control=True)
    except OSError as exc:
        print(f"fault proxy: cannot listen on 127.0.0.1:{a.port}: {exc}", file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: proxy._stopping.set() or proxy._wake())
    proxy.start()
    info = {
        "port": proxy.port,
        "control_port": proxy.control_port,
        "pid": os.getpid(),
        "lifetime_s": a.lifetime,
    }
    print(json.dumps(info), flush=True)
    while not proxy.stopped.wait(0.5):
        pass
    print(json.dumps({"stopped": True, **asdict(proxy.counters)}), flush=True)
    return 0
