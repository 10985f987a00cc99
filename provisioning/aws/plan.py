"""The AWS IoT API calls that register a fleet, revoke certificates, or rotate them.

A plan is data: a list of :class:`Step` (boto3 ``iot`` method, parameters, what it is
for, which resource it makes). ``--dry-run`` prints it; :mod:`provisioning.aws.apply`
runs it. Every parameter is known when the plan is made (certificate ids are the SHA-256
of the DER certificate, so certificate ARNs are too), except the CA's proof of possession,
which needs the account's registration code and is made when the plan runs.

A registration plan, in order:

1. the fleet's issuing CA (and its unexpired retired intermediates): ``RegisterCACertificate``
   with a verification certificate, active, with the JITP template when asked
   (``ca_mode="none"`` registers device certificates without a CA instead);
2. the thing type, the static thing groups, the device policy, the topic rule that turns
   the Last Will into ``reported.connected: false``, and optionally the fleet-provisioning
   template with its claim certificate and claim policy;
3. per device: ``RegisterCertificate`` (active), ``CreateThing`` (type, attributes),
   ``AddThingToThingGroup`` for each group, ``AttachPolicy``, ``AttachThingPrincipal``.

Every policy in a plan is checked for wildcards (:func:`Plan.check`): a plan with one is
refused before any call.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization

from provisioning.aws.policy import claim_policy, device_policy, wildcards
from provisioning.aws.templates import fleet_template, jitp_template
from provisioning.ca import CertificateAuthority, KeyPair
from provisioning.revocation import fingerprint
from provisioning.store import DeviceEntry

VERIFY_PLACEHOLDER = "<made when the plan runs: a certificate with CN = the registration code>"
ROLE_PLACEHOLDER = "<role ARN required>"
CLAIM_PLACEHOLDER = "<claim certificate, issued when the plan runs>"


class PlanError(ValueError):
    """The plan cannot be made or must not run (a wildcard, a missing role)."""


@dataclass
class AwsOptions:
    """Names and choices for the AWS side of a fleet.

    Attributes:
        region: AWS region (``eu-west-1``).
        account: AWS account id (12 digits), for the ARNs in policies.
        partition: ``aws`` (``aws-cn``, ``aws-us-gov`` elsewhere).
        topic_prefix: first level of the device topics.
        policy_name: the device policy.
        thing_type: every thing's type.
        groups: static thing groups every thing joins.
        ca_mode: ``register`` (register the CA, then certificates under it) or ``none``
            (``RegisterCertificateWithoutCA``, multi-account registration).
        rule_name: the Last-Will-to-shadow topic rule.
        rule_role_arn: IAM role the rule assumes to publish to the shadow (required).
        jitp: attach a just-in-time provisioning template to the CA registration.
        jitp_role_arn: IAM role JITP assumes (required with ``jitp``).
        claim_template: create a fleet-provisioning template of this name, a claim
            certificate and a claim policy ("" for none).
        claim_role_arn: IAM role fleet provisioning assumes (required with a template).
    """

    region: str
    account: str
    partition: str = "aws"
    topic_prefix: str = "thingkit"
    policy_name: str = "thingkit-device"
    thing_type: str = "thingkit-kit"
    groups: list[str] = field(default_factory=lambda: ["thingkit-fleet"])
    ca_mode: str = "register"
    rule_name: str = "thingkit_offline_to_shadow"
    rule_role_arn: str = ""
    jitp: bool = False
    jitp_role_arn: str = ""
    claim_template: str = ""
    claim_role_arn: str = ""

    def cert_arn(self, cert_id: str) -> str:
        return f"arn:{self.partition}:iot:{self.region}:{self.account}:cert/{cert_id}"


@dataclass
class Step:
    """One API call.

    Attributes:
        api: the boto3 ``iot`` client method.
        params: its keyword arguments.
        what: one line for people.
        kind: the resource it makes (for teardown): ``ca``, ``certificate``, ``thing``,
            ``thing_type``, ``thing_group``, ``group_member``, ``policy``,
            ``policy_attachment``, ``thing_principal``, ``topic_rule``, ``template``,
            or ``""`` for a change that makes nothing (a status update).
        key: the resource's id within its kind.
        device: the thing this step is for ("" for fleet-wide steps).
    """

    api: str
    params: dict
    what: str
    kind: str = ""
    key: str = ""
    device: str = ""

    def to_json(self) -> dict:
        return {
            "api": self.api,
            "params": self.params,
            "what": self.what,
            "kind": self.kind,
            "key": self.key,
            "device": self.device,
        }


@dataclass
class Plan:
    """An ordered list of steps, and the documents they carry."""

    steps: list[Step] = field(default_factory=list)
    region: str = ""
    notes: list[str] = field(default_factory=list)

    def add(self, *a, **kw) -> Step:
        s = Step(*a, **kw)
        self.steps.append(s)
        return s

    def policies(self) -> dict[str, dict]:
        """Policy name -> document, for every policy the plan creates."""
        return {
            s.params["policyName"]: json.loads(s.params["policyDocument"])
            for s in self.steps
            if s.api == "create_policy"
        }

    def check(self, dry_run: bool = False) -> None:
        """Refuse a plan with a wildcard in a policy or a missing role.

        Args:
            dry_run: placeholders for what is made when the plan runs are fine.

        Raises:
            PlanError: listing each problem.
        """
        problems = []
        for name, doc in self.policies().items():
            problems += [f"policy {name}: {w}" for w in wildcards(doc)]
        for s in self.steps:
            text = json.dumps(s.params)
            if ROLE_PLACEHOLDER in text:
                problems.append(f"{s.what}: an IAM role ARN is required")
            if CLAIM_PLACEHOLDER in text and not dry_run:
                problems.append(f"{s.what}: the claim certificate is missing")
        if problems:
            raise PlanError("the plan must not run: " + "; ".join(problems))

    def counts(self) -> Counter:
        return Counter(s.api for s in self.steps)

    def to_json(self) -> dict:
        return {
            "region": self.region,
            "notes": self.notes,
            "counts": dict(self.counts()),
            "policies": self.policies(),
            "steps": [s.to_json() for s in self.steps],
        }

    def render(self, devices_shown: int = 1) -> str:
        """The plan for people: fleet-wide steps in full, the first devices' steps, counts."""
        out = [f"AWS IoT plan for {self.region}: {len(self.steps)} API calls"]
        out += [f"  note: {n}" for n in self.notes]
        shown: list[str] = []
        hidden = Counter()
        for s in self.steps:
            if s.device and s.device not in shown and len(shown) >= devices_shown:
                hidden[s.api] += 1
                continue
            if s.device and s.device not in shown:
                shown.append(s.device)
            out.append(f"  {s.api}: {s.what}")
            if s.api in ("create_policy", "create_topic_rule", "create_provisioning_template"):
                params = dict(s.params)
                for k in ("policyDocument", "templateBody"):
                    if k in params:
                        params[k] = json.loads(params[k])
                out.append("    " + json.dumps(params, indent=1).replace("\n", "\n    "))
        if hidden:
            n = len({s.device for s in self.steps if s.device}) - len(shown)
            calls = ", ".join(f"{api} x{c}" for api, c in sorted(hidden.items()))
            out.append(f"  ... and the same for {n} more devices ({calls})")
        return "\n".join(out)


def _pem(kp_cert) -> str:
    return kp_cert.public_bytes(serialization.Encoding.PEM).decode()


def rule_payload(opts: AwsOptions) -> dict:
    """The topic rule: the Last Will (``state: offline``) republished to the shadow."""
    return {
        "sql": (
            "SELECT {'reported': {'connected': false}} AS state "
            f"FROM '{opts.topic_prefix}/+/status' WHERE state = 'offline'"
        ),
        "description": "thingkit: a device's Last Will sets reported.connected=false",
        "ruleDisabled": False,
        "awsIotSqlVersion": "2016-03-23",
        "actions": [
            {
                "republish": {
                    "roleArn": opts.rule_role_arn or ROLE_PLACEHOLDER,
                    "topic": "$$aws/things/${topic(2)}/shadow/update",
                    "qos": 1,
                }
            }
        ],
    }


def fleet_steps(plan: Plan, ca: CertificateAuthority | None, opts: AwsOptions) -> None:
    """The fleet-wide steps (CA, type, groups, policy, rule, templates)."""
    if opts.ca_mode == "register":
        if ca is None:
            raise PlanError("ca_mode 'register' needs the fleet's CA")
        now_valid = [c for c in ca.intermediates if c.not_valid_after_utc > _now()]
        for cert in now_valid:
            params: dict = {
                "caCertificate": _pem(cert),
                "verificationCertificate": VERIFY_PLACEHOLDER,
                "setAsActive": True,
                "allowAutoRegistration": bool(opts.jitp),
                "certificateMode": "DEFAULT",
            }
            if opts.jitp and cert == ca.issuing.cert:
                params["registrationConfig"] = {
                    "templateBody": jitp_template(opts.thing_type, opts.groups, opts.policy_name),
                    "roleArn": opts.jitp_role_arn or ROLE_PLACEHOLDER,
                }
            cn = cert.subject.rfc4514_string()
            plan.add(
                "register_ca_certificate", params, f"register CA {cn}", "ca", fingerprint(cert)
            )
    elif opts.ca_mode != "none":
        raise PlanError(f"unknown CA mode {opts.ca_mode!r}: use 'register' or 'none'")
    plan.add(
        "create_thing_type",
        {
            "thingTypeName": opts.thing_type,
            "thingTypeProperties": {
                "thingTypeDescription": "thingkit reference kit",
                "searchableAttributes": ["serial", "model", "hw_rev"],
            },
        },
        f"thing type {opts.thing_type}",
        "thing_type",
        opts.thing_type,
    )
    for g in opts.groups:
        plan.add(
            "create_thing_group",
            {"thingGroupName": g, "thingGroupProperties": {"thingGroupDescription": "thingkit"}},
            f"static thing group {g}",
            "thing_group",
            g,
        )
    doc = device_policy(opts.region, opts.account, opts.topic_prefix, partition=opts.partition)
    plan.add(
        "create_policy",
        {"policyName": opts.policy_name, "policyDocument": json.dumps(doc)},
        f"device policy {opts.policy_name} (own topics, shadows, jobs; client id = thing name)",
        "policy",
        opts.policy_name,
    )
    plan.add(
        "create_topic_rule",
        {"ruleName": opts.rule_name, "topicRulePayload": rule_payload(opts)},
        f"topic rule {opts.rule_name}: Last Will -> shadow reported.connected=false",
        "topic_rule",
        opts.rule_name,
    )


def claim_steps(
    plan: Plan, opts: AwsOptions, claim: KeyPair | None, ca: CertificateAuthority | None
) -> None:
    """Fleet provisioning by claim: template, claim policy, claim certificate.

    ``claim`` None (a dry run before the claim certificate exists) plans placeholders.
    """
    name = opts.claim_template
    plan.add(
        "create_provisioning_template",
        {
            "templateName": name,
            "description": "thingkit fleet provisioning by claim",
            "templateBody": fleet_template(opts.thing_type, opts.groups, opts.policy_name),
            "enabled": True,
            "provisioningRoleArn": opts.claim_role_arn or ROLE_PLACEHOLDER,
            "type": "FLEET_PROVISIONING",
        },
        f"fleet-provisioning template {name}",
        "template",
        name,
    )
    pname = f"{name}-claim"
    plan.add(
        "create_policy",
        {
            "policyName": pname,
            "policyDocument": json.dumps(
                claim_policy(opts.region, opts.account, name, opts.partition)
            ),
        },
        f"claim policy {pname} (fleet provisioning MQTT API only)",
        "policy",
        pname,
    )
    if claim is None:
        cert_id = "<claim certificate id>"
        plan.add(
            "register_certificate",
            {"certificatePem": CLAIM_PLACEHOLDER, "setAsActive": True},
            f"register the claim certificate for {name}",
            "certificate",
            cert_id,
        )
    else:
        cert_id = claim.fingerprint
        _cert_steps(plan, opts, claim, ca, device="", label=f"claim certificate for {name}")
    plan.add(
        "attach_policy",
        {"policyName": pname, "target": opts.cert_arn(cert_id)},
        f"attach {pname} to the claim certificate",
        "policy_attachment",
        f"{pname}|{opts.cert_arn(cert_id)}",
    )


def _cert_steps(plan: Plan, opts: AwsOptions, pair: KeyPair, ca, device: str, label: str) -> None:
    pem = pair.cert_pem.decode()
    fp = pair.fingerprint
    if opts.ca_mode == "register":
        issuer = ca.issuer_of(pair.cert) if ca is not None else None
        if issuer is None:
            raise PlanError(f"{label}: certificate not issued by the fleet's CA")
        plan.add(
            "register_certificate",
            {"certificatePem": pem, "caCertificatePem": _pem(issuer), "setAsActive": True},
            f"register {label} ({fp[:12]}...)",
            "certificate",
            fp,
            device,
        )
    else:
        plan.add(
            "register_certificate_without_ca",
            {"certificatePem": pem, "status": "ACTIVE"},
            f"register {label} without CA ({fp[:12]}...)",
            "certificate",
            fp,
            device,
        )


def device_steps(plan: Plan, opts: AwsOptions, entry: DeviceEntry, ca) -> None:
    """The five kinds of call that register one device."""
    thing = entry.thing_name
    pair = entry.identity()
    arn = opts.cert_arn(pair.fingerprint)
    _cert_steps(plan, opts, pair, ca, thing, f"certificate of {thing}")
    attrs = {"serial": entry.serial, "model": entry.model}
    for k in ("mac", "hw_rev", "mfg_date"):
        v = getattr(entry, k)
        if v:
            attrs[k] = v.replace(":", "") if k == "mac" else v
    plan.add(
        "create_thing",
        {
            "thingName": thing,
            "thingTypeName": opts.thing_type,
            "attributePayload": {"attributes": attrs, "merge": True},
        },
        f"thing {thing}",
        "thing",
        thing,
        thing,
    )
    for g in opts.groups:
        plan.add(
            "add_thing_to_thing_group",
            {"thingGroupName": g, "thingName": thing},
            f"{thing} joins {g}",
            "group_member",
            f"{g}|{thing}",
            thing,
        )
    plan.add(
        "attach_policy",
        {"policyName": opts.policy_name, "target": arn},
        f"attach {opts.policy_name} to the certificate of {thing}",
        "policy_attachment",
        f"{opts.policy_name}|{arn}",
        thing,
    )
    plan.add(
        "attach_thing_principal",
        {"thingName": thing, "principal": arn},
        f"attach the certificate to {thing}",
        "thing_principal",
        f"{thing}|{arn}",
        thing,
    )


def registration_plan(
    entries: list[DeviceEntry],
    opts: AwsOptions,
    ca: CertificateAuthority | None,
    claim: KeyPair | None = None,
) -> Plan:
    """Everything that registers ``entries`` (the fleet's current, unrevoked identities)."""
    plan = Plan(region=opts.region)
    fleet_steps(plan, ca, opts)
    if opts.claim_template:
        claim_steps(plan, opts, claim, ca)
    for e in entries:
        if e.status == "active":
            device_steps(plan, opts, e, ca)
    if opts.ca_mode == "register":
        plan.notes.append(
            "the CA's verification certificate is made from the account's "
            "registration code when the plan runs"
        )
    return plan


def revocation_plan(opts: AwsOptions, revoked: list[tuple[str, str]]) -> Plan:
    """Revoke certificates on AWS: (thing, certificate id) -> status REVOKED, detached.

    A revoked certificate can no longer connect; detaching it from its thing and policy
    keeps the registry showing only the thing's live certificate.
    """
    plan = Plan(region=opts.region)
    for thing, cert_id in revoked:
        arn = opts.cert_arn(cert_id)
        plan.add(
            "update_certificate",
            {"certificateId": cert_id, "newStatus": "REVOKED"},
            f"revoke certificate {cert_id[:12]}... of {thing}",
            "",
            cert_id,
            thing,
        )
        if thing:
            plan.add(
                "detach_thing_principal",
                {"thingName": thing, "principal": arn},
                f"detach it from {thing}",
                "",
                f"{thing}|{arn}",
                thing,
            )
        plan.add(
            "detach_policy",
            {"policyName": opts.policy_name, "target": arn},
            f"detach {opts.policy_name} from it",
            "",
            f"{opts.policy_name}|{arn}",
            thing,
        )
    return plan


def _now():
    import datetime as dt

    return dt.datetime.now(dt.UTC)
