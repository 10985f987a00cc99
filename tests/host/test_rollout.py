"""Host rollout (``thingkit ota deploy|status``): planning, canary + abort on a real bench
with fake devices (paho clients that download the stream and succeed or fail), the CLI,
and the AWS path against moto (what moto lacks is stubbed or skipped, with the reason)."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import threading
from pathlib import Path

import pytest

from host_tools.bench.bench import Bench
from host_tools.bench.jobs_service import DeviceSession, JobsOperator, set_group
from host_tools.errors import UserError
from host_tools.ota import bundle, keys, rollout
from host_tools.ota.cli import register as register_ota

MOSQUITTO = Path("/usr/sbin/mosquitto")
BLOCK = 1024


@pytest.fixture(scope="module")
def signed_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bundle")
    key = keys.generate_key(d / "key.pem")
    files = {"tk/app2.mpy": bytes(range(256)) * 20, "tk/extra.mpy": b"\x4d" * 3000}
    data = bundle.sign(bundle.build(files, version="1.2.0", boards=["sim"]), key)
    path = d / "app-1.2.0.tkota"
    path.write_bytes(data)
    return path


# -- planning -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "total", "n"),
    [(None, 10, 0), ("3", 10, 3), ("20", 10, 10), ("10%", 10, 1), ("15%", 10, 2), ("1%", 3, 1)],
)
def test_canary_size(spec: str | None, total: int, n: int) -> None:
    assert rollout.canary_size(spec, total) == n


@pytest.mark.parametrize("spec", ["x", "-1", "150%", "%"])
def test_canary_size_refuses_bad_values(spec: str) -> None:
    with pytest.raises(UserError, match="bad --canary"):
        rollout.canary_size(spec, 10)


def test_plan_document_and_stages(signed_bundle: Path) -> None:
    groups = {"fleet": [f"kit-{i}" for i in (3, 1, 2, 5, 4)]}
    plan = rollout.make_plan(
        signed_bundle, ["fleet"], lambda t: groups[t], canary="40%", job_id="ota-a"
    )
    data = signed_bundle.read_bytes()
    assert plan.document == {
        "operation": "thingkit.ota",
        "version": "1.2.0",
        "kind": "app",
        "streamId": "ota-a",
        "fileId": 0,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert [(s.name, s.job_id, s.things) for s in plan.stages] == [
        ("canary", "ota-a-canary", ["kit-1", "kit-2"]),
        ("rest", "ota-a", ["kit-3", "kit-4", "kit-5"]),
    ]
    crit = plan.abort_config["criteriaList"][0]
    assert crit["failureType"] == "ALL" and crit["thresholdPercentage"] == 20.0
    assert crit["minNumberOfExecutedThings"] == 3
    plan = rollout.make_plan(signed_bundle, ["kit-1"], lambda t: [t], job_id="ota-b")
    assert [(s.name, s.things) for s in plan.stages] == [("all", ["kit-1"])]


def test_plan_refuses_unsigned_and_unknown(tmp_path: Path) -> None:
    path = tmp_path / "u.tkota"
    path.write_bytes(bundle.build({"tk/a.mpy": b"a"}, version="1.0.1", boards=["sim"]))
    with pytest.raises(UserError, match="not signed"):
        rollout.make_plan(path, ["kit-1"], lambda t: [t])
    assert rollout.make_plan(path, ["kit-1"], lambda t: [t], allow_unsigned=True).version == "1.0.1"

    def unknown(t: str) -> list[str]:
        raise ValueError(f"no {t}")

    with pytest.raises(UserError, match="unknown target"):
        rollout.make_plan(path, ["x"], unknown, allow_unsigned=True)
    with pytest.raises(UserError, match="no bundle file"):
        rollout.make_plan(tmp_path / "missing", ["x"], unknown)


# -- fake devices on a real bench ---------------------------------------------------------
class FakeAgent:
    """A device that takes jobs, downloads the stream, checks the hash and reports."""

    def __init__(self, dev: DeviceSession, succeed: bool) -> None:
        self.dev, self.succeed = dev, succeed
        self.done: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.3):
            try:
                _, doc = self.dev.jobs("start-next")
            except TimeoutError:
                continue
            ex = doc.get("execution")
            if ex is None:
                continue
            job = ex["jobDocument"]
            data = self._download(job["streamId"], job["fileId"], job["size"])
            ok = hashlib.sha256(data).hexdigest() == job["sha256"] and self.succeed
            self.dev.jobs(
                "update",
                ex["jobId"],
                status="SUCCEEDED" if ok else "FAILED",
                statusDetails={"version": job["version"], "reason": "ok" if ok else "selftest"},
                expectedVersion=ex["versionNumber"],
            )
            self.done.append(ex["jobId"])

    def _download(self, stream: str, file_id: int, size: int) -> bytes:
        blocks = -(-size // BLOCK)
        out = bytearray()
        for o in range(0, blocks, 8):
            got = self.dev.stream_get(stream, min(8, blocks - o), f=file_id, l=BLOCK, o=o, n=8)
            out += b"".join(base64.b64decode(b["p"]) for b in got)
        return bytes(out)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.dev.close()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto not installed")
    b = Bench(tmp_path_factory.mktemp("rolloutbench") / "bench")
    b.up()
    yield b
    b.down()


@pytest.fixture
def fleet(bench: Bench, tmp_path: Path):
    agents: list[FakeAgent] = []

    def make(prefix: str, outcomes: list[bool]) -> list[FakeAgent]:
        for i, ok in enumerate(outcomes):
            dev = DeviceSession.create(bench, f"{prefix}-{i}", tmp_path)
            agents.append(FakeAgent(dev, ok))
        set_group(
            bench.layout, prefix, [a.dev.thing for a in agents if a.dev.thing.startswith(prefix)]
        )
        return agents

    yield make
    for a in agents:
        a.close()


def test_canary_passes_then_rest_deployed(bench: Bench, fleet, signed_bundle: Path) -> None:
    agents = fleet("good", [True] * 5)
    backend = rollout.BenchBackend(bench)
    try:
        plan = rollout.make_plan(
            signed_bundle,
            ["good"],
            backend.resolve,
            canary="2",
            job_id="ota-good",
            canary_timeout_s=60,
        )
        report = rollout.deploy(plan, backend, poll_s=0.3)
        assert report.outcome == "deployed", report
        assert report.canary == {"good-0": "SUCCEEDED", "good-1": "SUCCEEDED"}
        assert report.failure_rate == 0.0
        # The rest was created only after the canary: the canary devices got one job only.
        assert agents[0].done == ["ota-good-canary"] and agents[1].done == ["ota-good-canary"]
        deadline_rows = None
        for _ in range(200):  # up to a minute on a loaded machine
            rows = rollout.status("ota-good", backend)
            if all(r["status"] == "SUCCEEDED" for r in rows) and len(rows) == 5:
                deadline_rows = rows
                break
            threading.Event().wait(0.3)
        assert deadline_rows is not None, rows
        assert {r["thing"]: r["stage"] for r in rows} == {
            "good-0": "canary",
            "good-1": "canary",
            "good-2": "rest",
            "good-3": "rest",
            "good-4": "rest",
        }
        assert all(r["statusDetails"]["version"] == "1.2.0" for r in rows)
    finally:
        backend.close()


def test_failing_canary_aborts_rollout(bench: Bench, fleet, signed_bundle: Path) -> None:
    agents = fleet("bad", [False, True, True, True])
    backend = rollout.BenchBackend(bench)
    try:
        plan = rollout.make_plan(
            signed_bundle,
            ["bad"],
            backend.resolve,
            canary="50%",
            abort_failure_rate=0.25,
            job_id="ota-bad",
            canary_timeout_s=60,
        )
        report = rollout.deploy(plan, backend, poll_s=0.3)
        assert report.outcome == "aborted", report
        assert report.canary == {"bad-0": "FAILED", "bad-1": "SUCCEEDED"}
        assert report.failure_rate == 0.5
        assert "2 things not deployed" in report.message
        with JobsOperator(bench) as ops:
            assert ops.describe_job("ota-bad-canary")["status"] == "COMPLETED"
            with pytest.raises(UserError, match="no job"):
                ops.describe_job("ota-bad")
            assert ops.list_thing_executions("bad-2") == []  # the rest never got a job
        assert agents[2].done == [] and agents[3].done == []
        rows = rollout.status("ota-bad", backend)
        assert [r["job"] for r in rows] == ["ota-bad-canary"] * 2
    finally:
        backend.close()


def test_canary_time_limit_counts_silent_devices_as_failed(
    bench: Bench, tmp_path: Path, signed_bundle: Path
) -> None:
    silent = [DeviceSession.create(bench, f"mute-{i}", tmp_path) for i in range(3)]
    backend = rollout.BenchBackend(bench)
    try:
        plan = rollout.make_plan(
            signed_bundle,
            [d.thing for d in silent],
            backend.resolve,
            canary="1",
            job_id="ota-mute",
            canary_timeout_s=1.5,
        )
        report = rollout.deploy(plan, backend, poll_s=0.3)
        assert report.outcome == "aborted" and report.canary == {"mute-0": "QUEUED"}
        assert "job ota-mute-canary cancelled" in report.message
        rows = rollout.status("ota-mute", backend)
        assert [(r["thing"], r["status"]) for r in rows] == [("mute-0", "CANCELED")]
    finally:
        backend.close()
        for d in silent:
            d.close()


def _cli(capsys, *argv: str):
    p = argparse.ArgumentParser(prog="thingkit")
    register_ota(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(list(argv))
    try:
        rc = args.func(args)
    except UserError as exc:
        print(f"thingkit: {exc.line()}")
        rc = 1
    return rc, capsys.readouterr().out


def test_cli_dry_run_and_status(bench: Bench, tmp_path: Path, signed_bundle: Path, capsys) -> None:
    dev = DeviceSession.create(bench, "cli-1", tmp_path)
    root = ["--bench-root", str(bench.layout.root)]
    try:
        rc, out = _cli(
            capsys, "ota", "deploy", "--bundle", str(signed_bundle), "--to", "cli-1",
            "--job-id", "ota-cli", "--dry-run", *root,
        )  # fmt: skip
        assert rc == 0 and "would deploy" in out and "ota-cli (all): 1 things: cli-1" in out
        rc, out = _cli(capsys, "ota", "status", "ota-cli", *root)
        assert rc == 1 and "no deployment" in out  # the dry run changed nothing
        rc, out = _cli(
            capsys, "ota", "deploy", "--bundle", str(signed_bundle), "--to", "cli-1",
            "--job-id", "ota-cli", "--json", *root,
        )  # fmt: skip
        assert rc == 0 and json.loads(out)["outcome"] == "deployed"
        dev.jobs("start-next", statusDetails={"step": "download"})
        rc, out = _cli(capsys, "ota", "status", "ota-cli", "--json", *root)
        rows = json.loads(out)
        assert rows == [
            {
                "thing": "cli-1",
                "job": "ota-cli",
                "stage": "all",
                "status": "IN_PROGRESS",
                "statusDetails": {"step": "download"},
            }
        ]
        rc, out = _cli(
            capsys, "ota", "deploy", "--bundle", str(signed_bundle), "--to", "nobody", *root
        )
        assert rc == 1 and "unknown target" in out
    finally:
        dev.close()


def test_cli_deploy_refuses_invalid_bundle_and_status_reports_failure(
    bench: Bench, tmp_path: Path, signed_bundle: Path, capsys
) -> None:
    """`ota deploy` and its --dry-run refuse what `ota inspect` calls invalid (signed by a key
    the bench's kits do not trust, payload not matching the manifest); `ota status` exits 1
    once a device failed."""
    ws_key = keys.bench_key_path(bench.layout.root)  # the workspace key the kits trust
    assert not ws_key.exists()
    key = keys.open_or_create(ws_key)
    dev = DeviceSession.create(bench, "cli-2", tmp_path)
    root = ["--bench-root", str(bench.layout.root)]
    deploy = ["ota", "deploy", "--to", "cli-2", *root]
    try:
        for extra in (["--dry-run"], []):
            rc, out = _cli(capsys, *deploy, "--bundle", str(signed_bundle), *extra)
            assert rc == 1 and "would fail on its targets: signature wrong_key" in out, out
        good = bundle.sign(
            bundle.build({"tk/a.mpy": b"\x4d" * 500}, version="1.3.0", boards=["sim"]), key
        )
        bad = tmp_path / "bad.tkota"
        bad.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # signature valid, payload changed
        rc, out = _cli(capsys, *deploy, "--bundle", str(bad), "--dry-run")
        assert rc == 1 and "would fail on its targets" in out and "signature" not in out, out
        ok = tmp_path / "ok.tkota"
        ok.write_bytes(good)
        kit = bench.layout.root.parent / "kits" / "cli-2"  # as `kit create` lays a kit out
        (kit / "flash").mkdir(parents=True)
        (kit / "flash" / "board.json").write_text('{"id": "esp32-devkitc"}')
        rc, out = _cli(capsys, *deploy, "--bundle", str(ok), "--dry-run")
        shutil.rmtree(kit)
        assert rc == 1 and "for boards sim, but cli-2 is esp32-devkitc" in out, out
        rc, out = _cli(capsys, *deploy, "--bundle", str(ok), "--job-id", "ota-fails")
        assert rc == 0 and "deployed" in out, out
        rc, _ = _cli(capsys, "ota", "status", "ota-fails", *root)
        assert rc == 0  # queued: nothing failed yet
        _, doc = dev.jobs("start-next")
        ex = doc["execution"]
        dev.jobs("update", ex["jobId"], status="FAILED", statusDetails={"reason": "selftest"},
                 expectedVersion=ex["versionNumber"])  # fmt: skip
        for extra in ([], ["--json"]):
            rc, out = _cli(capsys, "ota", "status", "ota-fails", *root, *extra)
            assert rc == 1 and "FAILED" in out, out
    finally:
        dev.close()
        ws_key.unlink()
        keys.pubkey_path(ws_key).unlink()


# -- AWS through moto ---------------------------------------------------------------------
REGION, ACCOUNT = "eu-west-1", "123456789012"


@pytest.fixture
def aws():
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    with moto.mock_aws():
        iot = boto3.client("iot", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="ota", CreateBucketConfiguration={"LocationConstraint": REGION})
        iot.create_thing_group(thingGroupName="fleet")
        for i in range(4):
            iot.create_thing(thingName=f"tk-{i}")
            iot.add_thing_to_thing_group(thingGroupName="fleet", thingName=f"tk-{i}")
            cert = iot.create_keys_and_certificate(setAsActive=True)["certificateArn"]
            iot.attach_thing_principal(thingName=f"tk-{i}", principal=cert)
        yield iot, s3


def test_aws_create_stream_on_moto(aws) -> None:
    iot, _ = aws
    try:
        iot.create_stream(
            streamId="s",
            files=[{"fileId": 0, "s3Location": {"bucket": "ota", "key": "k"}}],
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/r",
        )
    except NotImplementedError:
        pytest.skip("moto does not implement CreateStream; AwsBackend's call is checked stubbed")


def test_aws_canary_abort_through_moto(aws, signed_bundle: Path) -> None:
    """moto has no device side: canary executions stay QUEUED, so the canary times out,
    counts as failed and the canary job is cancelled; the rest job is never created."""
    iot, s3 = aws
    backend = rollout.AwsBackend(iot, s3, "ota", f"arn:aws:iam::{ACCOUNT}:role/r", 10)
    streams: list[dict] = []
    backend.iot = _StreamStub(iot, streams)  # moto lacks CreateStream (see the test above)
    plan = rollout.make_plan(
        signed_bundle, ["fleet"], backend.resolve, canary="1", job_id="ota-aws", target="aws",
        canary_timeout_s=0.5,
    )  # fmt: skip
    req = backend.job_request(plan, plan.stages[1])
    assert req["targets"] == [f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/tk-{i}" for i in (1, 2, 3)]
    assert json.loads(req["document"]) == plan.document
    assert req["abortConfig"]["criteriaList"][0]["thresholdPercentage"] == 20.0
    assert req["jobExecutionsRolloutConfig"] == {"maximumPerMinute": 10}
    report = rollout.deploy(plan, backend, poll_s=0.1)
    assert report.outcome == "aborted" and report.canary == {"tk-0": "QUEUED"}
    obj = s3.get_object(Bucket="ota", Key="thingkit-ota/ota-aws.tkota")["Body"].read()
    assert obj == signed_bundle.read_bytes()
    assert streams == [
        {
            "streamId": "ota-aws",
            "description": "thingkit OTA 1.2.0",
            "files": [
                {"fileId": 0, "s3Location": {"bucket": "ota", "key": "thingkit-ota/ota-aws.tkota"}}
            ],
            "roleArn": f"arn:aws:iam::{ACCOUNT}:role/r",
        }
    ]
    job = iot.describe_job(jobId="ota-aws-canary")["job"]
    assert job["status"] == "CANCELED" and job["reasonCode"] == "CANARY_FAILED"
    assert backend.executions("ota-aws") is None
    rows = rollout.status("ota-aws", backend)
    assert [(r["thing"], r["stage"]) for r in rows] == [("tk-0", "canary")]


def test_aws_deploy_without_canary_through_moto(aws, signed_bundle: Path) -> None:
    iot, s3 = aws
    backend = rollout.AwsBackend(iot, s3, "ota", f"arn:aws:iam::{ACCOUNT}:role/r")
    backend.iot = _StreamStub(iot, [])
    plan = rollout.make_plan(
        signed_bundle, ["tk-2", "group:fleet"], backend.resolve, job_id="ota-all", target="aws"
    )
    assert plan.things == ["tk-0", "tk-1", "tk-2", "tk-3"]
    assert rollout.deploy(plan, backend).outcome == "deployed"
    execs = backend.executions("ota-all")
    assert execs == {f"tk-{i}": {"status": "QUEUED"} for i in range(4)}
    backend.details = True  # what `thingkit ota status` asks for
    rows = rollout.status("ota-all", backend)
    assert [(r["thing"], r["status"], r["statusDetails"]) for r in rows] == [
        (f"tk-{i}", "QUEUED", {}) for i in range(4)
    ]
    with pytest.raises(UserError, match="unknown target"):
        rollout.make_plan(signed_bundle, ["nope"], backend.resolve, target="aws")


class _StreamStub:
    """moto's IoT client with CreateStream recorded instead of raising NotImplementedError."""

    def __init__(self, iot, calls: list[dict]) -> None:
        self._iot, self._calls = iot, calls

    def create_stream(self, **kw) -> dict:
        self._calls.append(kw)
        return {"streamId": kw["streamId"], "streamVersion": 1}

    def __getattr__(self, name: str):
        return getattr(self._iot, name)


def test_aws_job_policy_is_least_privilege_and_attached(aws, signed_bundle: Path) -> None:
    """Each job gets its own policy naming its job and stream (no wildcard), attached only
    to the certificates of that stage's things."""
    from provisioning.aws.policy import wildcards

    iot, s3 = aws
    backend = rollout.AwsBackend(iot, s3, "ota", f"arn:aws:iam::{ACCOUNT}:role/r")
    backend.iot = _StreamStub(iot, [])
    plan = rollout.make_plan(signed_bundle, ["tk-1", "tk-2"], backend.resolve, job_id="ota-p",
                             target="aws")  # fmt: skip
    assert rollout.deploy(plan, backend).outcome == "deployed"
    doc = json.loads(iot.get_policy(policyName="thingkit-ota-ota-p")["policyDocument"])
    assert wildcards(doc) == []
    res = [r for st in doc["Statement"] for r in st["Resource"]]
    thing = "${iot:Connection.Thing.ThingName}"
    base = f"arn:aws:iot:{REGION}:{ACCOUNT}:topic/$aws/things/{thing}"
    assert f"{base}/jobs/ota-p/update" in res
    assert f"{base}/streams/{plan.stream_id}/get/json" in res
    assert all(thing in r for r in res)
    for i in range(4):
        certs = iot.list_thing_principals(thingName=f"tk-{i}")["principals"]
        pols = [p["policyName"] for p in iot.list_attached_policies(target=certs[0])["policies"]]
        assert pols == (["thingkit-ota-ota-p"] if i in (1, 2) else []), i
