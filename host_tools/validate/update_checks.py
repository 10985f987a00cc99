"""``thingkit validate``: the update items, on two virtual kits and the bench's Jobs service.

- ``lens.signed_updates``: an unsigned bundle and one signed by another key are refused
  by the device (job REJECTED/FAILED with its reason, running firmware unchanged); a
  bundle signed with the provisioned key installs and the kit reports the new version.
- ``lens.staged_rollout``: ``thingkit ota deploy``'s plan with one canary: the canary
  job runs first and only when it succeeds does the rest of the group get a job; a
  canary that fails aborts the rollout and the rest never get one.
- ``lens.rollback``: a signed version that cannot connect is installed on the canary,
  cannot confirm itself, and the bootloader rule takes the kit back to the version it
  ran; the job ends FAILED with the reason.

Firmware-kind bundles (the ROMFS image written through the emulated ``esp32.Partition``)
are used: they run in place, as a board's app partition does, within the kit's heap.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from host_tools.bench.bench import Bench
from host_tools.bench.jobs_service import JobsOperator
from host_tools.bench.observer import Observer
from host_tools.bench.streams_service import register_stream
from host_tools.kit.sim import SimKit
from host_tools.ota import bundle as ob
from host_tools.ota import keys, rollout
from host_tools.paths import FIRMWARE
from host_tools.validate import checklist as cl

END = ("SUCCEEDED", "FAILED", "REJECTED", "CANCELED", "TIMED_OUT")
CONFIRM_S = 15  # ota.confirm_s of the validated kits: how long a new version may take


def running_version(source: Path = FIRMWARE) -> str:
    m = re.search(r'^VERSION = "([^"]+)"', (source / "tk" / "version.py").read_text(), re.MULTILINE)
    if not m:
        raise RuntimeError(f"no VERSION in {source}/tk/version.py")
    return m.group(1)


def bumped(version: str, minor: int) -> str:
    major, mi, _ = ob.parse_version(version)
    return f"{major}.{mi + minor}.0"


def broken_source(workdir: Path) -> Path:
    """firmware/ whose MQTT connect always fails: a version that can never confirm."""
    src = workdir / "fw-cannot-connect"
    if not src.exists():
        shutil.copytree(FIRMWARE, src)
        m = src / "tk" / "mqtt.py"
        head = "    def connect(self, clean_session=True):\n"
        text = m.read_text()
        if head not in text:
            raise RuntimeError("tk/mqtt.py has no connect() to break for the rollback check")
        m.write_text(text.replace(head, head + '        raise OSError("cannot connect")\n'))
    return src


class UpdateChecks:
    """Runs the three update items; ``kits[0]`` is the canary (its thing sorts first)."""

    def __init__(
        self,
        bench: Bench,
        obs: Observer,
        kits: list[SimKit],
        things: list[str],
        workdir: Path,
        stamp: Callable[[float], str],
    ) -> None:
        self.bench, self.obs, self.kits, self.things = bench, obs, kits, things
        self.workdir, self.ts = workdir, stamp
        self.key = keys.open_or_create(keys.bench_key_path(bench.layout.root))
        self.base = running_version()
        self.results: list[cl.Result] = []

    # -- helpers -------------------------------------------------------------------------
    def _fw(self, thing: str) -> str | None:
        doc = self.obs.shadow_get(thing) or {}
        return doc.get("state", {}).get("reported", {}).get("fw")

    def _wait_fw(self, thing: str, want: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        fw = self._fw(thing)
        while fw != want and time.monotonic() < deadline:
            time.sleep(0.5)
            fw = self._fw(thing)
        return fw

    def _direct_job(self, data: bytes, version: str) -> tuple[str, dict]:
        """One job straight through the Jobs service (the rollout tool refuses unsigned
        bundles, as it should); returns the job id and the canary's final execution."""
        job = f"val-{uuid.uuid4().hex[:8]}"
        register_stream(self.bench.layout.streams, job, {0: data})
        doc = {"operation": rollout.OPERATION, "version": version, "kind": "firmware",
               "streamId": job, "fileId": 0, "size": len(data),
               "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
        with JobsOperator(self.bench) as ops:
            ops.create_job(job, doc, [self.things[0]])
            return job, self._wait_end(ops, job, self.things[0], 60)

    @staticmethod
    def _wait_end(ops: JobsOperator, job: str, thing: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        ex: dict = {}
        while time.monotonic() < deadline:
            d = ops.describe_job_execution(job, thing)
            ex = d.get("execution", d)
            if ex.get("status") in END:
                break
            time.sleep(0.5)
        return ex

    def _deploy(
        self, data: bytes, name: str, abort_rate: float
    ) -> tuple[rollout.Report, rollout.Plan]:
        path = self.workdir / f"{name}.tkota"
        path.write_bytes(data)
        backend = rollout.BenchBackend(self.bench)
        try:
            plan = rollout.make_plan(
                path, self.things, backend.resolve, canary="1", abort_failure_rate=abort_rate,
                job_id=f"{name}-{uuid.uuid4().hex[:6]}", canary_timeout_s=CONFIRM_S + 90,
            )  # fmt: skip
            report = rollout.deploy(plan, backend, poll_s=0.5, progress=lambda s: None)
            if report.outcome == "deployed":
                rollout.wait_stage(backend, plan.stages[-1], CONFIRM_S + 90, poll_s=0.5)
            return report, plan
        finally:
            backend.close()

    # -- the run -------------------------------------------------------------------------
    def run(self) -> list[cl.Result]:
        canary = self.things[0]
        new, bad = bumped(self.base, 1), bumped(self.base, 2)
        good = ob.build_from_source(FIRMWARE, version=new, boards=["sim"], kind="firmware")
        signed_ev: list[str] = []
        ok_signed = True
        # 1. Refusals: unsigned, and signed by a key the device does not hold.
        other = keys.generate_key(self.workdir / "not-the-fleet-key.pem", overwrite=True)
        for label, data in (("unsigned", good), ("another key", ob.sign(good, other))):
            t0 = time.time()
            job, ex = self._direct_job(data, new)
            reason = (ex.get("statusDetails") or {}).get("reason", "")
            refused = ex.get("status") in ("REJECTED", "FAILED") and self._fw(canary) == self.base
            ok_signed &= refused
            signed_ev.append(
                f"{self.ts(t0)} {label} bundle {new}: job {job} {ex.get('status')} "
                f"({reason or 'no reason'}); {canary} still runs {self._fw(canary)}"
            )
        # 2. Staged rollout of the good, signed version: canary first, then the rest.
        t0 = time.time()
        rep, _ = self._deploy(ob.sign(good, self.key), "val-good", abort_rate=0.0)
        fws = {t: self._wait_fw(t, new, CONFIRM_S + 30) for t in self.things}
        installed = all(v == new for v in fws.values())
        ok_signed &= installed
        signed_ev.append(
            f"{self.ts(t0)} bundle {new} signed with the provisioned key: rollout "
            f"{rep.outcome}, canary {rep.canary}; reported fw {fws}"
        )
        self.results.append(
            (cl.met if ok_signed else cl.not_met)("lens.signed_updates", *signed_ev)
        )
        # 3. A signed version that cannot connect: canary rolls back, rollout aborts.
        t1 = time.time()
        before = self._fw(canary)
        broken = ob.build_from_source(
            broken_source(self.workdir), version=bad, boards=["sim"], kind="firmware"
        )
        rep2, plan2 = self._deploy(ob.sign(broken, self.key), "val-broken", abort_rate=0.0)
        with JobsOperator(self.bench) as ops:
            cex = ops.describe_job_execution(plan2.stages[0].job_id, canary)
            cex = cex.get("execution", cex)
            try:
                rest_jobs = ops.list_job_executions(plan2.job_id)
            except Exception:  # noqa: BLE001 - "no job" is the expected answer
                rest_jobs = []
        back = self._wait_fw(canary, before or new, 30)
        reason = (cex.get("statusDetails") or {}).get("reason", "")
        # Rolled back: the job failed after the new version was tried (the boot slot
        # went back), and the kit runs what it ran before.
        ota = self._otadata(self.kits[0])
        rolled = cex.get("status") == "FAILED" and back == before and '"aborted"' in ota
        self.results.append(
            (cl.met if rolled else cl.not_met)(
                "lens.rollback",
                f"{self.ts(t1)} signed bundle {bad} that cannot connect sent to canary {canary}",
                f"job {plan2.stages[0].job_id}: {cex.get('status')} ({reason or 'no reason'})",
                f"{canary} reports fw {back} (ran {before} before the update)",
                f"otadata: {ota}",
            )
        )
        staged = (
            rep.outcome == "deployed"
            and rep.canary == {canary: "SUCCEEDED"}
            and rep2.outcome == "aborted"
            and not rest_jobs
        )
        self.results.append(
            (cl.met if staged else cl.not_met)(
                "lens.staged_rollout",
                f"{self.ts(t0)} rollout {new} to {len(self.things)} kits, canary 1: "
                f"canary {rep.canary}, then the rest: {rep.outcome} ({rep.message})",
                f"{self.ts(t1)} rollout {bad}, canary 1, abort above 0% failed: "
                f"{rep2.outcome} ({rep2.message}); rest job executions: {len(rest_jobs)}",
            )
        )
        return self.results

    @staticmethod
    def _otadata(kit: SimKit) -> str:
        p = kit.root / "otadata.json"
        try:
            return json.dumps(json.loads(p.read_text()), separators=(",", ":"))
        except (OSError, ValueError):
            return "(none)"
