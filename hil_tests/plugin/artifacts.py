"""Per-test artifacts: each kit's console log and each bench's broker transcript.

The fixtures register what a test uses (kits, benches with the broker log offset at the
test's start, observers); after the test the plugin copies it all to
``<report dir>/<test id>/``:

- ``console-<thing>.log``  the kit's whole console (a kit lives for one test);
- ``broker.log`` / ``broker-<n>.log``  mosquitto's log from the test's start;
- ``messages.jsonl``  every message the test's observer saw (time, topic, payload).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def dir_name_for(nodeid: str) -> str:
    """A directory name for a test node id: ``test_app1__test_ping`` (params: ``-p``)."""
    path, _, name = nodeid.partition("::")
    stem = path.rsplit("/", 1)[-1].removesuffix(".py")
    name = name.replace("::", "__").replace("[", "-").rstrip("]")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stem}__{name}" if name else stem)[:180]


@dataclass
class Artifacts:
    """What one test used, to be copied out when it ends."""

    kits: list[Any] = field(default_factory=list)
    benches: list[tuple[Any, int]] = field(default_factory=list)  # (bench, log offset)
    observers: list[Any] = field(default_factory=list)
    start: float = 0.0

    def add_kit(self, kit: Any) -> None:
        if kit not in self.kits:
            self.kits.append(kit)

    def add_bench(self, bench: Any, from_start: bool = False) -> None:
        if any(b is bench for b, _ in self.benches):
            return
        offset = 0
        if not from_start:
            try:
                offset = bench.layout.broker_log.stat().st_size
            except FileNotFoundError:
                offset = 0
        self.benches.append((bench, offset))

    def add_observer(self, obs: Any) -> None:
        self.observers.append(obs)

    def empty(self) -> bool:
        return not (self.kits or self.benches or self.observers)

    def write(self, out: Path) -> list[Path]:
        """Copy everything into ``out`` (replaced if it exists); return the files."""
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        files = []
        for kit in self.kits:
            src = Path(kit.console_log)
            if src.exists():
                dst = out / f"console-{kit.artifacts_name}.log"
                shutil.copyfile(src, dst)
                files.append(dst)
        for n, (bench, offset) in enumerate(self.benches):
            log = bench.layout.broker_log
            if not log.exists():
                continue
            dst = out / ("broker.log" if n == 0 else f"broker-{n}.log")
            with open(log, "rb") as f:
                f.seek(offset)
                dst.write_bytes(f.read())
            files.append(dst)
        msgs = [m for obs in self.observers for m in list(obs.messages)]
        if msgs:
            dst = out / "messages.jsonl"
            with open(dst, "w") as f:
                f.writelines(
                    json.dumps(_message(m)) + "\n" for m in sorted(msgs, key=lambda m: m.t)
                )
            files.append(dst)
        return files


def _message(m: Any) -> dict:
    try:
        payload: Any = m.payload.decode()
        key = "payload"
    except UnicodeDecodeError:
        payload, key = base64.b64encode(m.payload).decode(), "payload_b64"
    return {"t": round(m.t, 3), "topic": m.topic, "retain": m.retain, key: payload}
