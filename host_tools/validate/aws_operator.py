"""The operator identity ``thingkit validate --cloud remote`` uses on AWS IoT Core.

The validator observes one kit: it subscribes to the kit's own topics, its shadow
replies and its lifecycle events, publishes pings to it and asks for its shadow. The
operator identity is a certificate (``CreateKeysAndCertificate``) with a policy that
grants exactly that, for that thing, with no wildcard (the same rule the device policy
follows, :func:`provisioning.aws.policy.wildcards`), and a fixed client id
(``thingkit-validate-<thing>``). A plan is printed first (``--dry-run``), and
:func:`teardown` removes exactly what :func:`create` made (recorded in
``<dir>/operator.json``).

    plan = operator_plan("eu-west-1", "123456789012", "kit-1")   # print it: nothing changes
    made = create(boto3.client("iot", region_name="eu-west-1"), plan, Path("op"))
    ... thingkit validate --cloud remote --operator-cert op/operator.crt ...
    teardown(boto3.client("iot", region_name="eu-west-1"), Path("op"))

This module has been run against moto's IoT model only (tests/host/test_validate_aws.py):
no AWS account is reachable from where thingkit is built.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host_tools.errors import UserError
from provisioning.aws.policy import NAMED_SHADOWS, wildcards

CLIENT_PREFIX = "thingkit-validate-"
LIFECYCLE = "$aws/events/presence"
STATE = "operator.json"
# What the device publishes on its own topics (the validator receives them).
DEVICE_PUBLISHES = ("status", "pong", "telemetry", "diag")


def client_id(thing: str) -> str:
    return f"{CLIENT_PREFIX}{thing}"


def observer_topics(thing: str, prefix: str = "thingkit") -> dict[str, list[str]]:
    """What the validator's observer of ``thing`` receives and publishes (one list for the
    subscriptions it makes and for the policy that allows them)."""
    own = f"{prefix}/{thing}"
    receive = [f"{own}/{t}" for t in DEVICE_PUBLISHES]
    publish = [f"{own}/ping"]
    for base in [f"$aws/things/{thing}/shadow"] + [
        f"$aws/things/{thing}/shadow/name/{n}" for n in NAMED_SHADOWS
    ]:
        publish += [f"{base}/get", f"{base}/update"]
        receive += [f"{base}/get/{r}" for r in ("accepted", "rejected")]
        receive += [f"{base}/update/{r}" for r in ("accepted", "rejected", "delta", "documents")]
    receive += [f"{LIFECYCLE}/connected/{thing}", f"{LIFECYCLE}/disconnected/{thing}"]
    return {"receive": receive, "publish": publish}


def operator_policy(
    region: str, account: str, thing: str, prefix: str = "thingkit", partition: str = "aws"
) -> dict:
    """The operator's least-privilege policy for observing ``thing``."""
    t = observer_topics(thing, prefix)

    def arns(kind: str, names: list[str]) -> list[str]:
        return [f"arn:{partition}:iot:{region}:{account}:{kind}/{n}" for n in names]

    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ConnectAsValidator",
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": arns("client", [client_id(thing)]),
            },
            {"Sid": "Observe", "Effect": "Allow", "Action": "iot:Subscribe",
             "Resource": arns("topicfilter", t["receive"])},
            {"Sid": "Receive", "Effect": "Allow", "Action": "iot:Receive",
             "Resource": arns("topic", t["receive"])},
            {"Sid": "PingAndAskShadow", "Effect": "Allow", "Action": "iot:Publish",
             "Resource": arns("topic", t["publish"])},
        ],
    }  # fmt: skip
    found = wildcards(doc)
    if found:  # a thing name with a wildcard character would make one
        raise UserError(f"the operator policy for {thing!r} would hold a wildcard", found[0])
    return doc


@dataclass
class Plan:
    """The calls :func:`create` makes, for ``--dry-run`` to print first."""

    region: str
    account: str
    thing: str
    policy_name: str
    policy: dict

    def steps(self) -> list[str]:
        return [
            (
                "iot:CreateKeysAndCertificate setAsActive=true (the operator's certificate and "
                "key, written to the output directory, key mode 0600)"
            ),
            (
                f"iot:CreatePolicy {self.policy_name} ({len(self.policy['Statement'])} statements, "
                f"no wildcard; client id {client_id(self.thing)})"
            ),
            f"iot:AttachPolicy {self.policy_name} -> the new certificate",
            "iot:DescribeEndpoint endpointType=iot:Data-ATS (the --endpoint to use)",
        ]

    def text(self) -> str:
        head = (
            f"operator identity for thing {self.thing} in {self.region} (account {self.account}):"
        )
        return "\n".join(
            [head, *(f"  {i}. {s}" for i, s in enumerate(self.steps(), 1)),
             "policy:", json.dumps(self.policy, indent=1)]
        )  # fmt: skip


def operator_plan(
    region: str, account: str, thing: str, prefix: str = "thingkit", partition: str = "aws"
) -> Plan:
    policy = operator_policy(region, account, thing, prefix, partition)
    return Plan(region, account, thing, f"thingkit-validate-{thing}", policy)


def create(iot: Any, plan: Plan, out: Path) -> dict:
    """Make the operator identity; write ``operator.crt``/``.key`` and ``operator.json``
    (what was made, for :func:`teardown`) into ``out``. Returns that record."""
    out = Path(out)
    if (out / STATE).exists():
        raise UserError(
            f"an operator identity is already recorded in {out / STATE}",
            "delete it first (thingkit validate-operator delete)",
        )
    out.mkdir(parents=True, exist_ok=True)
    made: dict = {"region": plan.region, "thing": plan.thing}

    def save() -> None:
        (out / STATE).write_text(json.dumps(made, indent=1))

    cert = iot.create_keys_and_certificate(setAsActive=True)
    made.update(certificateArn=cert["certificateArn"], certificateId=cert["certificateId"])
    save()
    (out / "operator.crt").write_text(cert["certificatePem"])
    key = out / "operator.key"
    key.touch(mode=0o600)
    os.chmod(key, 0o600)
    key.write_text(cert["keyPair"]["PrivateKey"])
    iot.create_policy(policyName=plan.policy_name, policyDocument=json.dumps(plan.policy))
    made["policyName"] = plan.policy_name
    save()
    iot.attach_policy(policyName=plan.policy_name, target=cert["certificateArn"])
    made["attached"] = True
    made["endpoint"] = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    made["client_id"] = client_id(plan.thing)
    save()
    return made


def teardown(iot: Any, out: Path) -> list[str]:
    """Remove what :func:`create` recorded in ``out`` (policy detached and deleted,
    certificate deactivated and deleted, local key removed). Returns what it did."""
    path = Path(out) / STATE
    try:
        made = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"no operator identity recorded in {out}", str(exc)) from exc
    done = []
    arn, pol = made.get("certificateArn"), made.get("policyName")
    if arn and pol and made.get("attached"):
        iot.detach_policy(policyName=pol, target=arn)
        done.append(f"detached {pol}")
    if pol:
        iot.delete_policy(policyName=pol)
        done.append(f"deleted policy {pol}")
    if arn:
        cid = made["certificateId"]
        iot.update_certificate(certificateId=cid, newStatus="INACTIVE")
        iot.delete_certificate(certificateId=cid, forceDelete=True)
        done.append(f"deleted certificate {cid[:12]}…")
    for f in ("operator.key", "operator.crt", STATE):
        (Path(out) / f).unlink(missing_ok=True)
    return done
