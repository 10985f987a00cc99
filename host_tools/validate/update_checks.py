"""``thingkit validate``: the update items, on virtual kits and the bench's Jobs service.

- ``lens.signed_updates``: an unsigned bundle and one signed by another key are refused
  by the device (job REJECTED/FAILED with its reason, running version unchanged); a
  bundle signed with the provisioned key installs and the kits report the new version.
  A firmware-kind job (a MicroPython app image) on the stock plain table ends FAILED
  with the reason before any block is asked for; on a kit made with board ``sim-ota``
  (the -OTA table) it is written to ota_1 and reported by its runtime version.
- ``lens.staged_rollout``: ``thingkit ota deploy``'s plan with one canary: the canary
  job runs first and only when it succeeds does the rest of the group get a job; a
  canary that fails aborts the rollout and the rest never get one.
- ``lens.rollback``: a signed version that cannot connect is installed on the canary,
  cannot confirm itself, and the boot selector (firmware/main.py) takes the kit back to
  the app slot it ran; the job ends FAILED with the reason.

The kits run the stock ESP32_GENERIC profile (plain partition table, no OTA partitions),
so the app updates are kind ``app``: thingkit's .mpy files in A/B slots on the
filesystem, which works on any table.
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


def fw_image(workdir: Path, version: str) -> Path:
    """A stand-in MicroPython app image (esptool's elf2image from a generated ELF; no
    MicroPython image can be downloaded here) whose app descriptor says ``v<version>``."""
    from host_tools.ota.app_image import stand_in_image

    p = workdir / f"ESP32_GENERIC-OTA-v{version}.app-bin"
    if not p.exists():
        p.write_bytes(stand_in_image(f"v{version}"))
    return p


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
        ota_kit: tuple[SimKit, str] | None = None,
    ) -> None:
        self.bench, self.obs, self.kits, self.things = bench, obs, kits, things
        self.ota_kit = ota_kit  # (kit made with board sim-ota, its thing)
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

    def _direct_job(
        self, data: bytes, version: str, kind: str = "app", thing: str | None = None
    ) -> tuple[str, dict]:
        """One job straight through the Jobs service (the rollout tool refuses unsigned
        bundles, as it should); returns the job id and the thing's final execution."""
        thing = thing or self.things[0]
        job = f"val-{uuid.uuid4().hex[:8]}"
        register_stream(self.bench.layout.streams, job, {0: data})
        doc = {"operation": rollout.OPERATION, "version": version, "kind": kind,
               "streamId": job, "fileId": 0, "size": len(data),
               "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
        with JobsOperator(self.bench) as ops:
            ops.create_job(job, doc, [thing])
            return job, self._wait_end(ops, job, thing, 90)

    def _block_requests(self, thing: str, job: str) -> int:
        topic = f"$aws/things/{thing}/streams/{job}/get/json"
        return sum(1 for m in list(self.obs.messages) if m.topic == topic)

    def _firmware_kind(self) -> tuple[bool, list[str]]:
        """Kind firmware: refused before any download on the plain table; installed and
        reported by its runtime version on the -OTA table (if a sim-ota kit is given)."""
        ev: list[str] = []
        t0 = time.time()
        canary = self.things[0]
        img = fw_image(self.workdir, "1.29.0")
        plain = ob.build_from_source(img, version=None, boards=["sim"], kind="firmware")
        job, ex = self._direct_job(ob.sign(plain, self.key), "1.29.0", "firmware")
        reason = (ex.get("statusDetails") or {}).get("reason", "")
        reqs = self._block_requests(canary, job)
        ok = ex.get("status") == "FAILED" and reason.startswith("no_ota_partitions") and not reqs
        ev.append(
            f"{self.ts(t0)} firmware-kind bundle (MicroPython app image v1.29.0, a stand-in "
            f"made by esptool) on {canary}, stock plain table: job {job} {ex.get('status')} "
            f"({reason or 'no reason'}); block requests seen: {reqs}"
        )
        if self.ota_kit is None:
            return ok, ev
        kit, thing = self.ota_kit
        t1 = time.time()
        data = ob.build_from_source(img, version=None, boards=["sim-ota"], kind="firmware")
        job, ex = self._direct_job(ob.sign(data, self.key), "1.29.0", "firmware", thing)
        det = ex.get("statusDetails") or {}
        ota = self._otadata(kit)
        good = (
            ex.get("status") == "SUCCEEDED"
            and det.get("runtime") == "v1.29.0"
            and det.get("slot") == "ota_1"
            and '"running":"ota_1"' in ota
        )
        ok &= good
        ev.append(
            f"{self.ts(t1)} the same image signed for board sim-ota (the -OTA table) on "
            f"{thing}: job {job} {ex.get('status')} {json.dumps(det, sort_keys=True)}; "
            f"otadata: {ota} (the sim shows the partition steps and versions, the unix "
            "binary itself does not change)"
        )
        return ok, ev

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
        good = ob.build_from_source(FIRMWARE, version=new, boards=["sim"], kind="app")
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
            f"{self.ts(t0)} app bundle {new} signed with the provisioned key: rollout "
            f"{rep.outcome}, canary {rep.canary}; reported fw {fws}"
        )
        fw_ok, fw_ev = self._firmware_kind()
        ok_signed &= fw_ok
        signed_ev += fw_ev
        self.results.append(
            (cl.met if ok_signed else cl.not_met)("lens.signed_updates", *signed_ev)
        )
        # 3. A signed version that cannot connect: canary rolls back, rollout aborts.
        t1 = time.time()
        before = self._fw(canary)
        slot_before = self._boot(self.kits[0]).get("run", "factory")
        broken = ob.build_from_source(
            broken_source(self.workdir), version=bad, boards=["sim"], kind="app"
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
        # Rolled back: the job failed after the new version was tried (the boot state
        # went back to the slot it ran), and the kit runs what it ran before.
        st = self._boot(self.kits[0])
        rolled = (
            cex.get("status") == "FAILED"
            and "not confirmed" in reason
            and back == before
            and not st.get("try")
            and st.get("run", "factory") == slot_before
        )
        self.results.append(
            (cl.met if rolled else cl.not_met)(
                "lens.rollback",
                f"{self.ts(t1)} signed app bundle {bad} that cannot connect sent to canary "
                f"{canary} (running app slot {slot_before})",
                f"job {plan2.stages[0].job_id}: {cex.get('status')} ({reason or 'no reason'})",
                f"{canary} reports fw {back} (ran {before} before the update)",
                f"boot state (ota/boot.json): {json.dumps(st, sort_keys=True)}",
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
    def _boot(kit: SimKit) -> dict:
        try:
            return json.loads((kit.flash / "ota" / "boot.json").read_text())
        except (OSError, ValueError):
            return {"run": "factory"}

    @staticmethod
    def _otadata(kit: SimKit) -> str:
        p = kit.root / "otadata.json"
        try:
            return json.dumps(json.loads(p.read_text()), separators=(",", ":"))
        except (OSError, ValueError):
            return "(none)"


UPDATE_HEAP = "224k"  # the update kits' heap budget (see updates_on_kits)
UPDATE_ITEMS = ("lens.signed_updates", "lens.rollback", "lens.staged_rollout")


def updates_on_kits(s) -> list[cl.Result]:
    """Signed updates, staged rollout and rollback, on a group of two more virtual kits
    (stock plain partition table: app updates), and firmware-kind updates on one more made
    with board ``sim-ota`` (the -OTA table), through the bench's Jobs service.

    They run with UPDATE_HEAP: code is .mpy files in the heap (no ROMFS on a stock image)
    and an update needs ~24 KB more, with room for fragmentation, on this 64-bit sim (at
    the default budget the device ends the job FAILED with out_of_memory and stays
    online; see docs/troubleshooting.rst, hil_tests/test_ota.py).
    """
    keepalive = int(s.dut.config()["mqtt"].get("keepalive_s", 30))
    names = [f"{s.thing}-b", f"{s.thing}-c"]
    ota_name = f"{s.thing}-ota"
    duts = []
    out: list[cl.Result] = []
    try:
        for name in [*names, ota_name]:
            dut = s.make_device(
                name,
                heap=UPDATE_HEAP,
                board="sim-ota" if name == ota_name else "sim",
                keepalive_s=keepalive,
                ota_confirm_s=CONFIRM_S,
            )
            duts.append(dut)
            dut.power_on()
        for dut in duts:
            dut.wait_for(r"shadow synced", timeout=60)
        kits = [d.kit for d in duts]
        checks = UpdateChecks(
            s.cloud.bench,
            s.observer,
            kits[:2],
            names,
            s.workdir,
            _stamp,
            ota_kit=(kits[2], ota_name),
        )
        for r in checks.run():
            r.evidence.append(
                f"update kits {', '.join(names)} (board sim) and {ota_name} (board "
                f"sim-ota): heap budget {UPDATE_HEAP}"
            )
            out.append(r)
    except Exception as e:  # noqa: BLE001 - reported as not met, with the reason
        done = {r.id for r in out}
        tail = " | ".join(duts[0].console().splitlines()[-6:]) if duts else ""
        out += [
            cl.not_met(i, f"update checks stopped: {e!r}", tail)
            for i in UPDATE_ITEMS
            if i not in done
        ]
    finally:
        for dut in duts:
            dut.power_off()
    return out


def _stamp(t: float) -> str:
    from host_tools.validate.engine import stamp

    return stamp(t)
