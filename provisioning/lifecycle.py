"""Certificate lifecycle: revoke, and rotate (issue, deliver, confirm, revoke the old one).

Rotation never leaves a device without a working certificate:

1. a new key and certificate are issued before the old one expires (the CA's policy says
   when: ``renew_before_days``) and recorded (ledger ``rotated``: the new one is current,
   the old one stays valid);
2. they are delivered to the device: on the bench by writing them into the virtual kit's
   flash and resetting it (:class:`SimKitDelivery`); on real devices by flashing the
   rebuilt image, and through OTA jobs once those exist;
3. the device confirms: it comes online with the new certificate (the only one it holds);
4. only then is the old certificate revoked (reason ``superseded``).

Example (bench)::

    result = rotate_identity(ca, "kit-1", old_cert, SimKitDelivery(kit, observer),
                             revoke=lambda c: revoke_on_bench(bench, c, "kit-1", "superseded"))
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioning.bundle import CERT_FILE, KEY_FILE, atomic_write
from provisioning.ca import CertificateAuthority, KeyPair, Usage, new_key
from provisioning.errors import ProvisioningError
from provisioning.revocation import RevocationList, Revoked, fingerprint
from provisioning.store import FleetStore


class LifecycleError(ProvisioningError):
    """A revocation or rotation cannot be done (unknown thing, not confirmed, ...)."""


class Delivery(Protocol):
    """How a new identity reaches a device, and how the device says it uses it."""

    def deliver(self, thing: str, identity: KeyPair) -> None: ...

    def confirm(self, thing: str, timeout: float) -> bool: ...


@dataclass
class RotationResult:
    thing: str
    old_fingerprint: str
    new_fingerprint: str
    not_after: str
    confirmed: bool
    old_revoked: bool
    seconds: float

    def line(self) -> str:
        state = (
            "confirmed, old certificate revoked"
            if self.old_revoked
            else "delivered, waiting for confirmation"
            if not self.confirmed
            else "confirmed"
        )
        return (
            f"{self.thing}: {self.old_fingerprint[:12]}... -> {self.new_fingerprint[:12]}... "
            f"(until {self.not_after[:10]}): {state}"
        )


def due(not_after: dt.datetime, ca: CertificateAuthority, now: dt.datetime | None = None) -> bool:
    """Whether a certificate expiring at ``not_after`` is due for rotation."""
    now = now or dt.datetime.now(dt.UTC)
    return not_after - now <= dt.timedelta(days=ca.policy.renew_before_days)


def rotate_identity(
    ca: CertificateAuthority,
    thing: str,
    old_cert: x509.Certificate,
    delivery: Delivery,
    revoke: Callable[[x509.Certificate], object],
    timeout: float = 60.0,
    record: Callable[[KeyPair], None] | None = None,
) -> RotationResult:
    """Issue, deliver, confirm, then revoke the old certificate (see the module docstring).

    Args:
        record: called with the new identity before delivery (e.g. to write the ledger).

    Returns:
        The result; if the device did not confirm within ``timeout`` the old certificate
        is left valid (``old_revoked`` False) and the new one stays current.
    """
    t0 = time.monotonic()
    if old_cert.subject.rfc4514_string() != f"CN={thing}":
        raise LifecycleError(f"the current certificate is not {thing}'s")
    new = ca.issue(thing, Usage.CLIENT, days=ca.policy.leaf_days, key=new_key())
    if record:
        record(new)
    delivery.deliver(thing, new)
    ok = delivery.confirm(thing, timeout)
    if ok:
        revoke(old_cert)
    return RotationResult(
        thing,
        fingerprint(old_cert),
        new.fingerprint,
        new.cert.not_valid_after_utc.isoformat(),
        ok,
        ok,
        time.monotonic() - t0,
    )


class KitDelivery:
    """Delivery to a kit on the bench: the new key and certificate written into its
    filesystem, a reset, and confirmation when its shadow says it is connected again.

    Works with a HIL device (``write_file``/``reset``/``power_on``) and with a
    :class:`host_tools.kit.sim.SimKit` (its flash directory).
    """

    def __init__(self, kit, observer) -> None:
        self.kit, self.observer = kit, observer
        self._since = 0.0

    def deliver(self, thing: str, identity: KeyPair) -> None:
        # Key first, certificate last: each write is atomic, and the firmware reads both
        # only at boot, which comes after both.
        k = self.kit
        for rel, data in ((KEY_FILE, identity.key_der), (CERT_FILE, identity.cert_der)):
            if hasattr(k, "write_file"):
                k.write_file(rel, data)
            else:
                atomic_write(k.flash / rel, data, private=rel == KEY_FILE)
        self._since = time.time()
        if k.is_running():
            k.reset()
        else:
            k.power_on()

    def confirm(self, thing: str, timeout: float) -> bool:
        topic = f"$aws/things/{thing}/shadow/update/accepted"

        def online(m) -> bool:
            d = m.json()
            return (
                m.topic == topic
                and isinstance(d, dict)
                and d.get("state", {}).get("reported", {}).get("connected") is True
            )

        return self.observer.wait(online, timeout, since=self._since) is not None


SimKitDelivery = KitDelivery


# -- fleets (ledger) ---------------------------------------------------------------------
def _entry(store: FleetStore, thing: str):
    e = store.devices.get(thing)
    if e is None:
        raise LifecycleError(f"{thing} is not in the fleet at {store.root}")
    return e


def _ledger_cert(b64: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(base64.b64decode(b64))


def revoke_in_fleet(
    store: FleetStore,
    ca: CertificateAuthority,
    thing: str,
    reason: str = "unspecified",
    cert: x509.Certificate | None = None,
) -> tuple[Revoked, bool]:
    """Revoke ``thing``'s current certificate (or ``cert``) in the CA and the ledger.

    Returns:
        The CA's revocation entry and whether it is new.
    """
    e = _entry(store, thing)
    cert = cert or _ledger_cert(e.cert)
    if ca.issuer_of(cert) is None:
        raise LifecycleError(f"{thing}'s certificate was not issued by the CA in {ca.directory}")
    entry, new = RevocationList(ca.directory).revoke(cert, thing, reason)
    if entry.fingerprint not in store.revoked:
        store.append(
            [
                {
                    "event": "revoked",
                    "thing_name": thing,
                    "fingerprint": entry.fingerprint,
                    "reason": reason,
                    "at": entry.revoked_at,
                }
            ]
        )
    return entry, new


def record_rotation(store: FleetStore, thing: str, new: KeyPair) -> None:
    """Make ``new`` the current identity of ``thing`` in the ledger (old one kept valid)."""
    _entry(store, thing)
    spki = new.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ev = {
        "event": "rotated",
        "thing_name": thing,
        "cert_serial": f"{new.cert.serial_number:x}",
        "fingerprint": new.fingerprint,
        "spki": hashlib.sha256(spki).hexdigest(),
        "not_after": new.cert.not_valid_after_utc.isoformat(),
        "issued_at": new.cert.not_valid_before_utc.isoformat(),
        "key": base64.b64encode(new.key_der).decode(),
        "cert": base64.b64encode(new.cert_der).decode(),
    }
    dup = store.duplicate_of(thing, ev["fingerprint"], ev["spki"], ev["cert_serial"])
    if dup:
        raise LifecycleError(f"{thing}: new identity refused: {dup}")
    store.append([ev])


def pending_old(store: FleetStore, thing: str) -> list[str]:
    """Fingerprints of ``thing``'s superseded certificates not revoked yet."""
    e = _entry(store, thing)
    return [fp for fp in e.previous if fp not in store.revoked]


def find_cert(store: FleetStore, thing: str, fp: str) -> x509.Certificate:
    """A certificate of ``thing`` (current or superseded) from the ledger, by fingerprint."""
    import json

    for line in store.ledger_path.read_text().splitlines():
        if fp in line:
            ev = json.loads(line)
            if ev.get("thing_name") == thing and ev.get("fingerprint") == fp and ev.get("cert"):
                return _ledger_cert(ev["cert"])
    raise LifecycleError(f"no certificate {fp[:12]}... of {thing} in {store.ledger_path}")


def rebuild_artifacts(store: FleetStore, thing: str, images: bool, trees: bool) -> list[Path]:
    """Rewrite ``thing``'s image and/or tree from the ledger (after a rotation)."""
    from provisioning.fleet import EXTRA_DIR, device_files, write_tree
    from provisioning.image import build_image

    e = _entry(store, thing)
    spec = store.read_spec() or {}
    files = device_files(e, (store.root / "server-ca.der").read_bytes())
    out = []
    if trees:
        write_tree(store.device_dir(thing), files)
        out.append(store.device_dir(thing))
    if images:
        base = store.root / EXTRA_DIR
        extra = {
            p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()
        }
        extra.update(files)
        store.images_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(store.image_path(thing), build_image(extra, int(spec["partition_size"])))
        out.append(store.image_path(thing))
    return out
