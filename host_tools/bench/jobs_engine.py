"""Emulation of the AWS IoT Jobs service (device MQTT API and operator API), without MQTT.

:class:`JobsEngine` holds jobs and their executions. Device requests
(:meth:`JobsEngine.handle`) return the replies AWS IoT would publish; every change
also returns the ``notify`` / ``notify-next`` messages it causes. Operator calls
(:meth:`create_job`, :meth:`cancel_job`, ...) mirror the AWS IoT control-plane API.
Jobs can be kept in a directory, one JSON file per job, so they survive a bench
restart (like :mod:`host_tools.bench.shadow_engine`).

Behaviour follows the AWS IoT developer guide ("Jobs device MQTT API", "Job execution
states", "ErrorResponse") and ``shared/AWS_IOT_PROTOCOLS.md``:

- pending executions are QUEUED or IN_PROGRESS; the next one (``$next``) is the oldest
  IN_PROGRESS one, else the oldest QUEUED one;
- a device may set IN_PROGRESS, SUCCEEDED, FAILED or REJECTED; SUCCEEDED, FAILED,
  REJECTED, CANCELED, TIMED_OUT and REMOVED are terminal;
- ``expectedVersion`` must equal the execution's ``versionNumber`` (VersionMismatch);
- ``stepTimeoutInMinutes`` (start-next, update) and the job's
  ``timeoutConfig.inProgressTimeoutInMinutes`` end an unfinished execution TIMED_OUT;
- ``abortConfig.criteriaList`` cancels the job when its failure threshold is reached.

Example::

    eng = JobsEngine(Path("jobs"), resolve=lambda t: [t])
    out = eng.create_job("j1", {"operation": "x"}, ["kit-1"])   # notify + notify-next
    out = eng.handle("kit-1", None, "start-next", b"{}")
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOB_ID_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
THING_RE = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
DETAIL_KEY_RE = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
MAX_CLIENT_TOKEN_BYTES = 64
MAX_DETAIL_VALUE = 1024
MAX_DETAILS = 10
MAX_STEP_TIMEOUT_MIN = 10080
STORE_FORMAT = 1

DEVICE_STATES = ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED")
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "REJECTED", "CANCELED", "TIMED_OUT", "REMOVED"})
ALL_STATES = ("QUEUED", *DEVICE_STATES, "CANCELED", "TIMED_OUT", "REMOVED")
FAILURE_TYPES = {"FAILED": {"FAILED"}, "REJECTED": {"REJECTED"}, "TIMED_OUT": {"TIMED_OUT"}}
FAILURE_TYPES["ALL"] = {"FAILED", "REJECTED", "TIMED_OUT"}

# (thing, topic suffix under $aws/things/{thing}/jobs/, document)
Publication = tuple[str, str, dict[str, Any]]


class JobsError(Exception):
    """A device request the Jobs service answers on ``.../rejected``."""

    def __init__(
        self, code: str, message: str, token: str | None = None, state: dict | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.token, self.state = code, message, token, state


class OperatorError(ValueError):
    """An operator call that cannot be done (unknown job, bad target, duplicate id)."""


@dataclasses.dataclass
class Execution:
    """One job execution (one job on one thing)."""

    thing: str
    status: str = "QUEUED"
    status_details: dict[str, str] = dataclasses.field(default_factory=dict)
    queued_at: int = 0
    started_at: int | None = None
    last_updated_at: int = 0
    version: int = 1
    number: int = 1
    step_deadline: float | None = None
    seq: int = 0

    def state(self) -> dict[str, Any]:
        """JobExecutionState: ``{status, statusDetails, versionNumber}``."""
        return {
            "status": self.status,
            "statusDetails": dict(self.status_details),
            "versionNumber": self.version,
        }


@dataclasses.dataclass
class Job:
    """A job: document, targets, options and its executions by thing."""

    job_id: str
    document: dict[str, Any]
    targets: list[str]
    status: str = "IN_PROGRESS"
    created_at: int = 0
    last_updated_at: int = 0
    completed_at: int | None = None
    description: str = ""
    comment: str = ""
    reason_code: str = ""
    abort_config: dict[str, Any] | None = None
    timeout_config: dict[str, Any] | None = None
    force_canceled: bool = False
    executions: dict[str, Execution] = dataclasses.field(default_factory=dict)


def _exec_from(data: dict[str, Any]) -> Execution:
    return Execution(**data)


def _job_from(data: dict[str, Any]) -> Job:
    data = dict(data)
    data["executions"] = {t: _exec_from(e) for t, e in data["executions"].items()}
    return Job(**data)


class JobStore:
    """One JSON file per job in a directory, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def save(self, job: Job) -> None:
        data = {"format": STORE_FORMAT, **dataclasses.asdict(job)}
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.directory / f"{job.job_id}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self) -> dict[str, Job]:
        jobs: dict[str, Job] = {}
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.pop("format", None) != STORE_FORMAT:
                    raise ValueError("not a job record")
                job = _job_from(data)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("job store: ignoring unreadable %s (%s)", path, exc)
                continue
            jobs[job.job_id] = job
        return jobs


def _token(request: dict[str, Any]) -> str | None:
    value = request.get("clientToken")
    if value is None:
        return None
    if not isinstance(value, str) or len(value.encode()) > MAX_CLIENT_TOKEN_BYTES:
        raise JobsError("InvalidRequest", "Invalid clientToken")
    return value


def _parse(payload: bytes) -> dict[str, Any]:
    """A request body (empty means ``{}``); InvalidJson when it is not a JSON object."""
    if not payload.strip():
        return {}
    try:
        request = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise JobsError("InvalidJson", "Request payload is not valid UTF-8 JSON") from None
    if not isinstance(request, dict):
        raise JobsError("InvalidJson", "Request payload must be a JSON object")
    return request


def _details(value: Any, token: str | None) -> dict[str, str]:
    ok = isinstance(value, dict) and len(value) <= MAX_DETAILS
    ok = ok and all(
        isinstance(k, str)
        and DETAIL_KEY_RE.fullmatch(k)
        and isinstance(v, str)
        and 0 < len(v) <= MAX_DETAIL_VALUE
        for k, v in value.items()
    )
    if not ok:
        raise JobsError(
            "InvalidRequest",
            "statusDetails must map up to 10 names to non-empty strings of at most 1024 characters",
            token,
        )
    return dict(value)


def _step_timeout(value: Any, token: str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10080:
        raise JobsError("InvalidRequest", "stepTimeoutInMinutes must be 1 to 10080", token)
    return value


class JobsEngine:
    """The Jobs service's logic. Thread-safe (one lock around every public method)."""

    def __init__(
        self,
        store_dir: Path | None = None,
        resolve: Callable[[str], list[str]] | None = None,
        clock: Callable[[], float] = time.time,
        minute_s: float = 60.0,
    ) -> None:
        """Create an engine.

        Args:
            store_dir: Directory with one JSON file per job (loaded now); None keeps
                jobs in memory only.
            resolve: Maps one target (thing name, group name or ARN) to thing names;
                raises :class:`OperatorError` for an unknown target. Default: a plain
                thing name or a ``thing/NAME`` ARN.
            clock: Time source in epoch seconds.
            minute_s: Length of a "minute" of the timeouts (tests shorten it).
        """
        self._clock = clock
        self._minute = minute_s
        self._resolve = resolve or _default_resolve
        self._lock = threading.RLock()
        self._store = JobStore(store_dir) if store_dir is not None else None
        self._jobs: dict[str, Job] = self._store.load() if self._store else {}
        self._seq = max(
            (e.seq for j in self._jobs.values() for e in j.executions.values()), default=0
        )

    # -- device API ---------------------------------------------------------------
    def handle(self, thing: str, job_id: str | None, op: str, payload: bytes) -> list[Publication]:
        """Process one device request; return replies then notifications, in order.

        Args:
            thing: Thing name from the topic.
            job_id: The ``{jobId}`` of ``{jobId}/get`` and ``{jobId}/update`` (may be
                ``$next`` for get), None for ``get`` and ``start-next``.
            op: ``get``, ``start-next`` or ``update``.
            payload: Raw MQTT payload.

        Returns:
            ``(thing, suffix, document)`` triples, e.g. ``(T, "start-next/accepted", {...})``
            followed by ``(T, "notify-next", {...})``.
        """
        base = op if job_id is None else f"{job_id}/{op}"
        with self._lock:
            now = int(self._clock())
            token = None
            try:
                request = _parse(payload)
                token = _token(request)
                before = self._snapshot(self._affected(thing, job_id))
                if job_id is None and op == "get":
                    reply = self._get_pending(thing, now)
                elif job_id is None and op == "start-next":
                    reply = self._start_next(thing, request, token, now)
                elif job_id is not None and op == "get":
                    reply = self._describe(thing, job_id, request, token, now)
                elif job_id is not None and op == "update":
                    reply = self._update(thing, job_id, request, token, now)
                else:
                    raise JobsError("InvalidTopic", f"Unknown jobs operation {base}", token)
            except JobsError as exc:
                error: dict[str, Any] = {"code": exc.code, "message": exc.message}
                if exc.token is not None or token is not None:
                    error["clientToken"] = exc.token if exc.token is not None else token
                error["timestamp"] = now
                if exc.state is not None:
                    error["executionState"] = exc.state
                return [(thing, f"{base}/rejected", error)]
            reply["timestamp"] = now
            if token is not None:
                reply["clientToken"] = token
            out: list[Publication] = [(thing, f"{base}/accepted", reply)]
            out += self._notifications(before, now)
            return copy.deepcopy(out)

    def _affected(self, thing: str, job_id: str | None) -> list[str]:
        """Things whose queues a request may change (an abort cancels a whole job)."""
        job = self._jobs.get(job_id) if job_id else None
        return [thing] + [t for t in job.executions if t != thing] if job else [thing]

    def _pending(self, thing: str) -> list[tuple[Job, Execution]]:
        """Pending executions of a thing: IN_PROGRESS first, then QUEUED, oldest first."""
        items = [
            (job, job.executions[thing])
            for job in self._jobs.values()
            if thing in job.executions and job.executions[thing].status in ("QUEUED", "IN_PROGRESS")
        ]
        return sorted(items, key=lambda je: (je[1].status != "IN_PROGRESS", je[1].seq))

    def _execution_doc(self, job: Job, ex: Execution, now: float, document: bool = True) -> dict:
        doc: dict[str, Any] = {
            "jobId": job.job_id,
            "thingName": ex.thing,
            "status": ex.status,
            "statusDetails": dict(ex.status_details),
            "queuedAt": ex.queued_at,
            "lastUpdatedAt": ex.last_updated_at,
            "versionNumber": ex.version,
            "executionNumber": ex.number,
        }
        if document:
            doc["jobDocument"] = job.document
        if ex.started_at is not None:
            doc["startedAt"] = ex.started_at
        deadline = self._deadline(job, ex)
        if deadline is not None and ex.status not in TERMINAL:
            doc["approximateSecondsBeforeTimedOut"] = max(0, int(deadline - now))
        return doc

    @staticmethod
    def _summary(job: Job, ex: Execution) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "jobId": job.job_id,
            "queuedAt": ex.queued_at,
            "lastUpdatedAt": ex.last_updated_at,
            "versionNumber": ex.version,
            "executionNumber": ex.number,
        }
        if ex.started_at is not None:
            doc["startedAt"] = ex.started_at
        return doc

    def _get_pending(self, thing: str, now: int) -> dict[str, Any]:
        pend = self._pending(thing)
        return {
            "inProgressJobs": [self._summary(j, e) for j, e in pend if e.status == "IN_PROGRESS"],
            "queuedJobs": [self._summary(j, e) for j, e in pend if e.status == "QUEUED"],
        }

    def _start_next(self, thing: str, req: dict, token: str | None, now: int) -> dict[str, Any]:
        details = _details(req["statusDetails"], token) if "statusDetails" in req else None
        step = _step_timeout(req.get("stepTimeoutInMinutes"), token)
        pend = self._pending(thing)
        if not pend:
            return {}
        job, ex = pend[0]
        if ex.status == "QUEUED":
            ex.status, ex.started_at = "IN_PROGRESS", now
            if details is not None:
                ex.status_details = details
            ex.version += 1
            ex.last_updated_at = now
            if step is not None:
                ex.step_deadline = self._clock() + step * self._minute
            self._commit(job)
        return {"execution": self._execution_doc(job, ex, now)}

    def _find(self, thing: str, job_id: str, token: str | None) -> tuple[Job, Execution]:
        if not JOB_ID_RE.fullmatch(job_id):
            raise JobsError("InvalidRequest", f"Invalid jobId {job_id!r}", token)
        job = self._jobs.get(job_id)
        if job is None or thing not in job.executions:
            raise JobsError(
                "ResourceNotFound", f"Job execution not found for job {job_id} on {thing}", token
            )
        return job, job.executions[thing]

    def _describe(self, thing: str, job_id: str, req: dict, token: str | None, now: int) -> dict:
        include = req.get("includeJobDocument", True)
        if job_id == "$next":
            pend = self._pending(thing)
            if not pend:
                return {}
            job, ex = pend[0]
        else:
            job, ex = self._find(thing, job_id, token)
        number = req.get("executionNumber")
        if number is not None and number != ex.number:
            raise JobsError("ResourceNotFound", f"No execution number {number} of {job_id}", token)
        return {"execution": self._execution_doc(job, ex, now, include is not False)}

    def _update(self, thing: str, job_id: str, req: dict, token: str | None, now: int) -> dict:
        status = req.get("status")
        if not isinstance(status, str) or status not in ALL_STATES:
            raise JobsError("InvalidRequest", "status must be a job execution status", token)
        details = _details(req["statusDetails"], token) if "statusDetails" in req else None
        step = _step_timeout(req.get("stepTimeoutInMinutes"), token)
        expected = req.get("expectedVersion")
        if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)):
            raise JobsError("InvalidRequest", "expectedVersion must be an integer", token)
        job, ex = self._find(thing, job_id, token)
        number = req.get("executionNumber")
        if number is not None and number != ex.number:
            raise JobsError("ResourceNotFound", f"No execution number {number} of {job_id}", token)
        if ex.status in TERMINAL:
            raise JobsError(
                "TerminalStateReached",
                f"Job execution {job_id} on {thing} is in terminal state {ex.status}",
                token,
                ex.state(),
            )
        if expected is not None and expected != ex.version:
            raise JobsError(
                "VersionMismatch",
                f"expectedVersion {expected} does not match version {ex.version}",
                token,
                ex.state(),
            )
        if status not in DEVICE_STATES:
            raise JobsError(
                "InvalidStateTransition",
                f"Cannot change the job execution from {ex.status} to {status}",
                token,
                ex.state(),
            )
        if ex.status == "QUEUED" and status == "IN_PROGRESS":
            ex.started_at = now
        ex.status = status
        if details is not None:
            ex.status_details = details
        if step is not None:
            ex.step_deadline = self._clock() + step * self._minute
        ex.version += 1
        ex.last_updated_at = now
        self._after_terminal(job, now)
        self._commit(job)
        reply: dict[str, Any] = {}
        if req.get("includeJobExecutionState"):
            reply["executionState"] = ex.state()
        if req.get("includeJobDocument"):
            reply["jobDocument"] = job.document
        return reply

    # -- notifications ------------------------------------------------------------
    def _snapshot(self, things: Iterable[str]) -> dict[str, tuple[str | None, frozenset[str]]]:
        """Per thing: (next job id, set of pending job ids)."""
        snap = {}
        for thing in things:
            pend = self._pending(thing)
            snap[thing] = (
                pend[0][0].job_id if pend else None,
                frozenset(j.job_id for j, _ in pend),
            )
        return snap

    def _notifications(self, before: dict, now: int) -> list[Publication]:
        out: list[Publication] = []
        after = self._snapshot(before)
        for thing, (next_before, pending_before) in before.items():
            next_after, pending_after = after[thing]
            pend = self._pending(thing)
            if pending_after != pending_before:
                jobs: dict[str, list] = {}
                for job, ex in pend:
                    jobs.setdefault(ex.status, []).append(self._summary(job, ex))
                out.append((thing, "notify", {"jobs": jobs, "timestamp": now}))
            if next_after != next_before:
                doc: dict[str, Any] = {"timestamp": now}
                if pend:
                    doc = {"execution": self._execution_doc(pend[0][0], pend[0][1], now), **doc}
                out.append((thing, "notify-next", doc))
        return out

    # -- timers and abort ---------------------------------------------------------
    def _deadline(self, job: Job, ex: Execution) -> float | None:
        limits = []
        if ex.step_deadline is not None and ex.status == "IN_PROGRESS":
            limits.append(ex.step_deadline)
        minutes = (job.timeout_config or {}).get("inProgressTimeoutInMinutes")
        if minutes and ex.started_at is not None and ex.status == "IN_PROGRESS":
            limits.append(ex.started_at + minutes * self._minute)
        return min(limits) if limits else None

    def tick(self) -> list[Publication]:
        """End overdue IN_PROGRESS executions TIMED_OUT; return the notifications."""
        with self._lock:
            now_f = self._clock()
            now = int(now_f)
            due = [
                (job, ex)
                for job in self._jobs.values()
                for ex in job.executions.values()
                if ex.status == "IN_PROGRESS"
                and (d := self._deadline(job, ex)) is not None
                and d <= now_f
            ]
            if not due:
                return []
            before = self._snapshot({t for job, _ in due for t in job.executions})
            for job, ex in due:
                log.info("jobs: %s on %s timed out", job.job_id, ex.thing)
                self._end(ex, "TIMED_OUT", now)
            for job in {id(j): j for j, _ in due}.values():
                self._after_terminal(job, now)
                self._commit(job)
            return copy.deepcopy(self._notifications(before, now))

    @staticmethod
    def _end(ex: Execution, status: str, now: int) -> None:
        ex.status = status
        ex.version += 1
        ex.last_updated_at = now
        ex.step_deadline = None

    def _after_terminal(self, job: Job, now: int) -> None:
        """Apply the abort criteria, then mark the job COMPLETED when nothing is left."""
        if job.status == "IN_PROGRESS" and job.abort_config:
            done = [e for e in job.executions.values() if e.status in TERMINAL]
            for crit in job.abort_config.get("criteriaList", []):
                kinds = FAILURE_TYPES.get(crit.get("failureType", "ALL"), set())
                failed = sum(e.status in kinds for e in done)
                if (
                    len(done) >= int(crit.get("minNumberOfExecutedThings", 1))
                    and done
                    and 100.0 * failed / len(done) >= float(crit["thresholdPercentage"])
                ):
                    log.info("jobs: %s aborted (%d of %d failed)", job.job_id, failed, len(done))
                    self._cancel(job, False, "abort criteria reached", "ABORTED", now)
                    break
        if job.status == "IN_PROGRESS" and all(
            e.status in TERMINAL for e in job.executions.values()
        ):
            job.status, job.completed_at = "COMPLETED", now
        job.last_updated_at = now

    def _cancel(self, job: Job, force: bool, comment: str, reason: str, now: int) -> None:
        job.status, job.comment, job.reason_code = "CANCELED", comment, reason
        job.force_canceled = force
        job.completed_at = now
        for ex in job.executions.values():
            if ex.status == "QUEUED" or (force and ex.status == "IN_PROGRESS"):
                self._end(ex, "CANCELED", now)

    def _commit(self, job: Job) -> None:
        if self._store is not None:
            try:
                self._store.save(job)
            except OSError:
                log.exception("job store: cannot write %s", job.job_id)
                raise JobsError("InternalError", "Internal service failure") from None

    # -- operator API -------------------------------------------------------------
    def create_job(
        self,
        job_id: str,
        document: dict[str, Any],
        targets: list[str],
        description: str = "",
        abort_config: dict[str, Any] | None = None,
        timeout_config: dict[str, Any] | None = None,
    ) -> list[Publication]:
        """Create a job with one QUEUED execution per target thing (groups expanded).

        Returns:
            The notifications to publish (``notify``, ``notify-next`` per thing).

        Raises:
            OperatorError: Invalid or duplicate job id, empty or unknown target.
        """
        if not JOB_ID_RE.fullmatch(job_id):
            raise OperatorError(f"invalid job id {job_id!r} (1-64 of a-z A-Z 0-9 _ -)")
        if not isinstance(document, dict):
            raise OperatorError("the job document must be a JSON object")
        things: list[str] = []
        for target in targets:
            for thing in self._resolve(target):
                if thing not in things:
                    things.append(thing)
        if not things:
            raise OperatorError(f"job {job_id}: no target things")
        with self._lock:
            if job_id in self._jobs:
                raise OperatorError(f"a job with id {job_id} already exists")
            now = int(self._clock())
            before = self._snapshot(things)
            job = Job(job_id, copy.deepcopy(document), list(targets), created_at=now)
            job.last_updated_at, job.description = now, description
            job.abort_config, job.timeout_config = abort_config, timeout_config
            for thing in things:
                self._seq += 1
                ex = Execution(thing, queued_at=now, last_updated_at=now, seq=self._seq)
                job.executions[thing] = ex
            self._jobs[job_id] = job
            self._commit(job)
            return copy.deepcopy(self._notifications(before, now))

    def cancel_job(
        self, job_id: str, force: bool = False, comment: str = "", reason_code: str = ""
    ) -> list[Publication]:
        """Cancel a job: QUEUED executions become CANCELED (IN_PROGRESS ones too if force)."""
        with self._lock:
            job = self._job(job_id)
            now = int(self._clock())
            before = self._snapshot(job.executions)
            if job.status == "IN_PROGRESS" or (force and job.status == "CANCELED"):
                self._cancel(job, force, comment, reason_code, now)
                job.last_updated_at = now
                self._commit(job)
            return copy.deepcopy(self._notifications(before, now))

    def cancel_job_execution(
        self, job_id: str, thing: str, force: bool = False
    ) -> list[Publication]:
        """Cancel one execution (QUEUED; IN_PROGRESS only with ``force``)."""
        with self._lock:
            job = self._job(job_id)
            ex = job.executions.get(thing)
            if ex is None:
                raise OperatorError(f"job {job_id} has no execution on {thing}")
            if ex.status == "IN_PROGRESS" and not force:
                raise OperatorError(f"{job_id} on {thing} is IN_PROGRESS; use force")
            if ex.status in TERMINAL:
                raise OperatorError(f"{job_id} on {thing} is already {ex.status}")
            now = int(self._clock())
            before = self._snapshot(job.executions)
            self._end(ex, "CANCELED", now)
            self._after_terminal(job, now)
            self._commit(job)
            return copy.deepcopy(self._notifications(before, now))

    def _job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise OperatorError(f"no job {job_id!r}")
        return job

    def describe_job(self, job_id: str) -> dict[str, Any]:
        """The job as DescribeJob shows it, with ``jobProcessDetails`` counts."""
        with self._lock:
            job = self._job(job_id)
            counts = {s: 0 for s in ALL_STATES}
            for ex in job.executions.values():
                counts[ex.status] += 1
            names = {"IN_PROGRESS": "InProgress", "TIMED_OUT": "TimedOut"}
            details = {
                f"numberOf{names.get(s, s.capitalize())}Things": n for s, n in counts.items()
            }
            doc = {
                "jobId": job.job_id,
                "status": job.status,
                "document": job.document,
                "targets": job.targets,
                "description": job.description,
                "createdAt": job.created_at,
                "lastUpdatedAt": job.last_updated_at,
                "jobProcessDetails": details,
                "forceCanceled": job.force_canceled,
            }
            for key, value in (
                ("completedAt", job.completed_at),
                ("comment", job.comment),
                ("reasonCode", job.reason_code),
                ("abortConfig", job.abort_config),
                ("timeoutConfig", job.timeout_config),
            ):
                if value:
                    doc[key] = value
            return copy.deepcopy(doc)

    def describe_job_execution(self, job_id: str, thing: str) -> dict[str, Any]:
        """One execution as DescribeJobExecution shows it (with the job document)."""
        with self._lock:
            job = self._job(job_id)
            ex = job.executions.get(thing)
            if ex is None:
                raise OperatorError(f"job {job_id} has no execution on {thing}")
            return copy.deepcopy(self._execution_doc(job, ex, self._clock()))

    def list_job_executions(self, job_id: str) -> list[dict[str, Any]]:
        """Every execution of a job, oldest first, without the document."""
        with self._lock:
            job = self._job(job_id)
            now = self._clock()
            return copy.deepcopy(
                [
                    self._execution_doc(job, ex, now, document=False)
                    for ex in sorted(job.executions.values(), key=lambda e: e.seq)
                ]
            )

    def list_thing_executions(self, thing: str) -> list[dict[str, Any]]:
        """Every execution on a thing, oldest first, without the documents."""
        with self._lock:
            now = self._clock()
            items = [(j, j.executions[thing]) for j in self._jobs.values() if thing in j.executions]
            items.sort(key=lambda je: je[1].seq)
            return copy.deepcopy([self._execution_doc(j, e, now, False) for j, e in items])

    def list_jobs(self) -> list[dict[str, Any]]:
        """``[{jobId, status, createdAt}]`` of every job, oldest first."""
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: (j.created_at, j.job_id))
            return [
                {"jobId": j.job_id, "status": j.status, "createdAt": j.created_at} for j in jobs
            ]


def _default_resolve(target: str) -> list[str]:
    name = target.rsplit(":thing/", 1)[-1] if target.startswith("arn:") else target
    if not THING_RE.fullmatch(name):
        raise OperatorError(f"invalid target {target!r}")
    return [name]
