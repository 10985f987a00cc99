"""Certificate rotation of a provisioned fleet with host-made identities (the library
behind ``thingkit rotate THING`` without ``--over-the-air``).

For each thing: a new identity is issued from the fleet CA and recorded in the fleet
store (ledger, manifests, rebuilt artifacts). On the bench with a virtual kit present it
is delivered to the kit (files written, kit reset), confirmed by the kit reconnecting,
and only then is the old certificate revoked (provisioning.lifecycle.rotate_identity);
otherwise it waits for delivery (an image to flash) and ``rotate --confirm``. Rotation
with keys made on the kit is :mod:`host_tools.bench.cert_rotation`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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
