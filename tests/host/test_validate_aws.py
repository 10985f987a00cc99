"""The validator's operator identity on AWS IoT Core (host_tools/validate/aws_operator.py),
against moto's model of the IoT API: no AWS account is reachable here. Plan first (dry
run: no call), then create (certificate, least-privilege policy, attachment), then
teardown removes exactly that."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest

from host_tools.validate import aws_operator as op
from host_tools.validate import cli as vcli
from provisioning.aws.policy import wildcards

moto = pytest.importorskip("moto")
REGION, ACCOUNT = "eu-west-1", "123456789012"


@pytest.fixture
def iot(monkeypatch: pytest.MonkeyPatch):
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(k, v)
    import boto3

    with moto.mock_aws():
        yield boto3.client("iot", region_name=REGION)


def thingkit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    p = argparse.ArgumentParser(prog="thingkit")
    vcli.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(list(argv))
    rc = args.func(args)
    return rc, capsys.readouterr().out


def test_policy_is_least_privilege_and_matches_the_observer() -> None:
    doc = op.operator_policy(REGION, ACCOUNT, "kit-1")
    assert wildcards(doc) == []
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert by_sid["ConnectAsValidator"]["Resource"] == [
        f"arn:aws:iot:{REGION}:{ACCOUNT}:client/thingkit-validate-kit-1"
    ]
    subs = [r.split(":topicfilter/", 1)[1] for r in by_sid["Observe"]["Resource"]]
    assert subs == op.observer_topics("kit-1")["receive"]
    assert "$aws/events/presence/connected/kit-1" in subs
    assert all("kit-1" in s for s in subs)  # nothing of another thing
    pubs = [r.split(":topic/", 1)[1] for r in by_sid["PingAndAskShadow"]["Resource"]]
    assert "thingkit/kit-1/ping" in pubs and not any(p.endswith("/delete") for p in pubs)
    assert {s["Action"] for s in doc["Statement"]} == {
        "iot:Connect",
        "iot:Subscribe",
        "iot:Receive",
        "iot:Publish",
    }


def test_dry_run_then_create_then_delete(
    iot, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "op"
    rc, text = thingkit(
        capsys, "validate-operator", "create", "--region", REGION, "--thing", "kit-1",
        "--account-id", ACCOUNT, "--dir", str(out), "--dry-run",
    )  # fmt: skip
    assert rc == 0 and "iot:CreatePolicy thingkit-validate-kit-1" in text
    assert iot.list_certificates()["certificates"] == [] and not out.exists()

    rc, text = thingkit(
        capsys, "validate-operator", "create", "--region", REGION, "--thing", "kit-1",
        "--dir", str(out), "--json",
    )  # fmt: skip
    made = json.loads(text)
    assert rc == 0 and made["client_id"] == "thingkit-validate-kit-1"
    certs = iot.list_certificates()["certificates"]
    assert [c["status"] for c in certs] == ["ACTIVE"]
    attached = iot.list_attached_policies(target=made["certificateArn"])["policies"]
    assert [p["policyName"] for p in attached] == ["thingkit-validate-kit-1"]
    doc = json.loads(iot.get_policy(policyName="thingkit-validate-kit-1")["policyDocument"])
    assert wildcards(doc) == []
    assert stat.S_IMODE((out / "operator.key").stat().st_mode) == 0o600
    assert (out / "operator.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")

    rc, text = thingkit(capsys, "validate-operator", "delete", "--dir", str(out))
    assert rc == 0 and "deleted policy thingkit-validate-kit-1" in text
    assert iot.list_certificates()["certificates"] == []
    assert iot.list_policies()["policies"] == []
    assert not (out / "operator.key").exists() and not (out / op.STATE).exists()
