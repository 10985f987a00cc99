"""Staged OTA rollout through AWS IoT Jobs, on the bench or on AWS.

A deployment makes the bundle available as a stream (MQTT-based file delivery, file 0)
and creates jobs whose document tells the device agent what to fetch::

    {"operation": "thingkit.ota", "version": "1.2.0", "kind": "app",
     "streamId": "...", "fileId": 0, "size": N, "sha256": "<whole bundle>"}

With a canary (a count ``N`` or a share ``P%`` of the targets, taken in name order) the
deployment has two jobs: ``<id>-canary`` for the canary things, then ``<id>`` for the
rest. The rest is created only when every canary execution has ended (or the canary
time limit has passed: an unfinished canary counts as a failure) and the canary failure
rate is not above ``abort_failure_rate``; otherwise the canary job is cancelled and the
deployment reported aborted. Each job also carries an abort criterion
(``abortConfig``: failure type ALL, threshold = the rate) so the service itself stops a
failing rollout after the canary.

Backends: :class:`BenchBackend` (the bench's streams directory and Jobs service) and
:class:`AwsBackend` (boto3: S3 upload, ``create_stream``, ``create_job`` with thing
ARNs, ``abortConfig`` and optional ``jobExecutionsRolloutConfig``).

Example::

    plan = make_plan(Path("app-1.2.0.tkota"), ["fleet"], BenchBackend(bench).resolve,
                     canary="10%", abort_failure_rate=0.2)
    report = deploy(plan, BenchBackend(bench))
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from host_tools.errors import UserError
from host_tools.ota import bundle as bundle_mod

log = logging.getLogger("thingkit")

OPERATION = "thingkit.ota"
FAILED_STATES = frozenset({"FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED"})
TERMINAL_STATES = FAILED_STATES | {"SUCCEEDED"}
_JOB_ID_RE = re.compile(r"[a-zA-Z0-9_-]{1,56}")  # room for "-canary" within AWS's 64


@dataclass
class Stage:
    """One job of a deployment."""

    name: str  # "canary" or "rest" ("all" without a canary)
    job_id: str
    things: list[str]


@dataclass
class Plan:
    """What a deployment will do; printed by ``--dry-run``."""

    job_id: str
    target: str
    bundle: str
    version: str
    kind: str
    size: int
    sha256: str
    stream_id: str
    document: dict[str, Any]
    things: list[str]
    stages: list[Stage]
    abort_failure_rate: float
    canary_timeout_s: float
    abort_config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    """The outcome of :func:`deploy`."""

    job_id: str
    outcome: str  # "deployed" | "aborted" | "canary-only"
    canary: dict[str, str] = field(default_factory=dict)
    failure_rate: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backend(Protocol):
    """Where a deployment runs."""

    name: str

    def resolve(self, target: str) -> list[str]: ...
    def register_stream(self, plan: Plan, data: bytes) -> None: ...
    def create_job(self, plan: Plan, stage: Stage) -> None: ...
    def executions(self, job_id: str) -> dict[str, dict[str, Any]] | None: ...
    def cancel_job(self, job_id: str, comment: str) -> None: ...


# -- planning ---------------------------------------------------------------------------
def canary_size(spec: str | None, total: int) -> int:
    """How many things a ``--canary`` value selects out of ``total`` (0: no canary).

    ``"N"`` is a count, ``"P%"`` a share rounded up (at least 1 when P > 0).

    Raises:
        UserError: Not a count or a percentage.
    """
    if not spec:
        return 0
    text = spec.strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not 0 <= pct <= 100:
                raise ValueError
            return min(total, math.ceil(total * pct / 100.0)) if pct > 0 else 0
        n = int(text)
        if n < 0:
            raise ValueError
    except ValueError:
        raise UserError(f"bad --canary {spec!r}", "give a count (5) or a share (10%)") from None
    return min(total, n)


def abort_config(rate: float, executed: int) -> dict[str, Any] | None:
    """The AWS ``abortConfig`` for a failure rate (None when the rate is 1, never abort)."""
    if rate >= 1.0:
        return None
    return {
        "criteriaList": [
            {
                "failureType": "ALL",
                "action": "CANCEL",
                "thresholdPercentage": round(max(rate, 0.0) * 100.0, 2) or 0.01,
                "minNumberOfExecutedThings": max(1, executed),
            }
        ]
    }


def make_plan(
    bundle_path: Path,
    to: list[str],
    resolve: Callable[[str], list[str]],
    canary: str | None = None,
    abort_failure_rate: float = 0.2,
    job_id: str | None = None,
    target: str = "bench",
    canary_timeout_s: float = 600.0,
    allow_unsigned: bool = False,
) -> Plan:
    """Read the bundle, resolve the targets and split them into stages.

    Raises:
        UserError: Unreadable, malformed or unsigned bundle; no targets; bad options.
    """
    data = Path(bundle_path).read_bytes() if Path(bundle_path).is_file() else None
    if data is None:
        raise UserError(f"no bundle file {bundle_path}", where="thingkit ota build/sign")
    parsed = bundle_mod.parse(data, where=str(bundle_path))
    if not parsed.signed and not allow_unsigned:
        raise UserError(
            f"{bundle_path} is not signed",
            "devices refuse unsigned bundles",
            "thingkit ota sign (or --allow-unsigned to test refusal)",
        )
    if not 0.0 <= abort_failure_rate <= 1.0:
        raise UserError("--abort-failure-rate must be between 0 and 1")
    version, kind = str(parsed.manifest["version"]), str(parsed.manifest["kind"])
    job_id = job_id or f"ota-{version.replace('.', '-')}-{int(time.time())}"
    if not _JOB_ID_RE.fullmatch(job_id):
        raise UserError(f"bad job id {job_id!r}", "1-56 of a-z A-Z 0-9 _ -")
    things: list[str] = []
    for t in to:
        try:
            members = resolve(t)
        except ValueError as exc:
            raise UserError(f"unknown target {t!r}", str(exc)) from None
        things += [m for m in members if m not in things]
    if not things:
        raise UserError("no things to deploy to", f"targets: {', '.join(to)}")
    things.sort()
    digest = hashlib.sha256(data).hexdigest()
    document = {
        "operation": OPERATION,
        "version": version,
        "kind": kind,
        "streamId": job_id,
        "fileId": 0,
        "size": len(data),
        "sha256": digest,
    }
    n = canary_size(canary, len(things))
    if 0 < n < len(things):
        stages = [
            Stage("canary", f"{job_id}-canary", things[:n]),
            Stage("rest", job_id, things[n:]),
        ]
    else:
        stages = [Stage("all", job_id, things)]
    rest = stages[-1].things
    return Plan(
        job_id=job_id,
        target=target,
        bundle=str(bundle_path),
        version=version,
        kind=kind,
        size=len(data),
        sha256=digest,
        stream_id=job_id,
        document=document,
        things=things,
        stages=stages,
        abort_failure_rate=abort_failure_rate,
        canary_timeout_s=canary_timeout_s,
        abort_config=abort_config(abort_failure_rate, min(len(rest), 10)),
    )


# -- running ----------------------------------------------------------------------------
def wait_stage(
    backend: Backend,
    stage: Stage,
    timeout_s: float,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """Poll a stage's executions until all have ended or ``timeout_s`` passes.

    Returns:
        thing -> status at the end (unfinished ones keep QUEUED / IN_PROGRESS).
    """
    deadline = clock() + timeout_s
    while True:
        execs = backend.executions(stage.job_id) or {}
        status = {t: execs.get(t, {}).get("status", "QUEUED") for t in stage.things}
        if all(s in TERMINAL_STATES for s in status.values()) or clock() >= deadline:
            return status
        sleep(poll_s)


def failure_rate(status: dict[str, str]) -> float:
    """Share of executions that did not succeed (unfinished ones count as failed)."""
    if not status:
        return 0.0
    return sum(s != "SUCCEEDED" for s in status.values()) / len(status)


def deploy(
    plan: Plan,
    backend: Backend,
    data: bytes | None = None,
    poll_s: float = 1.0,
    progress: Callable[[str], None] = log.info,
) -> Report:
    """Run a plan: register the stream, then the stages (canary first, see module doc)."""
    data = data if data is not None else Path(plan.bundle).read_bytes()
    backend.register_stream(plan, data)
    progress(f"stream {plan.stream_id}: {plan.size} bytes registered on {backend.name}")
    report = Report(plan.job_id, "deployed")
    for stage in plan.stages:
        backend.create_job(plan, stage)
        progress(f"job {stage.job_id} ({stage.name}): {len(stage.things)} things")
        if stage.name != "canary":
            continue
        status = wait_stage(backend, stage, plan.canary_timeout_s, poll_s)
        report.canary = status
        report.failure_rate = rate = failure_rate(status)
        summary = ", ".join(f"{t} {s}" for t, s in sorted(status.items()))
        progress(f"canary: {summary}; failure rate {rate:.0%}")
        if rate > plan.abort_failure_rate:
            unfinished = [t for t, s in status.items() if s not in TERMINAL_STATES]
            if unfinished:  # a job whose executions all ended is COMPLETED already
                backend.cancel_job(stage.job_id, f"canary failure rate {rate:.0%}")
            report.outcome = "aborted"
            report.message = (
                f"canary failure rate {rate:.0%} is above {plan.abort_failure_rate:.0%}: "
                f"{len(plan.stages[-1].things)} things not deployed"
                + (f"; job {stage.job_id} cancelled" if unfinished else "")
            )
            return report
    report.message = f"{len(plan.things)} things targeted by {len(plan.stages)} job(s)"
    return report


def status(job_id: str, backend: Backend) -> list[dict[str, Any]]:
    """Per device: ``{thing, job, stage, status, statusDetails}`` across a deployment's jobs.

    Raises:
        UserError: Neither ``job_id`` nor ``job_id-canary`` exists.
    """
    rows: list[dict[str, Any]] = []
    found = False
    for stage, jid in (("canary", f"{job_id}-canary"), ("rest", job_id)):
        execs = backend.executions(jid)
        if execs is None:
            continue
        if stage == "rest" and not found:
            stage = "all"  # a deployment without a canary
        found = True
        for thing, ex in sorted(execs.items()):
            rows.append(
                {
                    "thing": thing,
                    "job": jid,
                    "stage": stage,
                    "status": ex.get("status", "?"),
                    "statusDetails": ex.get("statusDetails", {}),
                }
            )
    if not found:
        raise UserError(f"no deployment {job_id!r}", f"no job {job_id} or {job_id}-canary")
    return rows


# -- bench backend ----------------------------------------------------------------------
class BenchBackend:
    """The local bench: streams in its state directory, jobs through its Jobs service."""

    name = "bench"

    def __init__(self, bench: Any, timeout: float = 10.0) -> None:
        from host_tools.bench.jobs_service import JobsOperator

        self.bench = bench
        bench.require_up()
        self.ops = JobsOperator(bench, timeout)
        self.ops.start()

    def close(self) -> None:
        self.ops.stop()

    def resolve(self, target: str) -> list[str]:
        from host_tools.bench.jobs_service import resolve_target

        return resolve_target(self.bench.layout, target)

    def register_stream(self, plan: Plan, data: bytes) -> None:
        from host_tools.bench.streams_service import register_stream

        register_stream(self.bench.layout.streams, plan.stream_id, {0: data}, plan.job_id)

    def create_job(self, plan: Plan, stage: Stage) -> None:
        self.ops.create_job(
            stage.job_id,
            plan.document,
            stage.things,
            description=f"thingkit OTA {plan.version} ({stage.name})",
            abort_config=None if stage.name == "canary" else plan.abort_config,
        )

    def executions(self, job_id: str) -> dict[str, dict[str, Any]] | None:
        try:
            rows = self.ops.list_job_executions(job_id)
        except UserError as exc:
            if "no job" in str(exc):
                return None
            raise
        return {r["thingName"]: r for r in rows}

    def cancel_job(self, job_id: str, comment: str) -> None:
        self.ops.cancel_job(job_id, comment=comment)


# -- AWS backend ------------------------------------------------------------------------
class AwsBackend:
    """AWS IoT Jobs + MQTT-based file delivery through boto3.

    Args:
        iot: A boto3 ``iot`` client.
        s3: A boto3 ``s3`` client.
        bucket: S3 bucket for the bundle (key ``thingkit-ota/<job>.tkota``).
        stream_role_arn: IAM role that lets AWS IoT read the bundle from S3.
        max_per_minute: Optional ``jobExecutionsRolloutConfig.maximumPerMinute``.
    """

    name = "aws"

    def __init__(
        self,
        iot: Any,
        s3: Any,
        bucket: str,
        stream_role_arn: str,
        max_per_minute: int | None = None,
    ) -> None:
        self.iot, self.s3, self.bucket = iot, s3, bucket
        self.role = stream_role_arn
        self.max_per_minute = max_per_minute
        self.details = False  # status(): one DescribeJobExecution per device for statusDetails
        self._arns: dict[str, str] = {}

    def close(self) -> None:
        return None

    def resolve(self, target: str) -> list[str]:
        from botocore.exceptions import ClientError

        kind, name = "", target
        if target.startswith("arn:"):
            res = target.split(":", 5)[-1]
            kind, _, name = res.partition("/")
        elif target.startswith(("group:", "thing:")):
            kind, _, name = target.partition(":")
            kind = "thinggroup" if kind == "group" else kind
        if kind in ("", "thing"):
            try:
                self._arns[name] = self.iot.describe_thing(thingName=name)["thingArn"]
                return [name]
            except ClientError:
                if kind == "thing":
                    raise ValueError(f"no thing {name}") from None
        try:
            self.iot.describe_thing_group(thingGroupName=name)
        except ClientError:
            raise ValueError(f"no thing or thing group {name}") from None
        things: list[str] = []
        for page in self.iot.get_paginator("list_things_in_thing_group").paginate(
            thingGroupName=name
        ):
            things += page["things"]
        for t in things:
            self._arns.setdefault(t, self.iot.describe_thing(thingName=t)["thingArn"])
        return things

    def key(self, plan: Plan) -> str:
        return f"thingkit-ota/{plan.job_id}.tkota"

    def register_stream(self, plan: Plan, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key(plan), Body=data)
        self.iot.create_stream(
            streamId=plan.stream_id,
            description=f"thingkit OTA {plan.version}",
            files=[{"fileId": 0, "s3Location": {"bucket": self.bucket, "key": self.key(plan)}}],
            roleArn=self.role,
        )

    def job_request(self, plan: Plan, stage: Stage) -> dict[str, Any]:
        """The ``create_job`` arguments for a stage (also shown by ``--dry-run``)."""
        req: dict[str, Any] = {
            "jobId": stage.job_id,
            "targets": [self._arns.get(t, t) for t in stage.things],
            "document": json.dumps(plan.document, separators=(",", ":")),
            "description": f"thingkit OTA {plan.version} ({stage.name})",
            "targetSelection": "SNAPSHOT",
        }
        if stage.name != "canary" and plan.abort_config:
            req["abortConfig"] = plan.abort_config
        if self.max_per_minute:
            req["jobExecutionsRolloutConfig"] = {"maximumPerMinute": self.max_per_minute}
        return req

    def policy_name(self, stage: Stage) -> str:
        return f"thingkit-ota-{stage.job_id}"

    def job_policy(self, plan: Plan, stage: Stage) -> dict[str, Any]:
        """The job's own least-privilege grant (``provisioning.aws.policy.ota_policy``)."""
        from provisioning.aws.policy import ota_policy

        arn = next(iter(self._arns.values()), "")
        parts = arn.split(":")
        partition, region, account = (parts[1], parts[3], parts[4]) if len(parts) > 5 else (
            "aws", self.iot.meta.region_name, "")  # fmt: skip
        return ota_policy(region, account, stage.job_id, plan.stream_id, partition)

    def grant(self, plan: Plan, stage: Stage) -> list[str]:
        """Create the job's policy and attach it to each target thing's certificates.

        Returns the principals it was attached to. The device policy names no job or
        stream, so without this grant a device could not update its execution or read
        the stream. Detach with ``thingkit teardown`` or by hand once the rollout is over.
        """
        name = self.policy_name(stage)
        self.iot.create_policy(
            policyName=name, policyDocument=json.dumps(self.job_policy(plan, stage))
        )
        attached = []
        for thing in stage.things:
            for principal in self.iot.list_thing_principals(thingName=thing)["principals"]:
                self.iot.attach_policy(policyName=name, target=principal)
                attached.append(principal)
        return attached

    def create_job(self, plan: Plan, stage: Stage) -> None:
        self.grant(plan, stage)
        self.iot.create_job(**self.job_request(plan, stage))

    def executions(self, job_id: str) -> dict[str, dict[str, Any]] | None:
        from botocore.exceptions import ClientError

        try:
            self.iot.describe_job(jobId=job_id)
        except ClientError:
            return None
        out: dict[str, dict[str, Any]] = {}
        token = None
        while True:
            kw = {"jobId": job_id, **({"nextToken": token} if token else {})}
            page = self.iot.list_job_executions_for_job(**kw)
            for s in page.get("executionSummaries", []):
                thing = s["thingArn"].rsplit("/", 1)[-1]
                out[thing] = {"status": s["jobExecutionSummary"]["status"]}
            token = page.get("nextToken")
            if not token:
                break
        if self.details:
            for thing, row in out.items():
                ex = self.iot.describe_job_execution(jobId=job_id, thingName=thing)
                row["statusDetails"] = (
                    ex["execution"].get("statusDetails", {}).get("detailsMap", {})
                )
        return out

    def cancel_job(self, job_id: str, comment: str) -> None:
        self.iot.cancel_job(jobId=job_id, reasonCode="CANARY_FAILED", comment=comment[:2028])
