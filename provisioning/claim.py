"""Fleet provisioning by claim: claim batches, their allow-lists, and the provisioning
engine that answers AWS IoT's device provisioning MQTT API.

A *claim batch* is one low-privilege birth certificate shared by a manufacturing batch
(IoT Lens BP 25.3) plus the manufacturer's allow-list of serials (BP 25.3.2), each
serial mapped to the thing name it will get. The batch's provisioning template has the
batch's name. :class:`ClaimRegistry` keeps the batches in one JSON file; the bench's
broker ACL gives the claim identity the provisioning topics and nothing else.

:class:`ProvisioningEngine` is the service side of the MQTT API (the documented topics
and JSON shapes of ``CreateCertificateFromCsr``, ``CreateKeysAndCertificate`` and
``RegisterThing``). It is transport-free: ``handle(topic, payload)`` returns the replies
to publish, so it is tested without a broker and served by
``host_tools.bench.fleet_provisioning``. Every request is recorded in an events file
(JSON lines: what, result, code, reason, serial, thing, certificate fingerprint; never a
key). Refusals, as the AWS error response ``{"statusCode", "errorCode",
"errorMessage"}``:

- 400 ``InvalidPayload`` / ``InvalidCSR``: not JSON, missing field, a CSR that does not
  parse or whose signature is wrong, a subject that is not the allow-listed thing name;
- 403 ``NotAllowListed`` (pre-provisioning check: serial not on the batch's allow-list),
  ``AlreadyProvisioned`` (a second kit with a serial already provisioned with another
  certificate), ``ClaimDisabled`` (``thingkit revoke --claim``), ``InvalidToken``;
- 404 ``TemplateNotFound``;
- 429 ``Throttled``: more than ``burst`` requests of one kind in ``window_s`` seconds.

The error codes are the bench's own words: AWS documents the statusCode values and the
response shape, not a list of errorCode strings.

    reg = ClaimRegistry(bench_root / "claims.json")
    reg.add_batch("batch-01", claim_fp, claim_cn, {"SN1": "kit-SN1"})
    eng = ProvisioningEngine(reg, ca, events, register=lambda thing, fp: ...)
    for topic, doc in eng.handle("$aws/certificates/create-from-csr/json", payload): ...
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from provisioning.ca import CertificateAuthority, Usage

CSR_TOPIC = "$aws/certificates/create-from-csr/json"
CREATE_TOPIC = "$aws/certificates/create/json"
TEMPLATE_TOPIC = "$aws/provisioning-templates/{}/provision/json"
TOKEN_TTL_S = 3600  # AWS: the ownership token expires after one hour
SERIAL_PARAM = "SerialNumber"


def claim_cn(batch: str) -> str:
    """The claim certificate's CN: a '.' so it never collides with a thing name."""
    return f"claim.{batch}"


def claim_rules(batch: str) -> list[str]:
    """mosquitto ACL lines of a claim identity: the provisioning topics only."""
    out = []
    for req in (CSR_TOPIC, CREATE_TOPIC, TEMPLATE_TOPIC.format(batch)):
        out += [f"topic write {req}", f"topic read {req}/accepted", f"topic read {req}/rejected"]
    return out


def _atomic_json(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def _read_json(path: Path, default: dict) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return default


def record_event(path: Path, **event: object) -> None:
    """Append one event (JSON line) to the provisioning record; never a key."""
    event.setdefault("t", round(time.time(), 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")


class ClaimRegistry:
    """Claim batches in one JSON file: ``{"batches": {name: {...}}}``.

    A batch: ``claim_cn``, ``claim_fingerprint``, ``allow`` (serial -> thing name),
    ``provisioned`` (serial -> {thing, fingerprint, token, at}), ``disabled``,
    ``burst``/``window_s``, and ``inject`` (bench test control: the next reply's fault).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = threading.Lock()

    def read(self) -> dict:
        return _read_json(self.path, {"batches": {}})

    def write(self, doc: dict) -> None:
        _atomic_json(self.path, doc)

    def batches(self) -> dict[str, dict]:
        return self.read()["batches"]

    def add_batch(
        self,
        batch: str,
        fingerprint: str,
        allow: dict[str, str],
        burst: int = 20,
        window_s: float = 10.0,
        cert_pem: str = "",
    ) -> dict:
        """Add or update a batch (a new claim certificate or more serials)."""
        with self.lock:
            doc = self.read()
            b = doc["batches"].setdefault(batch, {"provisioned": {}, "created": int(time.time())})
            b.update(
                claim_cn=claim_cn(batch),
                claim_fingerprint=fingerprint,
                claim_cert=cert_pem,
                allow={**b.get("allow", {}), **allow},
                disabled=False,
                burst=burst,
                window_s=window_s,
            )
            self.write(doc)
            return b

    def disable(self, batch: str, reason: str) -> bool:
        """Disable a batch's claim (no more provisioning); False if already disabled."""
        with self.lock:
            doc = self.read()
            b = doc["batches"].get(batch)
            if b is None:
                raise KeyError(batch)
            was = b.get("disabled", False)
            b["disabled"] = True
            b["disabled_reason"] = reason
            self.write(doc)
            return not was

    def inject(self, batch: str, fault: str | None) -> None:
        """Bench test control: the next create-from-csr reply is ``fault``
        ("malformed", "wrong_key", "rejected") instead of the real one, or the next
        RegisterThing is accepted without registering the thing ("skip_register")."""
        with self.lock:
            doc = self.read()
            doc["batches"][batch]["inject"] = fault
            self.write(doc)


def issue_from_csr(
    ca: CertificateAuthority, csr: x509.CertificateSigningRequest
) -> x509.Certificate:
    """A client certificate for the CSR's key and CN, with the CA's one leaf profile."""

    class _Public:  # leaf_issuer takes a key object; only its public half is used
        def public_key(self):
            return csr.public_key()

    cn = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    return ca.leaf_issuer(Usage.CLIENT, ca.policy.leaf_days)(cn, _Public())


def _fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


class Refused(Exception):
    """A request refused with an AWS error response."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.doc = {"statusCode": status, "errorCode": code, "errorMessage": message}


class ProvisioningEngine:
    """Answers the device provisioning MQTT API (JSON payload format)."""

    def __init__(
        self,
        registry: ClaimRegistry,
        ca: CertificateAuthority,
        events: Path,
        register: Callable[[str, str], None],
        tokens: Path | None = None,
        revoke: Callable[[list[x509.Certificate]], None] = lambda certs: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.ca = ca
        self.events = Path(events)
        self.tokens_path = Path(tokens) if tokens else self.events.with_name("fp-tokens.json")
        self.register = register
        self.revoke = revoke
        self.clock = clock
        self._recent: dict[str, deque] = {}

    # -- records ----------------------------------------------------------------------
    def record(self, **event: object) -> None:
        record_event(self.events, t=round(self.clock(), 3), **event)

    def _throttle(self, kind: str, burst: int, window_s: float) -> None:
        now = self.clock()
        q = self._recent.setdefault(kind, deque())
        while q and now - q[0] > window_s:
            q.popleft()
        if len(q) >= burst:
            raise Refused(429, "Throttled", f"more than {burst} {kind} requests in {window_s:g} s")
        q.append(now)

    def _limits(self) -> tuple[int, float]:
        bs = self.registry.batches().values()
        return (max((b.get("burst", 20) for b in bs), default=20),
                min((b.get("window_s", 10.0) for b in bs), default=10.0))  # fmt: skip

    # -- dispatch ---------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes) -> list[tuple[str, dict]]:
        """The replies (topic, document) to one request; [] for a topic not served."""
        if topic == CSR_TOPIC:
            op, fn = "create-from-csr", self._create_from_csr
        elif topic == CREATE_TOPIC:
            op, fn = "create", self._create_keys
        else:
            parts = topic.split("/")
            if len(parts) != 5 or parts[:2] != ["$aws", "provisioning-templates"]:
                return []
            if parts[3:] != ["provision", "json"]:
                return []
            op, fn = "provision", lambda doc: self._register_thing(parts[2], doc)
        try:
            try:
                doc = json.loads(payload)
            except ValueError:
                raise Refused(400, "InvalidPayload", "the payload is not JSON") from None
            if not isinstance(doc, dict):
                raise Refused(400, "InvalidPayload", "the payload is not a JSON object")
            burst, window = self._limits()
            self._throttle(op, burst, window)
            reply, event = fn(doc)
        except Refused as r:
            self.record(op=op, result="rejected", code=r.doc["errorCode"],
                        status=r.doc["statusCode"], reason=r.doc["errorMessage"],
                        **getattr(r, "context", {}))  # fmt: skip
            return [(topic + "/rejected", r.doc)]
        self.record(op=op, result="accepted", **event)
        return [(topic + "/accepted", reply)]

    # -- CreateCertificateFromCsr -----------------------------------------------------
    def _create_from_csr(self, doc: dict) -> tuple[dict, dict]:
        pem = doc.get("certificateSigningRequest")
        if not isinstance(pem, str):
            raise Refused(400, "InvalidPayload", "certificateSigningRequest is missing")
        try:
            csr = x509.load_pem_x509_csr(pem.encode())
        except ValueError as exc:
            raise Refused(400, "InvalidCSR", f"the CSR does not parse: {exc}") from None
        if not csr.is_signature_valid:
            raise Refused(400, "InvalidCSR", "the CSR's signature does not verify")
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise Refused(400, "InvalidCSR", "only EC P-256 keys are accepted")
        cns = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        if len(cns) != 1:
            raise Refused(400, "InvalidCSR", "the CSR subject must be one CN (the thing name)")
        cn = str(cns[0].value)
        try:
            self._check_claimable(cn)
        except Refused as r:
            r.context = {"cn": cn}  # type: ignore[attr-defined]
            raise
        fault = self._take_fault(("malformed", "wrong_key", "rejected"))
        if fault == "rejected":
            raise Refused(500, "InternalFailure", "injected by the bench (test control)")
        cert = self._unactivated(cn, csr.public_key()) or issue_from_csr(self.ca, csr)
        if fault == "wrong_key":  # a certificate for another key, same CN
            cert = self.ca.issue(cn, Usage.CLIENT).cert
        token = self._new_token(cert)
        reply = {
            "certificateId": _fp(cert),
            "certificatePem": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "certificateOwnershipToken": token,
        }
        if fault == "malformed":
            reply = {"certificateId": _fp(cert), "certificatePem": "-----BEGIN CERT", "x": [1]}
        event = {"cn": cn, "cert": _fp(cert)}
        if fault:
            event["injected"] = fault
        return reply, event

    def _check_claimable(self, cn: str) -> None:
        """A certificate is made only for a thing of an active batch's allow-list that is
        not provisioned yet. The bench's broker identity is the CN, and a certificate AWS
        keeps PENDING_ACTIVATION until RegisterThing would be usable at once here: so no
        claim holder can get one for a thing that exists."""
        for b in self.registry.batches().values():
            if b.get("disabled"):
                continue
            for serial, thing in b["allow"].items():
                if thing != cn:
                    continue
                done = b["provisioned"].get(serial)
                if done:
                    raise Refused(403, "AlreadyProvisioned", f"{cn} (serial {serial}) was "
                                  f"provisioned at {done['at']}: a second kit with the same "
                                  "serial?")  # fmt: skip
                return
        raise Refused(403, "NotAllowListed", f"{cn} is not a thing of an active claim batch")

    def _unactivated(self, cn: str, key: ec.EllipticCurvePublicKey) -> x509.Certificate | None:
        """A certificate made earlier for this name and key and not activated yet (a kit
        that asks again after a power cut): the same one again, so no stray is left."""
        want = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for v in _read_json(self.tokens_path, {}).values():
            if v["cn"] != cn or v.get("activated") or "cert" not in v:
                continue
            cert = x509.load_pem_x509_certificate(v["cert"].encode())
            have = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            if have == want:
                return cert
        return None

    def _take_fault(self, kinds: tuple[str, ...]) -> str | None:
        with self.registry.lock:
            doc = self.registry.read()
            for b in doc["batches"].values():
                if b.get("inject") in kinds:
                    fault, b["inject"] = b["inject"], None
                    self.registry.write(doc)
                    return fault
        return None

    # -- CreateKeysAndCertificate -----------------------------------------------------
    def _create_keys(self, doc: dict) -> tuple[dict, dict]:
        # The thing name is not known yet: on the bench (identity = CN) such a certificate
        # cannot become a thing's, and RegisterThing says so (docs/claim.rst).
        pair = self.ca.issue(f"pending-{secrets.token_hex(6)}", Usage.CLIENT)
        token = self._new_token(pair.cert)
        reply = {
            "certificateId": pair.fingerprint,
            "certificatePem": pair.cert_pem.decode(),
            "privateKey": pair.key_pem().decode(),
            "certificateOwnershipToken": token,
        }
        return reply, {"cert": pair.fingerprint}

    # -- tokens -----------------------------------------------------------------------
    def _new_token(self, cert: x509.Certificate) -> str:
        token = secrets.token_urlsafe(32)
        with self.registry.lock:
            toks = _read_json(self.tokens_path, {})
            now = self.clock()
            gone = [v for v in toks.values() if v["expires"] <= now and not v.get("activated")]
            toks = {t: v for t, v in toks.items() if v["expires"] > now}
            self._revoke_strays(gone)
            toks[token] = {
                "fingerprint": _fp(cert),
                "cn": cert.subject.rfc4514_string().removeprefix("CN="),
                "expires": now + TOKEN_TTL_S,
                "cert": cert.public_bytes(serialization.Encoding.PEM).decode(),
            }
            _atomic_json(self.tokens_path, toks)
        return token

    def _revoke_strays(self, entries: list[dict]) -> None:
        certs = [x509.load_pem_x509_certificate(v["cert"].encode()) for v in entries if "cert" in v]
        if certs:
            self.record(op="revoke-unactivated", certs=[_fp(c) for c in certs])
            self.revoke(certs)

    # -- RegisterThing ----------------------------------------------------------------
    def _register_thing(self, template: str, doc: dict) -> tuple[dict, dict]:
        batch = self.registry.batches().get(template)
        if batch is None:
            raise Refused(404, "TemplateNotFound", f"no provisioning template {template!r}")
        params = doc.get("parameters") or {}
        serial = params.get(SERIAL_PARAM) if isinstance(params, dict) else None
        ctx = {"template": template, "serial": serial}

        def refuse(status: int, code: str, msg: str) -> Refused:
            r = Refused(status, code, msg)
            r.context = ctx  # type: ignore[attr-defined]
            return r

        if batch.get("disabled"):
            raise refuse(403, "ClaimDisabled", f"the claim of {template} is disabled")
        token = doc.get("certificateOwnershipToken")
        if not isinstance(token, str) or not isinstance(serial, str):
            raise refuse(400, "InvalidPayload", "certificateOwnershipToken and "
                         f"parameters.{SERIAL_PARAM} are required")  # fmt: skip
        # Pre-provisioning check (IoT Lens BP 25.3.2): the manufacturer's allow-list.
        thing = batch["allow"].get(serial)
        if thing is None:
            raise refuse(403, "NotAllowListed", f"serial {serial} is not on the allow-list "
                         f"of {template}")  # fmt: skip
        ctx["thing"] = thing
        tok = _read_json(self.tokens_path, {}).get(token)
        if tok is None or tok["expires"] <= self.clock():
            raise refuse(403, "InvalidToken", "unknown or expired certificateOwnershipToken")
        ctx["cert"] = tok["fingerprint"]
        if tok["cn"] != thing:
            raise refuse(400, "InvalidCSR", f"the certificate's CN is {tok['cn']!r}; serial "
                         f"{serial} is thing {thing!r} (the bench names a thing's "
                         "certificate by its CN)")  # fmt: skip
        done = batch["provisioned"].get(serial)
        if done and done["fingerprint"] != tok["fingerprint"]:
            raise refuse(403, "AlreadyProvisioned", f"serial {serial} was provisioned as "
                         f"{done['thing']} at {done['at']} with another certificate: a "
                         "second kit with the same serial?")  # fmt: skip
        if not done and self._take_fault(("skip_register",)):
            # Test control: accepted, but the thing is not registered (as a template
            # whose policy could not be attached): its certificate reaches nothing.
            return {"thingName": thing, "deviceConfiguration": {}}, {**ctx, "injected": True}
        if not done:
            # The thing and its least-privilege policy first, then the record: a crash in
            # between leaves a registration the device's retry (same token) completes.
            self.register(thing, tok["fingerprint"])
            with self.registry.lock:
                reg = self.registry.read()
                reg["batches"][template]["provisioned"][serial] = {
                    "thing": thing,
                    "fingerprint": tok["fingerprint"],
                    "at": dt.datetime.fromtimestamp(self.clock(), dt.UTC).isoformat(
                        timespec="seconds"
                    ),
                }
                self.registry.write(reg)
            # Other certificates made for this thing's name were never activated: AWS
            # deletes them after an hour; here they would work, so they are revoked.
            with self.registry.lock:
                toks = _read_json(self.tokens_path, {})
                for v in toks.values():  # every token of this certificate
                    if v["fingerprint"] == tok["fingerprint"]:
                        v["activated"] = True
                strays = [v for v in toks.values()
                          if v["cn"] == thing and v["fingerprint"] != tok["fingerprint"]]  # fmt: skip
                toks = {t: v for t, v in toks.items() if v not in strays}
                _atomic_json(self.tokens_path, toks)
            self._revoke_strays(strays)
        reply = {"thingName": thing, "deviceConfiguration": {}}
        return reply, {**ctx, "again": bool(done)}
