"""The checklist engine: each item shown by one check, on any target, against any cloud.

A :class:`Check` shows one or more checklist items with a function of a :class:`Session`
(the device under test, the cloud and its observer). It names what it needs of the
target (``power_cut``, ``virtual_kit``: capabilities of :mod:`hil_tests.targets`) and of
the cloud (``broker_control``, ``jobs``, ...: :mod:`host_tools.validate.cloud`); where
either lacks it, its items are ``not_run`` with what they need, never met or not met.

:func:`run` provisions one kit of the target for the cloud, boots it, runs the checks
of :mod:`host_tools.validate.checks` in order and reports each as it starts and ends::

    results, meta = run(make_target(opts), BenchCloud(root / "bench"), root, progress)
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from host_tools.bench.observer import Message, Observer
from host_tools.checklist import catalog
from host_tools.validate import checklist as cl
from host_tools.validate.cloud import Cloud

log = logging.getLogger(__name__)
BOOT_TIMEOUT = 60.0


def stamp(t: float) -> str:
    """A host time as evidence shows it: ``HH:MM:SS.mmmZ``."""
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


@dataclass(frozen=True)
class Check:
    """One piece of evidence-gathering code: ``run(session)`` returns results for
    ``items`` (``app2.*``: one per board component)."""

    name: str
    items: tuple[str, ...]
    run: Callable[[Session], list[cl.Result]]
    target_needs: tuple[str, ...] = ()
    cloud_needs: tuple[str, ...] = ()
    needs: str = ""  # what a run without those needs would lack, said in "not run"

    def item_ids(self, components: list[str]) -> list[str]:
        out: list[str] = []
        for i in self.items:
            out += [f"app2.{c}" for c in components] if i == catalog.APP2_ALL else [i]
        return out


class Progress(Protocol):
    """Told when each check starts and ends (the CLI prints it; tests may record it)."""

    def started(self, check: Check, index: int, total: int) -> None: ...

    def ended(self, check: Check, results: list[cl.Result], seconds: float) -> None: ...


class Quiet:
    def started(self, check: Check, index: int, total: int) -> None:
        pass

    def ended(self, check: Check, results: list[cl.Result], seconds: float) -> None:
        pass


@dataclass
class Session:
    """What a check may use: the target, the cloud, the booted kit and the observer."""

    target: Any
    cloud: Cloud
    workdir: Path
    thing: str
    dut: Any = None
    obs: Observer | None = None
    t_power_on: float = 0.0
    online: Message | None = None  # the update/accepted that said connected=true
    extra_duts: list[Any] = field(default_factory=list)
    identity: dict = field(default_factory=dict)  # kit identity for the report

    @property
    def prefix(self) -> str:
        return f"{self.cloud.topic_prefix}/{self.thing}"

    @property
    def observer(self) -> Observer:
        assert self.obs is not None
        return self.obs

    def tail(self, n: int = 6) -> str:
        lines = self.dut.console().splitlines()[-n:] if self.dut is not None else []
        return "console tail: " + " | ".join(lines)

    def make_device(self, thing: str, **config: Any) -> Any:
        """Another device of the target for this cloud, provisioned (powered off)."""
        from hil_tests.targets.strategy import Strategy

        dut, steps = self.cloud.device(self.target, self.workdir / "kits", thing, config)
        dut.strategy = Strategy(dut, steps)
        self.extra_duts.append(dut)
        dut.strategy.to("provisioned", timeout=BOOT_TIMEOUT)
        return dut

    def wait_alive(self, pred: Callable[[Message], bool], timeout: float) -> Message | None:
        """Like ``obs.wait``, but give up as soon as the kit has stopped."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.observer.wait(pred, 0.25, since=self.t_power_on)
            if m is not None:
                return m
            if self.dut is not None and not self.dut.is_running():
                return self.observer.find(pred, since=self.t_power_on)
        return None


def missing(check: Check, target: Any, cloud: Cloud) -> list[str]:
    """What ``check`` needs that the target or cloud lacks."""
    out = [
        f"target {target.name} lacks {n}"
        for n in check.target_needs
        if n not in target.capabilities
    ]
    out += [
        f"cloud {cloud.name} lacks {n}" for n in check.cloud_needs if n not in cloud.capabilities
    ]
    return out


def _boot(s: Session, keepalive_s: int) -> str | None:
    """Provision, power on and wait for the kit's online report; None, or why not."""
    from hil_tests.targets.strategy import Strategy

    dut, steps = s.cloud.device(s.target, s.workdir / "kits", s.thing, {"keepalive_s": keepalive_s})
    s.dut = dut
    dut.strategy = Strategy(dut, steps)
    try:
        dut.strategy.to("provisioned", timeout=BOOT_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - reported as the reason every item is unmet
        return f"the kit could not be provisioned: {exc}"
    try:
        cert = dut.read_file("certs/device.crt.der")
        s.identity["certificate_sha256"] = hashlib.sha256(cert).hexdigest()
    except Exception as exc:  # noqa: BLE001 - identity is report detail only
        s.identity["certificate_sha256"] = f"unreadable: {exc}"
    obs = s.observer
    # A desired setting waiting in the shadow before the device ever connects: shadow
    # sync on connect must pick it up (IoT Lens BP 11.1).
    obs.shadow_request(
        s.thing, "update", {"state": {"desired": {"settings": {"log_level": "debug"}}}}
    )
    s.t_power_on = time.time()
    dut.power_on()
    acc = f"$aws/things/{s.thing}/shadow/update/accepted"

    def online(m: Message) -> bool:
        d = m.json()
        return (
            m.topic == acc
            and isinstance(d, dict)
            and d.get("state", {}).get("reported", {}).get("connected") is True
        )

    s.online = s.wait_alive(online, BOOT_TIMEOUT)
    if s.online is None:
        if not dut.is_running():
            return "the kit stopped before it came online"
        return f"no reported.connected=true within {BOOT_TIMEOUT:.0f} s"
    return None


def run(
    target: Any,
    cloud: Cloud,
    workdir: Path,
    progress: Progress | None = None,
    checks: list[Check] | None = None,
    keepalive_s: int = 30,
    thing: str | None = None,
) -> tuple[list[cl.Result], dict]:
    """Validate one kit of ``target`` against ``cloud``; results in checklist order.

    ``thing``: the kit's thing name (a remote cloud's bundle names it; default: a new
    ``tk-val-xxxxxx``).
    """
    from host_tools.validate.checks import CHECKS

    progress = progress or Quiet()
    checks = list(CHECKS if checks is None else checks)
    t0 = time.time()
    thing = thing or getattr(cloud, "thing", None) or f"tk-val-{uuid.uuid4().hex[:6]}"
    s = Session(target, cloud, Path(workdir), thing)
    comps = [c["id"] for c in target.board.components]
    results: dict[str, cl.Result] = {}
    boot = Check("power on and come online", (), lambda _s: [])
    cloud.start(target)
    try:
        with cloud.observer(thing) as obs:
            s.obs = obs
            progress.started(boot, 0, len(checks))
            t = time.monotonic()
            why = _boot(s, keepalive_s)
            progress.ended(boot, [], time.monotonic() - t)
            for i, check in enumerate(checks, 1):
                ids = check.item_ids(comps)
                progress.started(check, i, len(checks))
                t = time.monotonic()
                lack = missing(check, target, cloud)
                if lack:
                    got = [
                        cl.not_run(x, f"not run: needs {check.needs}", "; ".join(lack)) for x in ids
                    ]
                elif why is not None:
                    got = [cl.not_met(x, why, s.tail()) for x in ids]
                else:
                    try:
                        got = check.run(s)
                    except Exception as exc:  # noqa: BLE001 - one check's fault is its items'
                        got = [cl.not_met(x, f"check stopped: {exc!r}", s.tail()) for x in ids]
                    if not comps and catalog.APP2_ALL in check.items:
                        got.append(cl.not_met("app2.components", "the board lists no components"))
                for r in got:
                    results[r.id] = r
                progress.ended(check, got, time.monotonic() - t)
    finally:
        for d in [s.dut, *s.extra_duts]:
            if d is None:
                continue
            for step in (d.power_off, getattr(d, "close", None)):
                try:
                    if step is not None:
                        step()
                except Exception as exc:  # noqa: BLE001 - shut the rest down too
                    log.warning("could not stop %s: %s", getattr(d, "thing", d), exc)
        try:
            target.close()
        finally:
            cloud.stop()
    ordered = sorted(results.values(), key=lambda r: catalog.order(r.id))
    info = target.info()
    meta = {
        "board": target.board.id,
        "thing": thing,
        "target": info.description,
        "cloud": cloud.describe(),
        "kit": dict(s.identity),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t0)),
        "duration_s": round(time.time() - t0, 2),
    }
    return ordered, meta
