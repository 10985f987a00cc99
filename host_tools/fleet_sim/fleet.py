"""A fleet of virtual kits on the bench: the real firmware, one identity per kit.

``Fleet.up`` does, in order:

1. starts the bench if it is not up (and remembers that it did, for ``down``);
2. issues one identity per kit with the provisioning toolkit (``provision_fleet`` into
   ``<root>/ids``: EC P-256 key, certificate from the bench's fleet CA, ``config.json``,
   the device tree) and registers every thing on the bench in one ACL write;
3. builds the firmware once (ROMFS image, board, calibration: ``SimKit``'s own steps) in
   ``<root>/template`` and gives each kit a copy plus its device tree;
4. starts the observer (:mod:`host_tools.fleet_sim.observer`), then powers the kits on
   at ``boot_rate`` kits per second, so that TLS handshakes do not all land at once;
5. waits until every kit has said it is online (or the timeout).

State lives in ``<root>`` (default ``.thingkit/fleetsim``): ``fleet.json``, the kits,
``stats.json`` (the observer's figures). ``down`` cuts every kit's power, stops the
observer and, if ``up`` started it, the bench.

    fleet = Fleet(Path(".thingkit/fleetsim"), bench_root=Path(".thingkit/bench"))
    fleet.up(count=10)
    print(fleet.status()["online"])
    fleet.down()
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from host_tools.bench import procs
from host_tools.bench.bench import Bench
from host_tools.errors import UserError
from host_tools.fleet_sim.observer import write_json
from host_tools.kit.sim import DEFAULT_HEAP, SimKit
from host_tools.paths import FIRMWARE, REPO, state_home

DEFAULT_BOOT_RATE = 20.0  # kits powered on per second
# The kits run at a lower CPU priority than the bench: on a board each kit has its own
# CPU, and here the broker and services stand in for a cloud that is not short of CPU,
# so a busy fleet must not slow the bench down and be measured as the bench's fault.
KIT_NICE = 10
NAME_TEMPLATE = "fleet-{index:04d}"
# Files of a kit directory that belong to one run of it, not to its flash.
_RUN_FILES = {"console.log", "pid", "rtc", "rtc.tmp"}


def default_root() -> Path:
    return state_home() / "fleetsim"


class Fleet:
    """N virtual kits and an observer, all state under ``root``."""

    def __init__(self, root: Path | None = None, bench_root: Path | None = None) -> None:
        self.root = Path(root or default_root()).resolve()
        saved = self.state.get("bench_root")
        self.bench = Bench(Path(bench_root or saved or state_home() / "bench"))

    # -- files -----------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.root / "fleet.json"

    @property
    def stats_file(self) -> Path:
        return self.root / "stats.json"

    @property
    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save(self, st: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.state_file, st)

    def things(self) -> list[str]:
        return list(self.state.get("things", []))

    def kit(self, thing: str) -> SimKit:
        return SimKit(self.root / "kits" / thing, heap=self.state.get("heap", DEFAULT_HEAP))

    def running(self) -> list[str]:
        """Things whose kit process is alive."""
        return [t for t in self.things() if self.kit(t).is_running()]

    # -- up ----------------------------------------------------------------------
    def up(
        self,
        count: int,
        interval_s: int = 10,
        boot_rate: float = DEFAULT_BOOT_RATE,
        heap: str = DEFAULT_HEAP,
        config: dict | None = None,
        timeout: float | None = None,
        firmware: Path = FIRMWARE,
        progress: Callable[[str], None] | None = None,
        nice: int = KIT_NICE,
    ) -> dict:
        """Boot ``count`` kits and wait until they are online; return :meth:`status`.

        Args:
            count: how many kits.
            interval_s: App #2 telemetry interval of every kit.
            boot_rate: kits powered on per second.
            heap: each kit's GC heap.
            config: more DeviceConfig fields for every kit (``backoff_base_ms``, ...).
            timeout: how long to wait for all online (default 60 s + one per boot slot);
                once all are online, ``up`` watches one more interval before it reports.
            firmware: the firmware source tree.
            progress: called with one line per step.
            nice: CPU niceness of the kit processes (the bench keeps 0).

        Raises:
            UserError: a fleet runs already in ``root``, or a kit cannot be made.
        """
        say = progress or (lambda s: None)
        if count < 1:
            raise UserError("--count must be at least 1")
        if self.running() or procs.alive(self.state.get("observer_pid")):
            raise UserError(
                f"a fleet is already running in {self.root}", where="thingkit fleet down"
            )
        started = not self.bench.is_up()
        if started:
            self.bench.up()
        st = {
            "bench_root": str(self.bench.layout.root),
            "bench_started": started,
            "count": count,
            "interval_s": interval_s,
            "heap": heap,
            "nice": nice,
            "config": dict(config or {}),
            "things": [],
            "created": time.time(),
        }
        self._save(st)
        for sub in ("ids", "kits", "template"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        self.stats_file.unlink(missing_ok=True)
        t0 = time.monotonic()
        say(f"issuing and registering {count} identities")
        things = self._provision(count, interval_s, dict(config or {}))
        st["things"] = things
        self._save(st)
        say(f"{count} identities issued and registered in {time.monotonic() - t0:.1f} s")
        t1 = time.monotonic()
        say(f"installing firmware on {count} kits")
        self._install(things, heap, firmware)
        say(f"firmware installed on {count} kits in {time.monotonic() - t1:.1f} s")
        st["observer_pid"], st["observer_id"] = self._start_observer(things, interval_s)
        self._save(st)
        t2 = time.monotonic()
        self.power_on(things, boot_rate)
        st["booted"] = time.time()
        self._save(st)
        say(f"{count} kits powered on in {time.monotonic() - t2:.1f} s ({boot_rate:g}/s)")
        wait = timeout if timeout is not None else 60.0 + count / boot_rate
        say(f"waiting up to {wait:.0f} s for {count} kits to come online")
        if self.wait_online(count, wait):
            # One telemetry interval more: the first rates and loss figures mean something.
            time.sleep(interval_s + 1)
        return self.status()

    def _provision(self, count: int, interval_s: int, config: dict) -> list[str]:
        """Identities from the provisioning toolkit, registered on the bench."""
        from host_tools.bench.registry import register_things
        from host_tools.boards.registry import load_board
        from provisioning.fleet import FleetError, FleetSpec, provision_fleet
        from provisioning.manifest import assign_names, generated_records
        from provisioning.store import FleetStore

        b = self.bench
        records, bad = assign_names(generated_records(count, "sim", "SIM"), NAME_TEMPLATE)
        if bad:
            raise UserError(str(bad))
        spec = FleetSpec.for_board(
            "localhost",
            load_board("sim"),
            port=b.port,
            ntp_servers=(f"127.0.0.1:{b.ntp_port}",),
            topic_prefix=b.topic_prefix,
            target="bench",
            name_template=NAME_TEMPLATE,
            config={"telemetry_interval_s": interval_s, **config},
        )
        try:
            spec.device_config("x")
        except TypeError as exc:
            raise UserError(
                f"bad kit setting: {exc}", "see provisioning/bundle.py DeviceConfig"
            ) from exc
        ids = self.root / "ids"
        try:
            res = provision_fleet(
                b.fleet_ca(), spec, records, ids, b.layout.server_ca_der.read_bytes(), trees=True
            )
        except FleetError as exc:
            raise UserError(str(exc), where=str(ids)) from exc
        if res.refused:
            raise UserError(f"provisioning refused {len(res.refused)} kits: {res.refused[0]}")
        store = FleetStore(ids)
        things = [r.thing_name for r in records]
        register_things(b, {t: store.devices[t].fingerprint for t in things})
        return things

    def _install(self, things: list[str], heap: str, firmware: Path) -> None:
        """Build the firmware once, then give each kit a copy and its device tree."""
        tpl = SimKit(self.root / "template", heap=heap)
        tpl.install_board("sim")
        tpl.install_firmware(source=firmware)
        tpl.calibrate()
        ids = self.root / "ids" / "devices"
        for thing in things:
            dest = self.root / "kits" / thing
            shutil.copytree(
                tpl.root, dest, ignore=lambda d, names: [n for n in names if n in _RUN_FILES]
            )
            shutil.copytree(ids / thing, dest / "flash", dirs_exist_ok=True)
            (dest / "heap").write_text(heap)

    def _start_observer(self, things: list[str], interval_s: int) -> tuple[int, str]:
        things_file = self.root / "things.json"
        things_file.write_text(json.dumps(things))
        cid = f"fleet-observer-{uuid.uuid4().hex[:8]}"
        ready = self.root / "observer.ready"
        ready.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "host_tools.fleet_sim.observer",
            "--bench-root",
            str(self.bench.layout.root),
            "--things",
            str(things_file),
            "--out",
            str(self.stats_file),
            "--interval",
            str(interval_s),
            "--client-id",
            cid,
        ]
        pid = procs.spawn(argv, self.root / "observer.log", cwd=REPO)
        deadline = time.monotonic() + 20
        while not ready.exists():
            if time.monotonic() > deadline or not procs.alive(pid):
                procs.stop(pid)
                raise UserError(
                    "the fleet observer did not start", where=str(self.root / "observer.log")
                )
            time.sleep(0.05)
        return pid, cid

    def power_on(self, things: list[str], boot_rate: float = DEFAULT_BOOT_RATE) -> None:
        """Power kits on, ``boot_rate`` per second (kits already running are left alone)."""
        gap = 1.0 / boot_rate if boot_rate > 0 else 0.0
        t0 = time.monotonic()
        for i, thing in enumerate(things):
            kit = self.kit(thing)
            if not kit.is_running():
                pid = kit.power_on()
                try:  # the kit is its own process group: its firmware process too
                    os.setpriority(os.PRIO_PGRP, pid, int(self.state.get("nice", KIT_NICE)))
                except OSError:
                    pass
            delay = t0 + (i + 1) * gap - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def wait_online(self, count: int, timeout: float) -> bool:
        """Wait until the observer has seen ``count`` kits online; False on time-out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats().get("online", 0) >= count:
                return True
            time.sleep(0.5)
        return False

    # -- status ------------------------------------------------------------------
    def stats(self) -> dict:
        try:
            return json.loads(self.stats_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def status(self) -> dict:
        """Kits running and online, message rates and loss (the observer's figures)."""
        st = self.state
        stats = self.stats()
        observer = procs.alive(st.get("observer_pid"))
        return {
            "root": str(self.root),
            "bench": {"root": str(self.bench.layout.root), "up": self.bench.is_up()},
            "count": len(st.get("things", [])),
            "running": len(self.running()),
            "online": stats.get("online", 0),
            "observer": observer,
            "stats_age_s": round(time.time() - stats["t"], 1) if "t" in stats else None,
            "interval_s": st.get("interval_s"),
            "telemetry": stats.get("telemetry", {}),
            "messages": stats.get("messages", {}),
            "silent": stats.get("silent"),
            "silent_things": stats.get("silent_things", []),
        }

    # -- down --------------------------------------------------------------------
    def down(
        self,
        stop_bench: bool | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> dict:
        """Power every kit off, stop the observer (its last figures are kept) and the
        bench if ``up`` started it (or as ``stop_bench`` says). Returns the last status.

        ``progress(phase, done, total)`` is called as kits are powered off."""
        st = self.state
        things = st.get("things", [])
        for n, thing in enumerate(things, 1):
            self.kit(thing).power_off()
            if progress:
                progress("kits powered off", n, len(things))
        procs.stop(st.get("observer_pid"), timeout=10)
        last = self.status()
        if stop_bench if stop_bench is not None else st.get("bench_started"):
            self.bench.down()
            last["bench"]["up"] = False
        elif self.bench.is_up() and st.get("things"):
            from host_tools.bench.registry import unregister_things

            unregister_things(self.bench, st["things"])
        st.pop("observer_pid", None)
        st["bench_started"] = False
        if st:
            self._save(st)
        return last
