"""Run a long-duration test: a bench of its own, a fault proxy, one or more virtual kits
behind it, the phases in order, a drain, the summary.

    from host_tools.ldt import LdtOptions, run_ldt
    doc = run_ldt(LdtOptions(duration_s=180, out=Path("ldt-out")))
    print(doc["verdict"])          # "pass" or "fail"; summary.json/.txt in ldt-out
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host_tools import device_deps
from host_tools.bench.bench import Bench
from host_tools.bench.ledger import TelemetryLedger
from host_tools.bench.observer import Observer
from host_tools.errors import UserError
from host_tools.faults import FaultProxy
from host_tools.kit.provision import create_sim_kit
from host_tools.kit.sim import DEFAULT_HEAP, micropython_binary
from host_tools.ldt import summary
from host_tools.ldt.context import Check, Context, KitRun, PhaseRecord
from host_tools.ldt.phases import PHASES, PhaseFn
from host_tools.ldt.profile import DEFAULT_DURATION_S, Profile, fmt_s, make_profile
from host_tools.ldt.watch import ONLINE_RX, ConsoleWatch
from host_tools.paths import state_home

BOOT_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 90.0


@dataclass
class LdtOptions:
    """What to run.

    Attributes:
        duration_s: the phases' total time (the run adds start-up and a drain).
        kits: how many virtual kits, all behind one fault proxy.
        out: where the bench, the kits and the summary go (default:
            ``<state>/ldt/<UTC time>``).
        profile: ``ci`` or ``field`` (default: by duration, see host_tools.ldt.profile).
        phases: phase names in order (default: all six).
        kit_config: extra provisioning fields (``outbox_max_records=16``, ...).
        budgets: seconds for named phases, instead of their share of the duration.
        extra_phases: phase functions beyond :data:`~host_tools.ldt.phases.PHASES`.
        heap: the kits' heap budget.
        seed: the intermittent phase's random faults.
        long_outage_s: the long disconnect's length (default: 2.5 x the backoff cap).
    """

    duration_s: float = DEFAULT_DURATION_S
    kits: int = 1
    out: Path | None = None
    profile: str | None = None
    phases: list[str] | None = None
    kit_config: dict[str, Any] = field(default_factory=dict)
    budgets: dict[str, float] = field(default_factory=dict)
    extra_phases: dict[str, PhaseFn] = field(default_factory=dict)
    heap: str = DEFAULT_HEAP
    seed: int = 18
    long_outage_s: float | None = None

    def make_profile(self) -> Profile:
        kw: dict[str, Any] = {
            "kit_config": dict(self.kit_config),
            "budget_overrides": dict(self.budgets),
            "seed": self.seed,
            "long_outage_s": self.long_outage_s,
        }
        if self.phases:
            known = {**PHASES, **self.extra_phases}
            bad = [p for p in self.phases if p not in known]
            if bad:
                raise UserError(f"unknown LDT phase {bad[0]!r}", f"one of {', '.join(known)}")
            kw["phases"] = tuple(self.phases)
        return make_profile(self.duration_s, self.profile, **kw)


def runtime_description() -> str:
    """Which MicroPython the kits run (the unix port's version line and word size)."""
    try:
        out = subprocess.run(
            [micropython_binary(), "-c", "import sys; print(sys.version, sys.maxsize > 2**32)"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        ver, _, wide = out.stdout.strip().rpartition(" ")
        return f"MicroPython unix port ({'64' if wide == 'True' else '32'}-bit), {ver}"
    except (OSError, subprocess.SubprocessError, UserError):
        return "MicroPython unix port (version unknown)"


def _default_out() -> Path:
    return state_home() / "ldt" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _final(ctx: Context, timeout: float) -> dict[str, dict]:
    """Heal, let every kit send its backlog, and read where each one stands: its boot
    id, its last reading (app2 shadow) and its shadows' versions."""
    ctx.proxy.heal()
    ctx.wait_answering(ctx.profile.reconnect_deadline_s)
    out: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    for k in ctx.kits:
        fin: dict[str, Any] = {}
        while True:
            try:
                boot = (ctx.observer.shadow_get(k.name) or {}).get("state", {}).get("reported", {})
                app2 = (ctx.observer.shadow_get(k.name, "app2") or {}).get("state", {})
            except (TimeoutError, RuntimeError):
                boot, app2 = {}, {}
            fin["boot_id"] = (boot.get("boot") or {}).get("id")
            fin["app2_seq"] = int(app2.get("reported", {}).get("seq") or 0)
            # The outbox is a FIFO: once the last reading taken has arrived, so has
            # everything queued before it (this boot's and earlier boots').
            seen: Mapping[int, int] = k.ledger.seen.get(fin["boot_id"] or "", {})
            if fin["app2_seq"] in seen or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        versions = {}
        for name in (None, "app2", "diag"):
            try:
                doc = ctx.observer.shadow_get(k.name, name) or {}
                versions[name or "classic"] = doc.get("version")
            except (TimeoutError, RuntimeError):
                versions[name or "classic"] = None
        fin["shadow_versions"] = versions
        out[k.name] = fin
    return out


def run_ldt(opts: LdtOptions, say: Any = lambda line: None) -> dict:
    """Run an LDT; write ``summary.json`` and ``summary.txt`` into ``opts.out``; return
    the summary (``doc["verdict"]`` is ``"pass"`` or ``"fail"``).

    ``say(line)`` gets one progress line per step and per phase.

    Raises:
        UserError: the run could not start (a kit that never came online, a duration
            too short for the profile, an unknown phase).
    """
    t_wall = time.monotonic()
    if not 1 <= opts.kits <= 50:
        raise UserError(f"--kits {opts.kits}: an LDT runs 1 to 50 kits")
    prof = opts.make_profile()
    budgets = prof.budgets()
    phase_fns = {**PHASES, **opts.extra_phases}
    out = Path(opts.out or _default_out()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    say(
        f"LDT: {opts.kits} kit(s), profile {prof.name}, phases "
        f"{', '.join(f'{p} {fmt_s(s)}' for p, s in budgets.items())}; output {out}"
    )
    device_deps.fetch()
    bench = Bench(out / "bench")
    bench.up()
    bench.set_ntp(offset_s=0.0)
    proxy = FaultProxy(bench.port, lifetime_s=prof.duration_s * 2 + 1800).start()
    kits: list[KitRun] = []
    observer: Observer | None = None
    watch: ConsoleWatch | None = None
    try:
        say(f"creating {opts.kits} kit(s) behind the fault proxy")
        for i in range(opts.kits):
            name = f"ldt-{i + 1:02d}"
            kit = create_sim_kit(
                bench, out / "kits", name, heap=opts.heap, port=proxy.port, **prof.device_config()
            )
            kits.append(KitRun(name, kit, TelemetryLedger(bench, name).__enter__()))
        observer = Observer(bench)
        observer.start()
        watch = ConsoleWatch({k.name: k.kit for k in kits}).start()
        ctx = Context(bench, proxy, kits, observer, watch, prof, say)
        for k in kits:
            k.kit.power_on()
        for k in kits:
            if watch.wait(k.name, ONLINE_RX, 0, BOOT_TIMEOUT_S) is None:
                raise UserError(
                    f"kit {k.name} did not come online in {BOOT_TIMEOUT_S:.0f} s",
                    watch.tail(k.name, 6),
                    str(k.kit.console_log),
                )
        say(f"{opts.kits} kit(s) online")
        for i, name in enumerate(prof.phases):
            ph = PhaseRecord(name, budgets[name], t0=time.time())
            ctx.phases.append(ph)
            say(f"phase {i + 1}/{len(prof.phases)} {name} ({fmt_s(ph.budget_s)})")
            try:
                phase_fns[name](ctx, ph)
            except Exception as exc:  # noqa: BLE001  (a phase that broke fails; the run goes on)
                ph.checks.append(
                    Check("phase ran to its end", False, f"{type(exc).__name__}: {exc}")
                )
                proxy.heal()
                with contextlib.suppress(UserError):
                    bench.set_ntp(offset_s=0.0)
            ph.t1 = time.time()
            bad = [c.name for c in ph.checks if not c.ok]
            say(
                f"phase {name}: {len(ph.checks) - len(bad)}/{len(ph.checks)} checks ok"
                + (f", failed: {', '.join(bad)}" if bad else "")
                + f" ({fmt_s(ph.t1 - ph.t0)})"
            )
        say("draining: every kit sends what it queued")
        final = _final(ctx, DRAIN_TIMEOUT_S)
        for k in kits:
            final[k.name]["running"] = k.kit.is_running()  # a crash ends the process
            k.kit.power_off()
            k.scan_flash()
        time.sleep(0.5)
        watch.stop()
        doc = summary.build(ctx, final, time.monotonic() - t_wall, runtime_description())
        j, t = summary.write(doc, out)
        doc["files"] = {"json": str(j), "text": str(t)}
        return doc
    finally:
        for k in kits:
            k.kit.power_off()
            k.ledger.close()
        if watch is not None:
            watch.stop()
        if observer is not None:
            observer.stop()
        proxy.stop()
        bench.down()
