"""The Jobs service on a real bench (mosquitto + service process) with paho device clients:
every request and reply, error codes, notify/notify-next, cancellation, step timeout,
persistence across a bench restart, groups, and the ACL between things."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from host_tools.bench.bench import Bench
from host_tools.bench.jobs_service import DeviceSession, JobsOperator, set_group
from host_tools.errors import UserError

MOSQUITTO = Path("/usr/sbin/mosquitto")
pytestmark = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed")
MINUTE_S = 1.0  # the bench's job-timeout "minute", shortened for the timeout test


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    old = os.environ.get("THINGKIT_BENCH_MINUTE_S")
    os.environ["THINGKIT_BENCH_MINUTE_S"] = str(MINUTE_S)
    b = Bench(tmp_path_factory.mktemp("jobsbench") / "bench")
    try:
        b.up()
        yield b
    finally:
        b.down()
        if old is None:
            os.environ.pop("THINGKIT_BENCH_MINUTE_S", None)
        else:
            os.environ["THINGKIT_BENCH_MINUTE_S"] = old


@pytest.fixture(scope="module")
def ops(bench: Bench):
    with JobsOperator(bench) as o:
        yield o


@pytest.fixture
def device(bench: Bench, tmp_path: Path):
    made: list[DeviceSession] = []

    def make(thing: str) -> DeviceSession:
        d = DeviceSession.create(bench, thing, tmp_path)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def _notify_next(dev: DeviceSession, since: float, job: str | None, timeout: float = 10):
    def pred(topic: str, doc: dict) -> bool:
        if topic != f"$aws/things/{dev.thing}/jobs/notify-next":
            return False
        return (doc.get("execution") or {}).get("jobId") == job

    return dev.wait(pred, timeout, since=since)


def test_request_reply_flow(ops: JobsOperator, device) -> None:
    dev = device("flow-1")
    t0 = time.time()
    ops.create_job("flow-a", {"operation": "thingkit.ota", "version": "1.2.0"}, ["flow-1"])
    got = _notify_next(dev, t0, "flow-a")
    assert got is not None and got[1]["execution"]["jobDocument"]["version"] == "1.2.0"
    assert dev.wait(lambda t, d: t.endswith("/jobs/notify"), 5, since=t0) is not None

    status, doc = dev.jobs("get")
    assert status == "accepted" and [j["jobId"] for j in doc["queuedJobs"]] == ["flow-a"]
    status, doc = dev.jobs("start-next", statusDetails={"step": "download"})
    assert status == "accepted"
    ex = doc["execution"]
    assert (ex["jobId"], ex["status"], ex["versionNumber"]) == ("flow-a", "IN_PROGRESS", 2)
    assert ex["thingName"] == "flow-1" and ex["statusDetails"] == {"step": "download"}
    status, doc = dev.jobs("get", "$next")
    assert status == "accepted" and doc["execution"]["jobId"] == "flow-a"
    status, doc = dev.jobs(
        "update",
        "flow-a",
        status="SUCCEEDED",
        expectedVersion=2,
        statusDetails={"version": "1.2.0"},
        includeJobExecutionState=True,
    )
    assert status == "accepted" and doc["executionState"]["status"] == "SUCCEEDED"
    status, doc = dev.jobs("get", "flow-a")
    assert status == "accepted" and doc["execution"]["status"] == "SUCCEEDED"
    assert ops.describe_job("flow-a")["status"] == "COMPLETED"
    assert [e["status"] for e in ops.list_thing_executions("flow-1")] == ["SUCCEEDED"]


def test_error_codes(ops: JobsOperator, device) -> None:
    dev = device("err-1")
    ops.create_job("err-a", {}, ["err-1"])
    status, doc = dev.jobs("update", "err-a", status="IN_PROGRESS", expectedVersion=9)
    assert (status, doc["code"]) == ("rejected", "VersionMismatch")
    assert doc["executionState"] == {"status": "QUEUED", "statusDetails": {}, "versionNumber": 1}
    status, doc = dev.jobs("update", "err-a", status="QUEUED")
    assert doc["code"] == "InvalidStateTransition"
    status, doc = dev.jobs("update", "err-a", status="WHATEVER")
    assert doc["code"] == "InvalidRequest"
    status, doc = dev.jobs("update", "no-such-job", status="IN_PROGRESS")
    assert doc["code"] == "ResourceNotFound"
    assert dev.jobs("update", "err-a", status="FAILED")[0] == "accepted"
    status, doc = dev.jobs("update", "err-a", status="SUCCEEDED")
    assert doc["code"] == "TerminalStateReached" and doc["executionState"]["status"] == "FAILED"
    # A payload that is not JSON: the rejection has no client token to carry.
    t0 = time.time()
    dev.publish("$aws/things/err-1/jobs/err-a/update", b"{oops")
    got = dev.wait(lambda t, d: t.endswith("err-a/update/rejected"), 10, since=t0)
    assert got is not None and got[1]["code"] == "InvalidJson"


def test_cancellation_seen_by_device(ops: JobsOperator, device) -> None:
    dev = device("cancel-1")
    ops.create_job("cancel-a", {}, ["cancel-1"])
    ops.create_job("cancel-b", {}, ["cancel-1"])
    assert dev.jobs("start-next")[1]["execution"]["jobId"] == "cancel-a"
    t0 = time.time()
    ops.cancel_job("cancel-a", force=True, comment="bad build")
    assert _notify_next(dev, t0, "cancel-b") is not None
    _status, doc = dev.jobs("update", "cancel-a", status="SUCCEEDED")
    assert doc["code"] == "TerminalStateReached" and doc["executionState"]["status"] == "CANCELED"
    t0 = time.time()
    ops.cancel_job("cancel-b")
    got = dev.wait(lambda t, d: t.endswith("/notify-next") and "execution" not in d, 10, since=t0)
    assert got is not None
    assert dev.jobs("start-next")[1].get("execution") is None
    with pytest.raises(UserError, match="no job"):
        ops.cancel_job("never-created")


def test_step_timeout_times_out(ops: JobsOperator, device) -> None:
    dev = device("timeout-1")
    ops.create_job("timeout-a", {}, ["timeout-1"])
    _status, doc = dev.jobs("start-next", stepTimeoutInMinutes=2)  # 2 bench "minutes" = 2 s
    assert doc["execution"]["approximateSecondsBeforeTimedOut"] >= 1
    t0 = time.time()
    got = dev.wait(lambda t, d: t.endswith("/notify-next") and "execution" not in d, 15, since=t0)
    assert got is not None, "no notify-next after the step timeout"
    assert time.time() - t0 >= 1.0
    assert ops.describe_job_execution("timeout-a", "timeout-1")["status"] == "TIMED_OUT"


def test_groups_as_targets(bench: Bench, ops: JobsOperator, device) -> None:
    a, b = device("grp-1"), device("grp-2")
    set_group(bench.layout, "grp-canary", ["grp-1", "grp-2"])
    ops.create_job("grp-a", {}, ["group:grp-canary"])
    assert sorted(e["thingName"] for e in ops.list_job_executions("grp-a")) == ["grp-1", "grp-2"]
    for dev in (a, b):
        assert dev.jobs("get")[1]["queuedJobs"][0]["jobId"] == "grp-a"
    with pytest.raises(UserError, match="no registered thing or group"):
        ops.create_job("grp-b", {}, ["nobody-here"])


def test_acl_thing_cannot_touch_another_things_jobs(
    bench: Bench, ops: JobsOperator, device
) -> None:
    owner, intruder = device("acl-own"), device("acl-other")
    ops.create_job("acl-a", {"secret": 1}, ["acl-own"])
    t0 = time.time()
    # The intruder subscribes to the owner's replies and sends requests as if it were it.
    intruder.client.subscribe("$aws/things/acl-own/jobs/#", qos=1)
    intruder.publish("$aws/things/acl-own/jobs/start-next", {"clientToken": "x"})
    intruder.publish("$aws/things/acl-own/jobs/acl-a/update", {"status": "FAILED"})
    intruder.publish("bench/jobs/request", {"op": "cancel_job", "args": {"job_id": "acl-a"}})
    # The owner's own request goes through, and its reply never reaches the intruder.
    status, doc = owner.jobs("get", "acl-a")
    assert status == "accepted" and doc["execution"]["status"] == "QUEUED"
    assert doc["execution"]["versionNumber"] == 1
    time.sleep(1.0)
    assert not [m for m in intruder.messages if m[0] >= t0 and "acl-own" in m[1]]
    assert ops.describe_job("acl-a")["status"] == "IN_PROGRESS"
    broker_log = bench.broker_log()
    for topic in ("$aws/things/acl-own/jobs/start-next", "bench/jobs/request"):
        assert re.search(rf"Denied PUBLISH from acl-other \(.*'{re.escape(topic)}'", broker_log)


def test_jobs_survive_bench_restart(tmp_path: Path) -> None:
    b = Bench(tmp_path / "bench")
    b.up()
    try:
        dev = DeviceSession.create(b, "persist-1", tmp_path)
        with JobsOperator(b) as ops:
            ops.create_job("persist-a", {"v": 1}, ["persist-1"])
            ops.create_job("persist-b", {"v": 2}, ["persist-1"])
        dev.jobs("start-next", statusDetails={"progress": "40"})
        dev.close()
        port = b.port
        b.down()
        b.up(port=port)
        dev.connect()
        _status, doc = dev.jobs("get")
        assert [j["jobId"] for j in doc["inProgressJobs"]] == ["persist-a"]
        assert [j["jobId"] for j in doc["queuedJobs"]] == ["persist-b"]
        _status, doc = dev.jobs("get", "persist-a")
        assert doc["execution"]["statusDetails"] == {"progress": "40"}
        assert doc["execution"]["versionNumber"] == 2
        dev.close()
    finally:
        b.down()
