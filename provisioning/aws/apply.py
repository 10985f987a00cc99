"""Run an AWS plan: idempotent, rate-limited, retried; and tear down what it created.

- **Rate**: one token bucket for all control-plane calls (default 10 calls/s, under the
  lowest per-API AWS IoT quota thingkit uses), so a fleet of 10,000 never trips a quota.
- **Retries**: throttling and transient service errors are retried with full-jitter
  exponential backoff (``sleep = random(0, min(cap, base * 2**attempt))``), 8 attempts.
- **Idempotent**: a resource that already exists is left alone (a policy or topic rule
  whose document differs gets a new default version / is replaced); attaching twice is a
  no-op on AWS. Re-running a plan after an interruption finishes it.
- **State**: every resource a plan created (not ones that already existed) is appended to
  a state file (JSON lines) before the next call; :func:`teardown` removes exactly those,
  in reverse order.

Example::

    iot = boto3.client("iot", region_name="eu-west-1")
    result = Applier(iot, Path("out/aws-state.jsonl")).apply(plan, ca=ca)
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.aws.plan import VERIFY_PLACEHOLDER, Plan, PlanError, Step
from provisioning.ca import CertificateAuthority, Usage
from provisioning.revocation import fingerprint

RETRYABLE = {
    "ThrottlingException",
    "TooManyRequestsException",
    "ServiceUnavailableException",
    "InternalFailureException",
    "InternalException",
    "RequestTimeout",
    "RequestTimeoutException",
}
EXISTS = {"ResourceAlreadyExistsException"}


def _code(exc: Exception) -> str:
    resp = getattr(exc, "response", None) or {}
    return str(resp.get("Error", {}).get("Code", ""))


class RateLimiter:
    """A token bucket: at most ``rate`` calls per second, bursts of ``burst``."""

    def __init__(
        self, rate: float, burst: int | None = None, clock=time.monotonic, sleep=time.sleep
    ) -> None:
        self.rate = rate
        self.burst = burst or max(1, int(rate))
        self.tokens = float(self.burst)
        self.clock, self.sleep = clock, sleep
        self.last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens < 1:
                self.sleep((1 - self.tokens) / self.rate)
                now = self.clock()
                self.tokens = max(1.0, self.tokens + (now - self.last) * self.rate)
                self.last = now
            self.tokens -= 1


@dataclass
class ApplyResult:
    created: int = 0
    existing: int = 0
    updated: int = 0
    removed: int = 0
    calls: int = 0
    retries: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def summary(self, what: str = "applied") -> str:
        rate = self.calls / self.seconds if self.seconds > 0 else 0.0
        done = (
            f"{self.removed} removed, {self.existing} already gone"
            if what == "teardown"
            else f"{self.created} created, {self.existing} already there, {self.updated} updated"
        )
        return (
            f"{what}: {done}, {len(self.errors)} failed; {self.calls} API calls "
            f"({self.retries} retried) in {self.seconds:.1f} s, {rate:.1f} calls/s"
        )


class Applier:
    """Runs plans against one boto3 ``iot`` client."""

    def __init__(
        self,
        client,
        state_path: Path,
        rate: float = 10.0,
        attempts: int = 8,
        base: float = 0.5,
        cap: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.iot = client
        self.state_path = Path(state_path)
        self.limiter = RateLimiter(rate, sleep=sleep)
        self.attempts, self.base, self.cap, self.sleep = attempts, base, cap, sleep
        self.result = ApplyResult()
        self._known = {(r["kind"], r["key"]) for r in read_state(self.state_path)}

    # -- calls -------------------------------------------------------------------------
    def call(self, api: str, **params):
        """One API call under the rate limit, retried on throttling and 5xx."""
        for attempt in range(self.attempts):
            self.limiter.acquire()
            self.result.calls += 1
            try:
                return getattr(self.iot, api)(**params)
            except Exception as exc:
                if _code(exc) not in RETRYABLE or attempt == self.attempts - 1:
                    raise
                self.result.retries += 1
                self.sleep(random.uniform(0, min(self.cap, self.base * 2**attempt)))
        raise AssertionError("unreachable")

    # -- state ---------------------------------------------------------------------------
    def _record(self, step: Step, extra: dict | None = None) -> None:
        self._known.add((step.kind, step.key))
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        rec = {
            "kind": step.kind,
            "key": step.key,
            "device": step.device,
            "params": _teardown_params(step),
            **(extra or {}),
        }
        with open(self.state_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")

    # -- apply -------------------------------------------------------------------------
    def apply(
        self,
        plan: Plan,
        ca: CertificateAuthority | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ApplyResult:
        """Run every step; a step that fails is reported and the run goes on.

        Raises:
            PlanError: the plan has a wildcard or lacks a role (checked before any call).
        """
        plan.check()
        t0 = time.monotonic()
        failed_devices: set[str] = set()
        for i, step in enumerate(plan.steps, start=1):
            if step.device and step.device in failed_devices:
                continue
            try:
                self._step(step, ca)
            except Exception as exc:  # noqa: BLE001 - a failed step is reported; the run goes on
                msg = f"{step.api} ({step.what}): {_code(exc) or type(exc).__name__}: {exc}"
                self.result.errors.append(msg)
                if step.device:
                    failed_devices.add(step.device)
            if progress:
                progress(i, len(plan.steps))
        self.result.seconds = time.monotonic() - t0
        return self.result

    def _step(self, step: Step, ca: CertificateAuthority | None) -> None:
        r = self.result
        params = dict(step.params)
        if step.api == "register_ca_certificate":
            if self._exists(self.iot_describe_ca, step.key):
                r.existing += 1
                return
            if params.get("verificationCertificate") == VERIFY_PLACEHOLDER:
                params["verificationCertificate"] = self._verification_pem(ca, params)
            self.call(step.api, **params)
            r.created += 1
            self._record(step)
            return
        if step.api in (
            "attach_policy",
            "attach_thing_principal",
            "add_thing_to_thing_group",
            "update_certificate",
            "detach_thing_principal",
            "detach_policy",
        ):
            try:
                self.call(step.api, **params)
            except Exception as exc:
                if step.api.startswith("detach") and _code(exc) == "ResourceNotFoundException":
                    r.existing += 1
                    return
                raise
            if not step.kind:
                r.updated += 1
            elif (step.kind, step.key) in self._known:
                r.existing += 1
            else:
                r.created += 1
                self._record(step)
            return
        try:
            self.call(step.api, **params)
        except Exception as exc:
            if _code(exc) not in EXISTS:
                raise
            if self._converge(step):
                r.updated += 1
            else:
                r.existing += 1
            return
        if (step.kind, step.key) in self._known:  # AWS's create_thing is idempotent
            r.existing += 1
            return
        r.created += 1
        self._record(step)

    def iot_describe_ca(self, cert_id: str):
        return self.call("describe_ca_certificate", certificateId=cert_id)

    def _exists(self, describe, key: str) -> bool:
        try:
            describe(key)
            return True
        except Exception as exc:
            if _code(exc) == "ResourceNotFoundException":
                return False
            raise

    def _verification_pem(self, ca: CertificateAuthority | None, params: dict) -> str:
        """Proof of possession of the CA key: a certificate with CN = registration code."""
        if ca is None:
            raise PlanError("registering the CA needs the CA (with its passphrase)")
        from cryptography import x509

        target = x509.load_pem_x509_certificate(params["caCertificate"].encode())
        code = self.call("get_registration_code")["registrationCode"]
        if target == ca.issuing.cert:
            pair = ca.issue(code, Usage.CLIENT, days=1)
        else:
            raise PlanError(
                "a retired intermediate can only be registered while it was current "
                f"({target.subject.rfc4514_string()})"
            )
        return pair.cert_pem.decode()

    def _converge(self, step: Step) -> bool:
        """An existing policy or rule: bring its document up to date. True if changed."""
        p = step.params
        if step.api == "create_policy":
            cur = self.call("get_policy", policyName=p["policyName"])
            if json.loads(cur["policyDocument"]) == json.loads(p["policyDocument"]):
                return False
            versions = self.call("list_policy_versions", policyName=p["policyName"])[
                "policyVersions"
            ]
            old = [v for v in versions if not v.get("isDefaultVersion")]
            if len(versions) >= 5 and old:  # AWS keeps at most 5 versions
                oldest = min(old, key=lambda v: int(v["versionId"]))
                self.call(
                    "delete_policy_version",
                    policyName=p["policyName"],
                    policyVersionId=oldest["versionId"],
                )
            self.call(
                "create_policy_version",
                policyName=p["policyName"],
                policyDocument=p["policyDocument"],
                setAsDefault=True,
            )
            return True
        if step.api == "create_topic_rule":
            cur = self.call("get_topic_rule", ruleName=p["ruleName"]).get("rule", {})
            want = p["topicRulePayload"]
            if cur.get("sql") == want["sql"] and cur.get("actions") == want["actions"]:
                return False
            self.call("replace_topic_rule", ruleName=p["ruleName"], topicRulePayload=want)
            return True
        return False


def _teardown_params(step: Step) -> dict:
    """What teardown needs to undo a step (not the certificates' PEM)."""
    p = step.params
    keep = {
        "register_ca_certificate": (),
        "register_certificate": (),
        "register_certificate_without_ca": (),
        "create_thing": ("thingName",),
        "create_thing_type": ("thingTypeName",),
        "create_thing_group": ("thingGroupName",),
        "add_thing_to_thing_group": ("thingGroupName", "thingName"),
        "create_policy": ("policyName",),
        "attach_policy": ("policyName", "target"),
        "attach_thing_principal": ("thingName", "principal"),
        "create_topic_rule": ("ruleName",),
        "create_provisioning_template": ("templateName",),
    }.get(step.api, ())
    return {k: p[k] for k in keep if k in p}


def read_state(path: Path) -> list[dict]:
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


_ORDER = {  # teardown order: attachments first, containers last
    "thing_principal": 0,
    "policy_attachment": 0,
    "group_member": 0,
    "certificate": 1,
    "thing": 2,
    "template": 3,
    "topic_rule": 3,
    "policy": 4,
    "thing_group": 5,
    "ca": 6,
    "thing_type": 7,
}


def teardown(
    applier: Applier, dry_run: bool = False, progress: Callable[[int, int], None] | None = None
) -> tuple[list[str], ApplyResult]:
    """Remove every resource recorded in the applier's state file, in reverse order.

    Returns:
        The plan as lines (what is, or would be, removed), and the result. Resources that
        could not be removed stay in the state file (a thing type must be deprecated for 5
        minutes before AWS deletes it: run teardown again).
    """
    recs = read_state(applier.state_path)
    recs = sorted(recs, key=lambda r: _ORDER.get(r["kind"], 9))
    lines = [f"{r['kind']} {r['key']}" for r in recs]
    res = applier.result
    if dry_run:
        return lines, res
    t0 = time.monotonic()
    left: list[dict] = []
    for i, r in enumerate(recs, start=1):
        try:
            _undo(applier, r)
            res.removed += 1
        except Exception as exc:  # noqa: BLE001 - reported and kept in the state file
            if _code(exc) == "ResourceNotFoundException":
                res.existing += 1
            else:
                res.errors.append(f"{r['kind']} {r['key']}: {_code(exc) or exc}: {exc}")
                left.append(r)
        if progress:
            progress(i, len(recs))
    tmp = applier.state_path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in reversed(left)))
    tmp.replace(applier.state_path)
    if not left:
        applier.state_path.unlink()
    res.seconds = time.monotonic() - t0
    return lines, res


def _undo(a: Applier, r: dict) -> None:
    kind, key, p = r["kind"], r["key"], r.get("params", {})
    if kind == "thing_principal":
        a.call("detach_thing_principal", thingName=p["thingName"], principal=p["principal"])
    elif kind == "policy_attachment":
        a.call("detach_policy", policyName=p["policyName"], target=p["target"])
    elif kind == "group_member":
        a.call(
            "remove_thing_from_thing_group",
            thingGroupName=p["thingGroupName"],
            thingName=p["thingName"],
        )
    elif kind == "certificate":
        a.call("update_certificate", certificateId=key, newStatus="INACTIVE")
        a.call("delete_certificate", certificateId=key, forceDelete=True)
    elif kind == "thing":
        a.call("delete_thing", thingName=p["thingName"])
    elif kind == "template":
        a.call("delete_provisioning_template", templateName=p["templateName"])
    elif kind == "topic_rule":
        a.call("delete_topic_rule", ruleName=p["ruleName"])
    elif kind == "policy":
        versions = a.call("list_policy_versions", policyName=p["policyName"])["policyVersions"]
        for v in versions:
            if not v.get("isDefaultVersion"):
                a.call(
                    "delete_policy_version",
                    policyName=p["policyName"],
                    policyVersionId=v["versionId"],
                )
        a.call("delete_policy", policyName=p["policyName"])
    elif kind == "thing_group":
        a.call("delete_thing_group", thingGroupName=p["thingGroupName"])
    elif kind == "ca":
        a.call("update_ca_certificate", certificateId=key, newStatus="INACTIVE")
        a.call("delete_ca_certificate", certificateId=key)
    elif kind == "thing_type":
        a.call("deprecate_thing_type", thingTypeName=p["thingTypeName"], undoDeprecate=False)
        a.call("delete_thing_type", thingTypeName=p["thingTypeName"])
    else:
        raise ValueError(f"unknown resource kind {kind!r}")


__all__ = ["Applier", "ApplyResult", "RateLimiter", "fingerprint", "read_state", "teardown"]
