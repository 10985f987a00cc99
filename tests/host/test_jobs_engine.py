"""The Jobs service logic (host_tools/bench/jobs_engine.py), without MQTT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host_tools.bench.jobs_engine import JobsEngine, OperatorError

T0 = 1_800_000_000


class Clock:
    def __init__(self) -> None:
        self.t = float(T0)

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def eng(clock: Clock) -> JobsEngine:
    return JobsEngine(clock=clock)


def req(eng: JobsEngine, thing: str, job: str | None, op: str, body: object = None):
    payload = (
        b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    return eng.handle(thing, job, op, payload)


def only(pubs, suffix: str) -> dict:
    docs = [d for _, s, d in pubs if s == suffix]
    assert len(docs) == 1, pubs
    return docs[0]


def test_create_job_notifies_and_queues(eng: JobsEngine) -> None:
    pubs = eng.create_job("j1", {"operation": "x"}, ["kit-1", "kit-2"])
    assert [(t, s) for t, s, _ in pubs] == [
        ("kit-1", "notify"),
        ("kit-1", "notify-next"),
        ("kit-2", "notify"),
        ("kit-2", "notify-next"),
    ]
    nxt = pubs[1][2]
    assert nxt["timestamp"] == T0
    assert nxt["execution"]["jobId"] == "j1" and nxt["execution"]["status"] == "QUEUED"
    assert nxt["execution"]["jobDocument"] == {"operation": "x"}
    assert pubs[0][2]["jobs"]["QUEUED"][0]["jobId"] == "j1"
    with pytest.raises(OperatorError, match="already exists"):
        eng.create_job("j1", {}, ["kit-1"])
    with pytest.raises(OperatorError, match="invalid job id"):
        eng.create_job("bad id", {}, ["kit-1"])


def test_get_pending_and_start_next_flow(eng: JobsEngine, clock: Clock) -> None:
    eng.create_job("j1", {"n": 1}, ["kit-1"])
    clock.t += 5
    eng.create_job("j2", {"n": 2}, ["kit-1"])
    got = only(req(eng, "kit-1", None, "get", {"clientToken": "tok"}), "get/accepted")
    assert got["clientToken"] == "tok"
    assert got["inProgressJobs"] == []
    assert [j["jobId"] for j in got["queuedJobs"]] == ["j1", "j2"]

    pubs = req(eng, "kit-1", None, "start-next", {"statusDetails": {"step": "download"}})
    ex = only(pubs, "start-next/accepted")["execution"]
    assert ex["jobId"] == "j1" and ex["status"] == "IN_PROGRESS"
    assert ex["versionNumber"] == 2 and ex["statusDetails"] == {"step": "download"}
    assert ex["startedAt"] == T0 + 5 and ex["jobDocument"] == {"n": 1}
    # The next job did not change (j1 was already next): no notify-next.
    assert [s for _, s, _ in pubs] == ["start-next/accepted"]
    # start-next again returns the job in progress, unchanged.
    ex2 = only(req(eng, "kit-1", None, "start-next", {}), "start-next/accepted")["execution"]
    assert ex2["jobId"] == "j1" and ex2["versionNumber"] == 2
    got = only(req(eng, "kit-1", None, "get"), "get/accepted")
    assert [j["jobId"] for j in got["inProgressJobs"]] == ["j1"]
    assert [j["jobId"] for j in got["queuedJobs"]] == ["j2"]

    pubs = req(
        eng,
        "kit-1",
        "j1",
        "update",
        {"status": "SUCCEEDED", "expectedVersion": 2, "includeJobExecutionState": True},
    )
    acc = only(pubs, "j1/update/accepted")
    assert acc["executionState"] == {
        "status": "SUCCEEDED",
        "statusDetails": {"step": "download"},
        "versionNumber": 3,
    }
    nxt = only(pubs, "notify-next")
    assert nxt["execution"]["jobId"] == "j2"
    assert only(pubs, "notify")["jobs"] == {"QUEUED": [only(pubs, "notify")["jobs"]["QUEUED"][0]]}
    assert eng.describe_job("j1")["status"] == "COMPLETED"


def test_start_next_when_idle_has_no_execution(eng: JobsEngine) -> None:
    doc = only(req(eng, "kit-9", None, "start-next", {"clientToken": "c"}), "start-next/accepted")
    assert doc == {"timestamp": T0, "clientToken": "c"}
    doc = only(req(eng, "kit-9", "$next", "get"), "$next/get/accepted")
    assert "execution" not in doc


def test_describe_execution(eng: JobsEngine) -> None:
    eng.create_job("j1", {"a": 1}, ["kit-1"])
    ex = only(req(eng, "kit-1", "j1", "get", {"clientToken": "x"}), "j1/get/accepted")
    assert ex["execution"]["jobDocument"] == {"a": 1} and ex["clientToken"] == "x"
    ex = only(req(eng, "kit-1", "j1", "get", {"includeJobDocument": False}), "j1/get/accepted")
    assert "jobDocument" not in ex["execution"]
    ex = only(req(eng, "kit-1", "$next", "get"), "$next/get/accepted")
    assert ex["execution"]["jobId"] == "j1"
    err = only(req(eng, "kit-2", "j1", "get", {"clientToken": "y"}), "j1/get/rejected")
    assert err["code"] == "ResourceNotFound" and err["clientToken"] == "y"
    err = only(req(eng, "kit-1", "j1", "get", {"executionNumber": 7}), "j1/get/rejected")
    assert err["code"] == "ResourceNotFound"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "InvalidJson"),
        (b"[1]", "InvalidJson"),
        ({"status": "DONE"}, "InvalidRequest"),
        ({}, "InvalidRequest"),
        ({"status": "IN_PROGRESS", "statusDetails": {"k": 5}}, "InvalidRequest"),
        ({"status": "IN_PROGRESS", "statusDetails": {"k": "x" * 1025}}, "InvalidRequest"),
        ({"status": "IN_PROGRESS", "clientToken": "t" * 65}, "InvalidRequest"),
        ({"status": "IN_PROGRESS", "stepTimeoutInMinutes": 0}, "InvalidRequest"),
        ({"status": "IN_PROGRESS", "expectedVersion": 5}, "VersionMismatch"),
        ({"status": "QUEUED"}, "InvalidStateTransition"),
        ({"status": "CANCELED"}, "InvalidStateTransition"),
    ],
)
def test_update_errors(eng: JobsEngine, body: object, code: str) -> None:
    eng.create_job("j1", {}, ["kit-1"])
    pubs = req(eng, "kit-1", "j1", "update", body)
    err = only(pubs, "j1/update/rejected")
    assert err["code"] == code and err["timestamp"] == T0 and err["message"]
    if code in ("VersionMismatch", "InvalidStateTransition"):
        assert err["executionState"] == {
            "status": "QUEUED",
            "statusDetails": {},
            "versionNumber": 1,
        }
    # Nothing changed.
    assert eng.describe_job_execution("j1", "kit-1")["versionNumber"] == 1


def test_update_unknown_job_and_terminal_state(eng: JobsEngine) -> None:
    err = only(
        req(eng, "kit-1", "nope", "update", {"status": "IN_PROGRESS"}), "nope/update/rejected"
    )
    assert err["code"] == "ResourceNotFound"
    eng.create_job("j1", {}, ["kit-1"])
    only(req(eng, "kit-1", "j1", "update", {"status": "IN_PROGRESS"}), "j1/update/accepted")
    only(
        req(eng, "kit-1", "j1", "update", {"status": "FAILED", "statusDetails": {"reason": "sig"}}),
        "j1/update/accepted",
    )
    for status in ("IN_PROGRESS", "SUCCEEDED", "FAILED"):
        err = only(
            req(eng, "kit-1", "j1", "update", {"status": status, "clientToken": "z"}),
            "j1/update/rejected",
        )
        assert err["code"] == "TerminalStateReached" and err["clientToken"] == "z"
        assert err["executionState"]["status"] == "FAILED"
        assert err["executionState"]["statusDetails"] == {"reason": "sig"}
    # A terminal execution can still be described.
    ex = only(req(eng, "kit-1", "j1", "get"), "j1/get/accepted")["execution"]
    assert ex["status"] == "FAILED" and ex["versionNumber"] == 3


def test_queued_may_be_rejected_directly(eng: JobsEngine) -> None:
    eng.create_job("j1", {}, ["kit-1"])
    pubs = req(
        eng, "kit-1", "j1", "update", {"status": "REJECTED", "statusDetails": {"reason": "old"}}
    )
    only(pubs, "j1/update/accepted")
    assert only(pubs, "notify-next") == {"timestamp": T0}
    assert only(pubs, "notify") == {"jobs": {}, "timestamp": T0}


def test_notify_next_when_second_job_goes_in_progress(eng: JobsEngine) -> None:
    """The developer guide's example: J1, J2 queued; J2 set IN_PROGRESS -> notify-next J2."""
    eng.create_job("J1", {}, ["kit-1"])
    eng.create_job("J2", {}, ["kit-1"])
    pubs = req(eng, "kit-1", "J2", "update", {"status": "IN_PROGRESS"})
    assert only(pubs, "notify-next")["execution"]["jobId"] == "J2"
    assert not [p for p in pubs if p[1] == "notify"]  # same pending set
    # Progress updates of the next job do not send notify-next.
    pubs = req(
        eng, "kit-1", "J2", "update", {"status": "IN_PROGRESS", "statusDetails": {"p": "50"}}
    )
    assert [s for _, s, _ in pubs] == ["J2/update/accepted"]


def test_cancel_job(eng: JobsEngine) -> None:
    eng.create_job("j1", {}, ["kit-1", "kit-2"])
    req(eng, "kit-2", None, "start-next", {})
    pubs = eng.cancel_job("j1", comment="bad build")
    assert [(t, s) for t, s, _ in pubs] == [("kit-1", "notify"), ("kit-1", "notify-next")]
    assert pubs[1][2] == {"timestamp": T0}
    execs = {e["thingName"]: e["status"] for e in eng.list_job_executions("j1")}
    assert execs == {"kit-1": "CANCELED", "kit-2": "IN_PROGRESS"}
    job = eng.describe_job("j1")
    assert job["status"] == "CANCELED" and job["comment"] == "bad build"
    # Not forced: the device in progress may finish.
    only(req(eng, "kit-2", "j1", "update", {"status": "SUCCEEDED"}), "j1/update/accepted")
    err = only(req(eng, "kit-1", "j1", "update", {"status": "IN_PROGRESS"}), "j1/update/rejected")
    assert err["code"] == "TerminalStateReached"


def test_force_cancel_ends_in_progress(eng: JobsEngine) -> None:
    eng.create_job("j1", {}, ["kit-1"])
    req(eng, "kit-1", None, "start-next", {})
    pubs = eng.cancel_job("j1", force=True)
    assert only(pubs, "notify-next") == {"timestamp": T0}
    err = only(req(eng, "kit-1", "j1", "update", {"status": "SUCCEEDED"}), "j1/update/rejected")
    assert err["code"] == "TerminalStateReached"
    assert err["executionState"]["status"] == "CANCELED"
    assert eng.describe_job("j1")["forceCanceled"] is True


def test_cancel_one_execution(eng: JobsEngine) -> None:
    eng.create_job("j1", {}, ["kit-1"])
    req(eng, "kit-1", None, "start-next", {})
    with pytest.raises(OperatorError, match="force"):
        eng.cancel_job_execution("j1", "kit-1")
    eng.cancel_job_execution("j1", "kit-1", force=True)
    assert eng.describe_job_execution("j1", "kit-1")["status"] == "CANCELED"
    assert eng.describe_job("j1")["status"] == "COMPLETED"


def test_step_timeout(eng: JobsEngine, clock: Clock) -> None:
    eng.create_job("j1", {}, ["kit-1"])
    eng.create_job("j2", {}, ["kit-1"])
    ex = only(
        req(eng, "kit-1", None, "start-next", {"stepTimeoutInMinutes": 2}), "start-next/accepted"
    )
    assert ex["execution"]["approximateSecondsBeforeTimedOut"] == 120
    clock.t += 100
    assert eng.tick() == []
    # An update with a new step timeout restarts the timer.
    req(eng, "kit-1", "j1", "update", {"status": "IN_PROGRESS", "stepTimeoutInMinutes": 1})
    clock.t += 59
    assert eng.tick() == []
    clock.t += 2
    pubs = eng.tick()
    assert only(pubs, "notify-next")["execution"]["jobId"] == "j2"
    assert eng.describe_job_execution("j1", "kit-1")["status"] == "TIMED_OUT"
    err = only(req(eng, "kit-1", "j1", "update", {"status": "SUCCEEDED"}), "j1/update/rejected")
    assert err["code"] == "TerminalStateReached"


def test_job_in_progress_timeout(eng: JobsEngine, clock: Clock) -> None:
    eng.create_job("j1", {}, ["kit-1"], timeout_config={"inProgressTimeoutInMinutes": 1})
    clock.t += 600  # queued time does not count
    assert eng.tick() == []
    req(eng, "kit-1", None, "start-next", {})
    clock.t += 61
    eng.tick()
    assert eng.describe_job("j1")["jobProcessDetails"]["numberOfTimedOutThings"] == 1


def test_abort_config_cancels_job(eng: JobsEngine) -> None:
    things = [f"kit-{i}" for i in range(5)]
    abort = {
        "criteriaList": [
            {
                "failureType": "ALL",
                "action": "CANCEL",
                "thresholdPercentage": 50,
                "minNumberOfExecutedThings": 2,
            }
        ]
    }
    eng.create_job("j1", {}, things, abort_config=abort)
    req(eng, "kit-0", "j1", "update", {"status": "FAILED"})
    assert eng.describe_job("j1")["status"] == "IN_PROGRESS"  # 1 executed < 2
    pubs = req(eng, "kit-1", "j1", "update", {"status": "REJECTED"})
    assert eng.describe_job("j1")["status"] == "CANCELED"
    # The other things were told their queue changed.
    assert {t for t, s, _ in pubs if s == "notify-next"} == {"kit-1", "kit-2", "kit-3", "kit-4"}
    execs = {e["thingName"]: e["status"] for e in eng.list_job_executions("j1")}
    assert execs == {
        "kit-0": "FAILED",
        "kit-1": "REJECTED",
        "kit-2": "CANCELED",
        "kit-3": "CANCELED",
        "kit-4": "CANCELED",
    }


def test_persistence(tmp_path: Path, clock: Clock) -> None:
    eng = JobsEngine(tmp_path, clock=clock)
    eng.create_job("j1", {"v": "1.2.0"}, ["kit-1"])
    req(eng, "kit-1", None, "start-next", {"statusDetails": {"p": "1"}})
    eng.create_job("j2", {}, ["kit-1"])
    again = JobsEngine(tmp_path, clock=clock)
    ex = again.describe_job_execution("j1", "kit-1")
    assert (
        ex["status"] == "IN_PROGRESS"
        and ex["statusDetails"] == {"p": "1"}
        and ex["versionNumber"] == 2
    )
    got = only(req(again, "kit-1", None, "get"), "get/accepted")
    assert [j["jobId"] for j in got["queuedJobs"]] == ["j2"]
    again.create_job("j3", {}, ["kit-1"])  # ordering continues after a reload
    got = only(req(again, "kit-1", None, "get"), "get/accepted")
    assert [j["jobId"] for j in got["queuedJobs"]] == ["j2", "j3"]
    (tmp_path / "junk.json").write_text("{")
    assert len(JobsEngine(tmp_path, clock=clock).list_jobs()) == 3


def test_operator_views(eng: JobsEngine) -> None:
    eng.create_job("j1", {}, ["kit-1", "kit-2"], description="d")
    req(eng, "kit-1", None, "start-next", {})
    job = eng.describe_job("j1")
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 1
    assert job["jobProcessDetails"]["numberOfInProgressThings"] == 1
    assert [e["thingName"] for e in eng.list_job_executions("j1")] == ["kit-1", "kit-2"]
    assert [e["jobId"] for e in eng.list_thing_executions("kit-2")] == ["j1"]
    with pytest.raises(OperatorError):
        eng.describe_job("zz")


def test_targets_resolved_through_resolver(clock: Clock) -> None:
    groups = {"canary": ["kit-1", "kit-2"]}

    def resolve(t: str) -> list[str]:
        if t in groups:
            return groups[t]
        if t.startswith("kit-"):
            return [t]
        raise OperatorError(f"unknown {t}")

    eng = JobsEngine(clock=clock, resolve=resolve)
    eng.create_job("j1", {}, ["canary", "kit-2", "kit-3"])
    assert [e["thingName"] for e in eng.list_job_executions("j1")] == ["kit-1", "kit-2", "kit-3"]
    with pytest.raises(OperatorError, match="unknown"):
        eng.create_job("j2", {}, ["nobody"])
