"""Certificate rotation over the air on the bench: the service and the operator's side.

The kit makes the new key and CSR itself (firmware/tk/rotate.py); the private key never
leaves it. The steps, and who does each:

1. operator (:func:`rotate_over_the_air`, ``thingkit rotate THING``): records the
   request in ``<bench>/rotations.json`` and writes ``desired.identity.rotate = <id>``
   into the thing's shadow;
2. kit: publishes ``{"rid", "certificateSigningRequest", "currentCertificatePem"}`` on
   ``<prefix>/<thing>/identity/csr``, a topic of its own least-privilege policy (on AWS,
   the operator's connection plays this service's part with ``CreateCertificateFromCsr``:
   :func:`host_tools.identity.rotation.rotate_aws_over_the_air`);
3. service (:func:`attach`, in the services process): checks that a rotation was asked
   with that id, that the CSR verifies and names the thing, and that the current
   certificate is the one registered; issues the certificate from the bench's fleet CA
   and answers on ``.../accepted`` (or ``.../rejected`` with AWS's error shape);
4. kit: stores the certificate, commits, reboots onto it; its shadow then reports
   ``boot.identity`` with the new generation and the certificate's SHA-256;
5. operator: sees that report, registers the new fingerprint, revokes the old
   certificate (CRL; the broker restarts and the kit must reconnect: only the new
   certificate can then get in, which proves it), and clears the request. A kit that did
   not switch within the time-out keeps its old certificate (never revoked); the new
   one is kept as "unconfirmed" (the kit may still come back on it; the next confirmed
   rotation revokes it). Every step is a line of the bench's provisioning
   events file.

The operator's side needs only the bench and MQTT: the kit may be a virtual kit or a
board (tests/host/test_rotation_serial.py rotates one on the fake board of the HIL
serial target).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from host_tools.bench.layout import BenchLayout
from host_tools.errors import UserError
from provisioning.claim import _atomic_json, _read_json, issue_from_csr, record_event

if TYPE_CHECKING:
    from host_tools.bench.bench import Bench

_log = logging.getLogger(__name__)


def rotations_path(layout: BenchLayout) -> Path:
    return layout.root / "rotations.json"


def _events(layout: BenchLayout) -> Path:
    return layout.fleet_provisioning / "events.jsonl"


def _fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


# -- service -------------------------------------------------------------------------------
def handle(
    layout: BenchLayout, ca_dir: Callable[[], Any], thing: str, payload: bytes
) -> tuple[bool, dict]:
    """One rotation request of ``thing`` (from its own topic): (accepted, reply)."""
    from host_tools.bench.bench import Bench

    lock = _LOCK
    try:
        doc = json.loads(payload)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return False, _err(400, "InvalidPayload", "the payload is not a JSON object", None)
    rid = doc.get("rid")
    with lock:
        rots = _read_json(rotations_path(layout), {})
        want = rots.get(thing)
        # "issued" too: a kit cut off before it stored the certificate asks again.
        if not want or want.get("rid") != rid or want.get("state") not in ("requested", "issued"):
            return False, _err(403, "NoRotationRequested", f"no rotation {rid!r} asked", rid)
        try:
            csr = x509.load_pem_x509_csr(str(doc.get("certificateSigningRequest")).encode())
            cur = x509.load_pem_x509_certificate(str(doc.get("currentCertificatePem")).encode())
        except ValueError as exc:
            return False, _err(400, "InvalidCSR", f"does not parse: {exc}", rid)
        cn = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        if not csr.is_signature_valid or len(cn) != 1 or cn[0].value != thing:
            return False, _err(400, "InvalidCSR", f"the CSR must verify and name {thing}", rid)
        registered = Bench(layout.root).things().get(thing, {}).get("fingerprint")
        # A certificate of an unconfirmed earlier rotation the kit came back on counts.
        later = {_fp(x509.load_pem_x509_certificate(p.encode()))
                 for p in want.get("unconfirmed", [])}  # fmt: skip
        if _fp(cur) != registered and _fp(cur) not in later:
            return False, _err(403, "NotCurrent", "currentCertificatePem is not the "
                               "registered certificate", rid)  # fmt: skip
        ca = ca_dir()
        if want.get("inject") == "untrusted":  # test control: a CA the broker does not trust
            from provisioning.ca import CertificateAuthority

            ca = CertificateAuthority.open_or_create(layout.root / "untrusted-ca", "untrusted")
        cert = issue_from_csr(ca, csr)
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        want.update(
            state="issued",
            new_fp=_fp(cert),
            old_cert=cur.public_bytes(serialization.Encoding.PEM).decode(),
            issued=time.time(),
        )
        want.setdefault("issued_certs", []).append(pem)
        _atomic_json(rotations_path(layout), rots)
    record_event(_events(layout), op="rotate-issue", thing=thing, rid=rid, cert=_fp(cert),
                 old=registered, result="accepted")  # fmt: skip
    return True, {"rid": rid, "certificateId": _fp(cert), "certificatePem": pem}


_LOCK = threading.Lock()


def _err(status: int, code: str, msg: str, rid: object) -> dict:
    return {"statusCode": status, "errorCode": code, "errorMessage": msg, "rid": rid}


def attach(client: mqtt.Client, layout: BenchLayout, prefix: str, log: logging.Logger) -> None:
    """Serve ``<prefix>/+/identity/csr`` on the services process's client."""
    from host_tools.bench.bench import Bench

    topic = f"{prefix}/+/identity/csr"
    previous = client.on_connect

    def on_connect(cl: mqtt.Client, userdata: Any, *args: Any) -> None:
        if previous is not None:
            previous(cl, userdata, *args)
        cl.subscribe(topic, 1)

    def on_request(cl: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        thing = msg.topic.split("/")[-3]
        try:
            ok, reply = handle(layout, lambda: Bench(layout.root).fleet_ca(), thing, msg.payload)
        except Exception:
            log.exception("rotation: failed to serve %s", msg.topic)
            return
        suffix = "/accepted" if ok else "/rejected"
        cl.publish(msg.topic + suffix, json.dumps(reply), qos=1)
        if not ok:
            record_event(_events(layout), op="rotate-issue", thing=thing, result="rejected",
                         code=reply["errorCode"], reason=reply["errorMessage"])  # fmt: skip
            log.info("rotation %s: %s", thing, reply["errorMessage"])

    client.on_connect = on_connect
    client.message_callback_add(topic, on_request)
    if client.is_connected():
        client.subscribe(topic, 1)


# -- operator ------------------------------------------------------------------------------
@dataclass
class RotationReport:
    """What :func:`rotate_over_the_air` did."""

    thing: str
    rid: str
    old: str
    new: str = ""
    confirmed: bool = False
    old_revoked: bool = False
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)

    def line(self) -> str:
        if self.confirmed:
            return (f"{self.thing}: rotated over the air in {self.seconds:.1f} s: key and CSR "
                    f"made on the kit, new certificate {self.new[:12]}... in use, old "
                    f"{self.old[:12]}... revoked")  # fmt: skip
        return (
            f"{self.thing}: not rotated ({self.steps[-1] if self.steps else 'no answer'}); "
            f"the old certificate {self.old[:12]}... stays valid"
        )


def rotate_over_the_air(
    bench: Bench,
    thing: str,
    timeout: float = 60.0,
    progress: Callable[[str], None] | None = None,
    inject: str | None = None,
) -> RotationReport:
    """Rotate a running kit's certificate with a key made on the kit (see the module
    docstring). Never leaves the kit without a working certificate: the old one is
    revoked only after the kit has reported the new one in use. ``inject="untrusted"``
    (bench test control) issues the new certificate from a CA the broker does not trust.

    Raises:
        UserError: the bench is not running or the thing is not registered.
    """
    from host_tools.bench.observer import Observer
    from host_tools.bench.registry import register_things

    bench.require_up()
    things = bench.things()
    if thing not in things:
        raise UserError(f"{thing} is not registered on the bench {bench.layout.root}")
    say = progress or (lambda s: None)
    t0 = time.monotonic()
    rid = uuid.uuid4().hex[:12]
    rep = RotationReport(thing, rid, things[thing]["fingerprint"])
    lay = bench.layout
    with _LOCK:
        rots = _read_json(rotations_path(lay), {})
        earlier = rots.get(thing, {}).get("unconfirmed", [])
        rots[thing] = {"rid": rid, "state": "requested", "requested": time.time()}
        if earlier:
            rots[thing]["unconfirmed"] = earlier
        if inject:
            rots[thing]["inject"] = inject
        _atomic_json(rotations_path(lay), rots)
    record_event(_events(lay), op="rotate-request", thing=thing, rid=rid, old=rep.old)
    with Observer(bench) as obs:
        obs.shadow_request(thing, "update", {"state": {"desired": {"identity": {"rotate": rid}}}})
        say(f"{thing}: rotation {rid} asked through the shadow")
        deadline = time.monotonic() + timeout
        st: dict = {}
        while time.monotonic() < deadline:
            st = _read_json(rotations_path(lay), {}).get(thing, {})
            doc = obs.shadow_get(thing) or {}
            rep_ = doc.get("state", {}).get("reported", {})
            err = rep_.get("identity_rotation", {})
            if err.get("rid") == rid and err.get("error"):
                rep.steps.append(f"the kit refused: {err['error']}")
                break
            ident = rep_.get("boot", {}).get("identity", {})
            if st.get("new_fp") and ident.get("cert") == st["new_fp"][:16]:
                rep.new = st["new_fp"]
                rep.steps.append("the kit reports the new certificate in use")
                break
            time.sleep(0.5)
        obs.shadow_request(thing, "update", {"state": {"desired": {"identity": None}}})
    st = _read_json(rotations_path(lay), {}).get(thing, {})
    issued = [x509.load_pem_x509_certificate(p.encode()) for p in st.get("issued_certs", [])]
    if not rep.new:
        if not rep.steps:
            rep.steps.append(f"the kit did not come back on a new certificate within {timeout:g} s")
        # Nothing is revoked: the old certificate stays valid, and a new one issued but
        # not proven is useless without its key, which exists only on the kit (it may
        # still come back on it: the next rotation accepts it as current).
        _finish(lay, thing, "failed", keep=True)
        record_event(_events(lay), op="rotate-result", thing=thing, rid=rid, result="failed",
                     reason=rep.steps[-1])  # fmt: skip
        rep.seconds = time.monotonic() - t0
        return rep
    say(f"{thing}: new certificate {rep.new[:12]}... in use; revoking the old one")
    register_things(bench, {thing: rep.new})
    old = x509.load_pem_x509_certificate(st["old_cert"].encode())
    earlier = [x509.load_pem_x509_certificate(p.encode()) for p in st.get("unconfirmed", [])]
    _revoke(bench, thing, [old] + [c for c in issued + earlier if _fp(c) != rep.new])
    rep.old_revoked = True
    # The broker restarted with the CRL: the kit can only come back with the new one.
    back = _answers(bench, thing, timeout)
    rep.confirmed = back
    rep.steps.append("back online after the old certificate was revoked" if back else
                     "not back online after the revocation")  # fmt: skip
    _finish(lay, thing, "done" if rep.confirmed else "revoked-unconfirmed")
    record_event(_events(lay), op="rotate-result", thing=thing, rid=rid,
                 result="confirmed" if rep.confirmed else "unconfirmed", old=rep.old,
                 cert=rep.new)  # fmt: skip
    rep.seconds = time.monotonic() - t0
    return rep


def _revoke(bench: Bench, thing: str, certs: list[x509.Certificate]) -> None:
    """Revoke the fleet CA's certificates among ``certs``; one CRL, one broker restart."""
    from host_tools.bench.registry import publish_crl
    from provisioning.revocation import RevocationList

    fleet = bench.fleet_ca()
    mine = [c for c in certs if fleet.issuer_of(c) is not None]
    if not mine:
        return
    rl = RevocationList(fleet.directory)
    for c in mine:
        rl.revoke(c, thing, "superseded")
    publish_crl(bench)
    record_event(_events(bench.layout), op="rotate-revoke", thing=thing,
                 certs=[_fp(c) for c in mine])  # fmt: skip


def _answers(bench: Bench, thing: str, timeout: float) -> bool:
    """Whether the kit answers App #1's ping within ``timeout`` (it is connected)."""
    from host_tools.bench.observer import Observer

    deadline = time.monotonic() + timeout
    pong = f"{bench.topic_prefix}/{thing}/pong"
    with Observer(bench) as obs:
        while time.monotonic() < deadline:
            pid = uuid.uuid4().hex[:8]
            since = obs.publish(f"{bench.topic_prefix}/{thing}/ping", {"id": pid})
            got = obs.wait(
                lambda m, pid=pid: m.topic == pong and (m.json() or {}).get("id") == pid,
                timeout=3,
                since=since,
            )
            if got is not None:
                return True
    return False


def _finish(layout: BenchLayout, thing: str, state: str, keep: bool = False) -> None:
    with _LOCK:
        rots = _read_json(rotations_path(layout), {})
        if thing in rots:
            rots[thing]["state"] = state
            rots[thing].pop("old_cert", None)
            if keep:  # unconfirmed: the kit may be using one of them
                rots[thing]["unconfirmed"] = rots[thing].pop("issued_certs", [])
            else:
                rots[thing].pop("issued_certs", None)
            _atomic_json(rotations_path(layout), rots)
