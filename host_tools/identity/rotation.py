"""Certificate rotation of a provisioned fleet with host-made identities (the library
behind ``thingkit rotate THING`` without ``--over-the-air``).

For each thing: a new identity is issued from the fleet CA and recorded in the fleet
store (ledger, manifests, rebuilt artifacts). On the bench with a virtual kit present it
is delivered to the kit (files written, kit reset), confirmed by the kit reconnecting,
and only then is the old certificate revoked (provisioning.lifecycle.rotate_identity);
otherwise it waits for delivery (an image to flash) and ``rotate --confirm``. Rotation
with keys made on the kit is :mod:`host_tools.bench.cert_rotation` on the bench, and
:func:`rotate_aws_over_the_air` / :func:`rotate_on_aws` here on AWS IoT
(``CreateCertificateFromCsr``; run against moto's IoT model only).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from host_tools.errors import UserError

if TYPE_CHECKING:
    from host_tools.bench.bench import Bench
    from provisioning.ca import CertificateAuthority
    from provisioning.store import FleetStore


@dataclass
class FleetRotation:
    """What :func:`rotate_things` did: one line and one JSON document per thing, and the
    things whose new identity is not delivered or not confirmed yet."""

    lines: list[str] = field(default_factory=list)
    docs: list[dict] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)


def rotate_things(
    store: FleetStore,
    ca: CertificateAuthority,
    things: list[str],
    target: str,
    kits: Path,
    bench: Callable[[], Bench],
    timeout: float = 60.0,
) -> FleetRotation:
    """Rotate ``things`` of the fleet ``store`` with identities issued by ``ca``;
    ``bench()`` gives the bench for ``target`` "bench".

    Raises:
        UserError: the fleet was not issued by the bench's fleet CA (target "bench").
    """
    from provisioning.ca import Usage
    from provisioning.lifecycle import (
        RotationResult,
        SimKitDelivery,
        rebuild_artifacts,
        record_rotation,
        revoke_in_fleet,
        rotate_identity,
    )

    spec = store.read_spec() or {}

    def _bench_ca_check(b: Bench, spec: dict) -> None:
        if Path(spec["ca_dir"]).resolve() != b.layout.fleet_ca.resolve():
            raise UserError(
                f"this fleet was issued by the CA in {spec['ca_dir']}, not the bench's fleet CA",
                "the bench trusts only its own fleet CA",
                "thingkit provision --target bench",
            )

    lines, docs = [], []
    undelivered, unconfirmed = [], []
    with store:
        for thing in things:
            old = store.devices[thing].identity().cert

            def record(new, thing=thing) -> None:
                record_rotation(store, thing, new)
                rebuild_artifacts(
                    store,
                    thing,
                    images=store.image_path(thing).exists(),
                    trees=store.device_dir(thing).exists(),
                )
                if target == "bench":
                    from host_tools.bench import registry as br

                    br.register_things(bench(), {thing: new.fingerprint}, reload=False)
                    bench().apply_config()

            kit_root = kits / thing
            if target == "bench" and kit_root.exists():
                from host_tools.bench import registry as br
                from host_tools.bench.observer import Observer
                from host_tools.kit.sim import SimKit

                b = bench()
                _bench_ca_check(b, spec)

                def revoke(cert, thing=thing, b=b) -> None:
                    revoke_in_fleet(store, ca, thing, "superseded", cert=cert)
                    br.publish_crl(b, restart=False)
                    b.apply_config()

                with Observer(b) as obs:
                    r = rotate_identity(
                        ca,
                        thing,
                        old,
                        SimKitDelivery(SimKit(kit_root), obs),
                        revoke,
                        timeout=timeout,
                        record=record,
                    )
                line = r.line()
                if not r.confirmed:
                    unconfirmed.append(thing)
                    line = line.rsplit(": ", 1)[0] + (
                        f": written to kit {kit_root} and reset, but it did not connect with "
                        f"it within {timeout:g} s; the old certificate stays valid"
                    )
            else:
                new = ca.issue(thing, Usage.CLIENT, days=ca.policy.leaf_days)
                record(new)
                r = RotationResult(
                    thing,
                    store.devices[thing].previous[-1],
                    new.fingerprint,
                    new.cert.not_valid_after_utc.isoformat(),
                    False,
                    False,
                    0.0,
                )
                undelivered.append(thing)
                line = (
                    r.line().rsplit(": ", 1)[0]
                    + ": issued, not delivered yet"
                    + (f" (no kit at {kit_root})" if target == "bench" else "")
                )
            lines.append(line)
            docs.append({**r.__dict__, "delivered": thing not in undelivered})
        store.write_manifests()
    return FleetRotation(lines, docs, undelivered, unconfirmed)


# -- AWS IoT: CreateCertificateFromCsr --------------------------------------------------
class CsrRejected(Exception):
    """The CSR was refused (locally or by AWS): nothing was created, nothing changed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass
class AwsRotation:
    """What :func:`rotate_on_aws` did."""

    thing: str
    old_ids: list[str]
    new_id: str = ""
    new_arn: str = ""
    delivered: bool = False
    confirmed: bool = False
    old_status: str = "ACTIVE"
    rejected: str = ""
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)

    def line(self) -> str:
        old = ", ".join(i[:12] + "..." for i in self.old_ids) or "none"
        if self.confirmed:
            return (
                f"{self.thing}: rotated on AWS IoT in {self.seconds:.1f} s: certificate "
                f"{self.new_id[:12]}... from the kit's CSR in use, old {old} {self.old_status}"
            )
        return (
            f"{self.thing}: not rotated ({self.steps[-1] if self.steps else 'no answer'}); "
            f"the old certificate {old} stays ACTIVE"
        )


def check_csr(csr_pem: str, thing: str) -> Any:
    """The CSR as ``cryptography`` reads it, if it parses, its signature verifies and its
    subject is ``CN=<thing>``.

    Raises:
        CsrRejected: with AWS's error code for it (InvalidRequestException).
    """
    from cryptography import x509

    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise CsrRejected("InvalidRequestException", f"the CSR does not parse: {exc}") from exc
    cn = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not csr.is_signature_valid or len(cn) != 1 or cn[0].value != thing:
        raise CsrRejected("InvalidRequestException", f"the CSR must verify and name {thing}")
    return csr


def thing_certificates(iot: Any, thing: str) -> list[tuple[str, str]]:
    """(certificate id, ARN) of the certificates attached to ``thing``."""
    arns = iot.list_thing_principals(thingName=thing).get("principals", [])
    return [(a.rsplit("/", 1)[-1], a) for a in arns if ":cert/" in a]


def rotate_on_aws(
    iot: Any,
    thing: str,
    csr_pem: str,
    policy_name: str,
    deliver: Callable[[str, str], bool],
    confirm: Callable[[str], bool],
    old_status: str = "REVOKED",
    progress: Callable[[str], None] | None = None,
) -> AwsRotation:
    """Rotate ``thing``'s certificate on AWS IoT from a CSR made on the device.

    ``CreateCertificateFromCsr`` (active), ``AttachPolicy`` (``policy_name``),
    ``AttachThingPrincipal``; then ``deliver(certificate_pem, certificate_id)`` hands it
    to the device (True: it took it) and ``confirm(certificate_id)`` waits for the device
    to prove it (True: it reconnected with it). Only then are the thing's previous
    certificates set to ``old_status`` (INACTIVE or REVOKED, ``UpdateCertificate``) and
    detached from it. A refused CSR creates nothing; a certificate not delivered or not
    confirmed leaves the old ones ACTIVE (the new one stays attached: the device may
    still come back on it, and the next rotation counts it as old).

    Raises:
        UserError: the thing has no certificate, or ``old_status`` is not INACTIVE/REVOKED.
    """
    import time

    from botocore.exceptions import ClientError

    if old_status not in ("INACTIVE", "REVOKED"):
        raise UserError(f"old certificates become INACTIVE or REVOKED, not {old_status}")
    say = progress or (lambda s: None)
    t0 = time.monotonic()
    old = thing_certificates(iot, thing)
    if not old:
        raise UserError(f"{thing} has no certificate attached on AWS IoT")
    rep = AwsRotation(thing, [i for i, _ in old])
    try:
        check_csr(csr_pem, thing)
        made = iot.create_certificate_from_csr(certificateSigningRequest=csr_pem, setAsActive=True)
    except CsrRejected as exc:
        rep.rejected = exc.code
        rep.steps.append(f"CSR refused: {exc.message}")
    except ClientError as exc:
        err = exc.response.get("Error", {})
        rep.rejected = err.get("Code", "ClientError")
        rep.steps.append(f"CreateCertificateFromCsr refused: {err.get('Message', exc)}")
    if rep.rejected:
        rep.seconds = time.monotonic() - t0
        return rep
    rep.new_id, rep.new_arn = made["certificateId"], made["certificateArn"]
    say(f"{thing}: certificate {rep.new_id[:12]}... created from the kit's CSR")
    iot.attach_policy(policyName=policy_name, target=rep.new_arn)
    iot.attach_thing_principal(thingName=thing, principal=rep.new_arn)
    rep.delivered = deliver(made["certificatePem"], rep.new_id)
    if not rep.delivered:
        rep.steps.append("the kit did not take the certificate")
    else:
        say(f"{thing}: certificate delivered; waiting for the kit to reconnect with it")
        rep.confirmed = confirm(rep.new_id)
        rep.steps.append(
            "the kit reconnected with the new certificate"
            if rep.confirmed
            else "the kit did not come back on the new certificate"
        )
    if rep.confirmed:
        for cid, arn in old:
            iot.update_certificate(certificateId=cid, newStatus=old_status)
            iot.detach_thing_principal(thingName=thing, principal=arn)
        rep.old_status = old_status
        say(f"{thing}: old certificate(s) {old_status}")
    rep.seconds = time.monotonic() - t0
    return rep


class DeviceLink:
    """The operator's MQTT connection to one kit's topics (AWS IoT Core, or any broker
    with its shadow topics): asks the kit for a CSR through its shadow, reads the CSR on
    ``<prefix>/<thing>/identity/csr``, answers on ``.../accepted`` or ``.../rejected``
    (the bench's reply shape), and sees the kit come back on the new certificate (its
    shadow's ``reported.boot.identity.cert``, then a ping answered).

    The operator identity needs, for this thing: receive ``identity/csr``, ``pong``, the
    classic shadow's get/update replies; publish ``identity/csr/accepted|rejected``,
    ``ping``, shadow ``get`` and ``update``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        thing: str,
        context: ssl.SSLContext | None,
        prefix: str = "thingkit",
        client_id: str | None = None,
    ) -> None:
        import queue
        import uuid

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.thing, self.prefix = thing, prefix
        self.csr_topic = f"{prefix}/{thing}/identity/csr"
        self.shadow = f"$aws/things/{thing}/shadow"
        self.inbox: queue.Queue = queue.Queue()
        self.rid = ""
        self._c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"thingkit-rotate-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        if context is not None:
            self._c.tls_set_context(context)
        self._c.on_message = lambda c, u, m: self.inbox.put((m.topic, bytes(m.payload)))
        self._host, self._port = host, port

    def __enter__(self) -> Self:
        import threading

        ready = threading.Event()
        subs = [
            (self.csr_topic, 1),
            (f"{self.prefix}/{self.thing}/pong", 1),
            (f"{self.shadow}/get/accepted", 1),
            (f"{self.shadow}/get/rejected", 1),
        ]
        self._c.on_subscribe = lambda *a: ready.set()
        try:
            self._c.connect(self._host, self._port, keepalive=30)
        except OSError as exc:
            raise UserError(f"cannot reach {self._host}:{self._port}", str(exc)) from exc
        self._c.loop_start()
        self._c.subscribe(subs)
        if not ready.wait(15):
            self.__exit__()
            raise UserError(f"the broker at {self._host}:{self._port} did not take the "
                            "operator's subscriptions")  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        self._c.disconnect()
        self._c.loop_stop()

    def _wait(self, match: Callable[[str, dict], bool], timeout: float) -> dict | None:
        import json
        import queue
        import time

        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                topic, payload = self.inbox.get(timeout=left)
            except queue.Empty:
                return None
            try:
                doc = json.loads(payload)
            except ValueError:
                continue
            if isinstance(doc, dict) and match(topic, doc):
                return doc
        return None

    def _publish(self, topic: str, doc: object) -> None:
        import json

        self._c.publish(topic, json.dumps(doc), qos=1).wait_for_publish(10)

    def ask_csr(self, timeout: float) -> str | None:
        """Ask the kit for a new key and CSR (``desired.identity.rotate``); its CSR PEM,
        or None if none came within ``timeout``."""
        import uuid

        self.rid = uuid.uuid4().hex[:12]
        self._publish(f"{self.shadow}/update",
                      {"state": {"desired": {"identity": {"rotate": self.rid}}}})  # fmt: skip
        doc = self._wait(lambda t, d: t == self.csr_topic and d.get("rid") == self.rid, timeout)
        self.current_pem = (doc or {}).get("currentCertificatePem")
        return (doc or {}).get("certificateSigningRequest")

    def deliver(self, pem: str, certificate_id: str) -> bool:
        """Answer the kit's CSR with its certificate (``.../accepted``)."""
        import hashlib

        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
        self.new_fp = hashlib.sha256(der).hexdigest()
        self._publish(self.csr_topic + "/accepted",
                      {"rid": self.rid, "certificateId": certificate_id, "certificatePem": pem})  # fmt: skip
        return True

    def reject(self, code: str, message: str) -> None:
        """Answer the kit's CSR with AWS's error shape (``.../rejected``)."""
        self._publish(self.csr_topic + "/rejected",
                      {"statusCode": 400, "errorCode": code, "errorMessage": message,
                       "rid": self.rid})  # fmt: skip

    def confirmed(self, timeout: float) -> bool:
        """Whether the kit comes back on the delivered certificate within ``timeout``: its
        shadow reports it in use (``boot.identity.cert``, the SHA-256's first 16 hex
        digits), then it answers a ping. False as soon as it reports the rotation failed."""
        import time
        import uuid

        deadline = time.monotonic() + timeout
        seen = False
        while not seen and time.monotonic() < deadline:
            self._publish(f"{self.shadow}/get", {})
            doc = self._wait(lambda t, d: t == f"{self.shadow}/get/accepted", 3) or {}
            rep = doc.get("state", {}).get("reported", {})
            err = rep.get("identity_rotation", {})
            if err.get("rid") == self.rid and err.get("error"):
                self.why = f"the kit refused: {err['error']}"
                return False
            seen = rep.get("boot", {}).get("identity", {}).get("cert") == self.new_fp[:16]
            if not seen:
                time.sleep(0.5)
        while seen and time.monotonic() < deadline:
            pid = uuid.uuid4().hex[:8]
            self._publish(f"{self.prefix}/{self.thing}/ping", {"id": pid})
            pong = f"{self.prefix}/{self.thing}/pong"
            if self._wait(lambda t, d, p=pong, i=pid: t == p and d.get("id") == i, 3):
                return True
        self.why = "the kit did not come back on the new certificate"
        return False

    def clear(self) -> None:
        """Remove the request from the shadow."""
        self._publish(f"{self.shadow}/update", {"state": {"desired": {"identity": None}}})


def rotate_aws_over_the_air(
    iot: Any,
    link: DeviceLink,
    thing: str,
    policy_name: str,
    timeout: float = 60.0,
    old_status: str = "REVOKED",
    progress: Callable[[str], None] | None = None,
) -> AwsRotation:
    """``thingkit rotate --over-the-air --target aws THING``: the kit's CSR read on its
    topic through ``link``, :func:`rotate_on_aws`, the certificate (or AWS's refusal)
    answered on the same topic, the old certificate revoked once the kit is back on the
    new one."""
    say = progress or (lambda s: None)
    csr = link.ask_csr(timeout)
    try:
        if csr is None:
            rep = AwsRotation(thing, [i for i, _ in thing_certificates(iot, thing)])
            rep.steps.append(f"no CSR from the kit within {timeout:g} s")
            return rep
        say(f"{thing}: CSR received from the kit (rotation {link.rid})")
        rep = rotate_on_aws(iot, thing, csr, policy_name, link.deliver,
                            lambda cid: link.confirmed(timeout), old_status, say)  # fmt: skip
        if rep.rejected:
            link.reject(rep.rejected, rep.steps[-1])
        elif rep.delivered and not rep.confirmed and getattr(link, "why", ""):
            rep.steps[-1] = link.why
        return rep
    finally:
        link.clear()
