"""AWS IoT registration against moto's IoT implementation: the exact resources, the
policy documents, idempotence, revocation, teardown; plus rate limit and retries."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from host_tools.errors import UserError
from host_tools.identity import cli as provision_cli
from provisioning.aws.apply import Applier, RateLimiter, read_state, teardown
from provisioning.aws.plan import AwsOptions, PlanError, registration_plan, revocation_plan
from provisioning.aws.policy import device_policy, device_topics, wildcards
from provisioning.aws.templates import fleet_template, jitp_template
from provisioning.ca import CertificateAuthority, Usage
from provisioning.fleet import FleetSpec, provision_fleet
from provisioning.manifest import assign_names, generated_records
from provisioning.revocation import fingerprint
from provisioning.store import FleetStore

REGION, ACCOUNT = "eu-west-1", "123456789012"  # moto's default account
ROLE = f"arn:aws:iam::{ACCOUNT}:role/thingkit-rules"
THING = "${iot:Connection.Thing.ThingName}"


def _arn(kind: str, name: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:{kind}/{name}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("aws")
    ca = CertificateAuthority.create(d / "ca", "AWS test")
    recs, _ = assign_names(generated_records(3, "tk"))
    provision_fleet(
        ca, FleetSpec(endpoint="x", region=REGION), recs, d / "out", ca.root_der, jobs=1
    )
    return ca, FleetStore(d / "out")


def _opts(**kw) -> AwsOptions:
    return AwsOptions(region=REGION, account=ACCOUNT, rule_role_arn=ROLE, **kw)


@pytest.fixture
def iot():
    with mock_aws(config={"iot": {"use_valid_cert": True}}):
        yield boto3.client("iot", region_name=REGION)


# -- policies ---------------------------------------------------------------------------
def test_device_policy_is_exactly_least_privilege() -> None:
    doc = device_policy(REGION, ACCOUNT)
    assert wildcards(doc) == []
    st = {s["Sid"]: s for s in doc["Statement"]}
    assert st["ConnectAsOwnThing"] == {
        "Sid": "ConnectAsOwnThing",
        "Effect": "Allow",
        "Action": "iot:Connect",
        "Resource": _arn("client", THING),
        "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
    }
    assert {s["Action"] for s in doc["Statement"]} == {
        "iot:Connect",
        "iot:Publish",
        "iot:Subscribe",
        "iot:Receive",
    }
    pub = st["PublishOwnTopics"]["Resource"]
    assert _arn("topic", f"thingkit/{THING}/status") in pub
    assert _arn("topic", f"thingkit/{THING}/ping") not in pub  # the device only receives ping
    assert _arn("topic", f"$aws/things/{THING}/shadow/name/app2/update") in pub
    assert _arn("topic", f"$aws/things/{THING}/jobs/start-next") in pub
    sub = st["SubscribeOwnTopics"]["Resource"]
    assert _arn("topicfilter", f"thingkit/{THING}/ping") in sub
    assert _arn("topicfilter", f"$aws/things/{THING}/shadow/update/delta") in sub
    assert _arn("topicfilter", f"$aws/things/{THING}/shadow/name/diag/get/accepted") in sub
    assert _arn("topicfilter", f"$aws/things/{THING}/jobs/notify-next") in sub
    assert st["ReceiveOwnTopics"]["Resource"] == [
        r.replace(":topicfilter/", ":topic/") for r in sub
    ]
    # Every resource is this thing's, in this account and region.
    for s in doc["Statement"]:
        for r in s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]:
            assert r.startswith(f"arn:aws:iot:{REGION}:{ACCOUNT}:") and THING in r
    t = device_topics()
    # 4 own topics + the CSR of a rotation, 3 shadows x 3 operations, 3 jobs requests
    assert len(t["publish"]) == 4 + 1 + 3 * 3 + 3 and len(set(t["receive"])) == len(t["receive"])
    assert _arn("topic", f"thingkit/{THING}/identity/csr") in pub
    assert _arn("topicfilter", f"thingkit/{THING}/identity/csr/accepted") in sub


def test_wildcards_are_found() -> None:
    bad = {
        "Statement": [
            {"Action": "iot:*", "Resource": _arn("topic", "x")},
            {"Action": "iot:Publish", "Resource": "*"},
            {"Action": "iot:Subscribe", "Resource": [_arn("topicfilter", "thingkit/+/status")]},
            {"Action": "iot:Publish", "NotResource": _arn("topic", "x")},
        ]
    }
    found = wildcards(bad)
    assert len(found) == 4 and found[-1].endswith("grant everything else")
    assert wildcards(device_policy(REGION, ACCOUNT, prefix="acme")) == []


# -- plan -------------------------------------------------------------------------------
def test_dry_run_plan_has_no_wildcard_and_every_call(fleet) -> None:
    ca, store = fleet
    plan = registration_plan(
        list(store.devices.values()),
        _opts(jitp=True, jitp_role_arn=ROLE, claim_template="tk-claim", claim_role_arn=ROLE),
        ca,
        claim=None,
    )
    plan.check(dry_run=True)
    text = json.dumps(plan.to_json())
    for name, doc in plan.policies().items():
        assert wildcards(doc) == [], name
        assert '"iot:*"' not in json.dumps(doc) and '"*"' not in json.dumps(doc)
    assert set(plan.policies()) == {"thingkit-device", "tk-claim-claim"}
    c = plan.counts()
    assert c["register_certificate"] == 3 + 1 and c["create_thing"] == 3
    assert c["attach_thing_principal"] == 3 and c["attach_policy"] == 4
    assert c["register_ca_certificate"] == 1 and c["create_provisioning_template"] == 1
    assert "<role ARN required>" not in text
    rendered = plan.render()
    assert "and the same for 2 more devices" in rendered and "iot:Connect" in rendered
    with pytest.raises(PlanError, match="claim certificate is missing"):
        plan.check()
    with pytest.raises(PlanError, match="IAM role ARN is required"):
        registration_plan([], AwsOptions(region=REGION, account=ACCOUNT), ca).check()


def test_templates_are_valid_api_input(fleet) -> None:
    ca, _store = fleet
    j = json.loads(jitp_template("thingkit-kit", ["g"], "thingkit-device"))
    assert j["Resources"]["thing"]["Properties"]["ThingName"] == {
        "Ref": "AWS::IoT::Certificate::CommonName"
    }
    assert j["Resources"]["policy"]["Properties"] == {"PolicyName": "thingkit-device"}
    f = json.loads(fleet_template("thingkit-kit", ["g"], "thingkit-device"))
    assert f["Resources"]["thing"]["Properties"]["ThingName"] == {
        "Fn::Join": ["-", [{"Ref": "Model"}, {"Ref": "SerialNumber"}]]
    }
    # moto has no provisioning templates: botocore's own model checks the call instead.
    claim = ca.issue("thingkit-claim", Usage.CLIENT)
    plan = registration_plan([], _opts(claim_template="tk-claim", claim_role_arn=ROLE), ca, claim)
    client = boto3.client(
        "iot", region_name=REGION, aws_access_key_id="a", aws_secret_access_key="b"
    )
    step = next(s for s in plan.steps if s.api == "create_provisioning_template")
    with Stubber(client) as stub:
        stub.add_response("create_provisioning_template", {"templateName": "tk-claim"}, step.params)
        client.create_provisioning_template(**step.params)


# -- apply against moto ----------------------------------------------------------------------
def test_apply_registers_exact_resources_idempotently_and_tears_down(fleet, iot, tmp_path) -> None:
    ca, store = fleet
    entries = list(store.devices.values())
    opts = _opts(groups=["thingkit-fleet", "batch-7"])
    state = tmp_path / "state.jsonl"
    res = Applier(iot, state, rate=1000).apply(registration_plan(entries, opts, ca), ca=ca)
    assert res.errors == []
    # CA: registered, active, proof of possession made from the registration code.
    ca_id = fingerprint(ca.issuing.cert)
    assert (
        iot.describe_ca_certificate(certificateId=ca_id)["certificateDescription"]["status"]
        == "ACTIVE"
    )
    assert sorted(t["thingName"] for t in iot.list_things()["things"]) == [
        "tk-SN00000001",
        "tk-SN00000002",
        "tk-SN00000003",
    ]
    for e in entries:
        thing = iot.describe_thing(thingName=e.thing_name)
        assert thing["thingTypeName"] == "thingkit-kit"
        assert thing["attributes"] == {"serial": e.serial, "model": "tk"}
        arn = opts.cert_arn(e.fingerprint)
        assert iot.list_thing_principals(thingName=e.thing_name)["principals"] == [arn]
        assert [p["policyName"] for p in iot.list_attached_policies(target=arn)["policies"]] == [
            "thingkit-device"
        ]
        d = iot.describe_certificate(certificateId=e.fingerprint)["certificateDescription"]
        assert d["status"] == "ACTIVE"
    for g in ("thingkit-fleet", "batch-7"):
        assert sorted(iot.list_things_in_thing_group(thingGroupName=g)["things"]) == sorted(
            e.thing_name for e in entries
        )
    assert json.loads(iot.get_policy(policyName="thingkit-device")["policyDocument"]) == (
        device_policy(REGION, ACCOUNT)
    )
    rule = iot.get_topic_rule(ruleName="thingkit_offline_to_shadow")["rule"]
    assert rule["sql"] == (
        "SELECT {'reported': {'connected': false}} AS state FROM "
        "'thingkit/+/status' WHERE state = 'offline'"
    )
    assert rule["actions"] == [
        {
            "republish": {
                "roleArn": ROLE,
                "topic": "$$aws/things/${topic(2)}/shadow/update",
                "qos": 1,
            }
        }
    ]
    assert rule["awsIotSqlVersion"] == "2016-03-23"
    recorded = read_state(state)
    assert len(recorded) == res.created

    # Again: nothing new.
    again = Applier(iot, state, rate=1000).apply(registration_plan(entries, opts, ca), ca=ca)
    assert (again.created, again.errors) == (0, []) and len(read_state(state)) == len(recorded)

    # A changed policy gets a new default version, not a second policy.
    opts2 = _opts(groups=["thingkit-fleet", "batch-7"], topic_prefix="acme")
    upd = Applier(iot, state, rate=1000).apply(registration_plan(entries, opts2, ca), ca=ca)
    assert upd.updated == 2  # the policy and the topic rule
    versions = iot.list_policy_versions(policyName="thingkit-device")["policyVersions"]
    assert len(versions) == 2

    # Revocation: REVOKED on AWS, detached.
    e = entries[0]
    rev = Applier(iot, tmp_path / "rev.jsonl", rate=1000).apply(
        revocation_plan(opts, [(e.thing_name, e.fingerprint)])
    )
    assert rev.errors == []
    assert (
        iot.describe_certificate(certificateId=e.fingerprint)["certificateDescription"]["status"]
        == "REVOKED"
    )
    assert iot.list_thing_principals(thingName=e.thing_name)["principals"] == []

    # Teardown removes what was created, and only that.
    iot.create_thing(thingName="not-ours")
    lines, _ = teardown(Applier(iot, state, rate=1000), dry_run=True)
    assert "thing tk-SN00000001" in lines and not any("not-ours" in x for x in lines)
    _lines, td = teardown(Applier(iot, state, rate=1000))
    assert td.errors == [], td.errors
    assert [t["thingName"] for t in iot.list_things()["things"]] == ["not-ours"]
    assert iot.list_certificates()["certificates"] == []
    assert iot.list_policies()["policies"] == []
    assert iot.list_thing_groups()["thingGroups"] == []
    assert iot.list_topic_rules()["rules"] == []
    assert not state.exists()


def test_register_without_ca(fleet, iot, tmp_path) -> None:
    _ca, store = fleet
    plan = registration_plan(list(store.devices.values()), _opts(ca_mode="none"), None)
    assert "register_ca_certificate" not in plan.counts()
    res = Applier(iot, tmp_path / "s.jsonl", rate=1000).apply(plan)
    assert res.errors == [] and len(iot.list_certificates()["certificates"]) == 3


# -- rate limit and retries ------------------------------------------------------------------
class _Flaky:
    """An iot client whose create_thing is throttled twice, then works."""

    def __init__(self) -> None:
        self.calls = 0

    def create_thing(self, **kw):
        self.calls += 1
        if self.calls <= 2:
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "CreateThing"
            )
        return {"thingName": kw["thingName"]}


def test_throttling_is_retried_with_backoff(tmp_path) -> None:
    slept: list[float] = []
    a = Applier(_Flaky(), tmp_path / "s.jsonl", rate=1000, sleep=slept.append, base=0.5)
    assert a.call("create_thing", thingName="t") == {"thingName": "t"}
    assert a.result.retries == 2 and len([s for s in slept if s <= 1.0]) >= 2
    a2 = Applier(_Flaky(), tmp_path / "s.jsonl", rate=1000, attempts=2, sleep=slept.append)
    with pytest.raises(ClientError):
        a2.call("create_thing", thingName="t")


def test_rate_limiter_holds_the_rate() -> None:
    now = [0.0]
    rl = RateLimiter(
        10.0, burst=1, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
    )
    for _ in range(21):
        rl.acquire()
    assert now[0] == pytest.approx(2.0)


# -- CLI ----------------------------------------------------------------------------------
def _run(capsys, *argv: str):
    p = argparse.ArgumentParser(prog="thingkit")
    provision_cli.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(list(argv))
    try:
        rc = args.func(args)
    except UserError as exc:
        print(f"thingkit: {exc.line()}", file=sys.stderr)
        rc = 1
    return (rc, *capsys.readouterr())


def test_cli_register_dry_run_json_has_no_wildcards(fleet, capsys, monkeypatch) -> None:
    _ca, store = fleet
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    with mock_aws():
        rc, out, err = _run(
            capsys,
            "register",
            "--fleet",
            str(store.root),
            "--target",
            "aws",
            "--region",
            REGION,
            "--rule-role-arn",
            ROLE,
            "--dry-run",
            "--json",
        )
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["counts"]["create_thing"] == 3
    for pol in doc["policies"].values():
        assert wildcards(pol) == []
        acts = [s["Action"] for s in pol["Statement"]]
        assert "iot:*" not in acts and all(s["Resource"] != "*" for s in pol["Statement"])


def test_cli_register_apply_and_teardown_on_moto(fleet, capsys, monkeypatch, tmp_path) -> None:
    _ca, store = fleet
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    with mock_aws(config={"iot": {"use_valid_cert": True}}):
        base = ["--fleet", str(store.root), "--target", "aws", "--region", REGION, "--yes"]
        rc, out, err = _run(capsys, "register", *base, "--rule-role-arn", ROLE, "--rate", "500")
        assert rc == 0, err + out
        assert "aws register:" in out and "0 failed" in out
        iot = boto3.client("iot", region_name=REGION)
        assert len(iot.list_things()["things"]) == 3
        rc, out, err = _run(capsys, "teardown", *base, "--rate", "500")
        assert rc == 0, err + out
        assert "teardown:" in out and iot.list_things()["things"] == []
    Path(store.root / "aws-state.jsonl").unlink(missing_ok=True)
