"""``thingkit provision --claim`` and ``thingkit revoke --claim BATCH``: claim batches.

Thin command bodies over :mod:`host_tools.bench.fleet_provisioning` (the library), called
from :mod:`host_tools.identity.cli` when ``--claim`` is given:

- ``provision --claim [--count N | --manifest F] [--batch NAME] [--sim-kits]``: make the
  batch's claim identity (kept in ``<fleet>/claim-batches/<batch>/``) and put its
  allow-list (serial -> thing name, from ``--name-template``) on the bench, whose
  provisioning service then answers the batch's kits; ``--sim-kits`` also makes one
  claim-only virtual kit per serial;
- ``revoke --claim BATCH``: disable the batch's claim (ACL emptied, certificate on the
  CRL); things it provisioned keep working.

Refusals and misuse (a serial not on the allow-list, a second kit with a provisioned
serial, bursts) are recorded by the bench in ``fleet-provisioning/events.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from host_tools.errors import UserError
from host_tools.paths import state_home


def batch_dir(fleet: Path, batch: str) -> Path:
    """Where a batch's claim identity and allow-list are kept."""
    return fleet / "claim-batches" / batch


def provision_claim(args: argparse.Namespace) -> int:
    """Make a claim batch on the bench (see the module docstring)."""
    from host_tools.bench import fleet_provisioning as fp
    from host_tools.identity.cli import _bench, _confirm, _out, _records
    from provisioning.bundle import atomic_write, check_thing_name

    if (args.target or "bench") != "bench" or args.endpoint or args.region:
        raise UserError(
            "provision --claim makes a bench batch",
            "on AWS the claim template is made by `thingkit register --claim-template NAME`",
        )
    try:
        check_thing_name(args.batch)
    except ValueError as exc:
        raise UserError(f"batch name: {exc}") from exc
    records, bad = _records(args)
    if bad:
        raise UserError(f"{len(bad.problems)} record(s) refused: " + "; ".join(bad.problems[:3]))
    allow = {r.serial: r.thing_name for r in records}
    fleet = args.out or state_home() / "fleet"
    out = batch_dir(fleet, args.batch)
    bench = _bench(args)
    kits = args.kits or state_home() / "kits"
    plan = {
        "batch": args.batch,
        "serials": len(allow),
        "claim_dir": str(out),
        "bench": str(bench.layout.root),
        "sim_kits": str(kits) if args.sim_kits else None,
    }
    if args.dry_run:
        _out(
            args,
            {"plan": plan},
            f"would make claim batch {args.batch} ({len(allow)} serials) on the bench "
            f"{bench.layout.root}; claim identity in {out}",
        )
        return 0
    bench.require_up()
    _confirm(args, f"make claim batch {args.batch}", ask=False)
    t0 = time.monotonic()
    pair = fp.add_batch(bench, args.batch, allow, out)
    atomic_write(out / "allow.json", (json.dumps(allow, indent=1) + "\n").encode())
    made = []
    if args.sim_kits:
        from host_tools.kit.provision import create_claim_kit

        for i, (serial, thing) in enumerate(sorted(allow.items()), 1):
            print(f"kit {i}/{len(allow)}: {thing}", file=sys.stderr)
            create_claim_kit(bench, kits, thing, serial, args.batch, out)
            made.append(str(kits / thing))
    doc = {**plan, "claim_fingerprint": pair.fingerprint, "kits": made}
    text = (
        f"claim batch {args.batch}: {len(allow)} serials allowed, claim identity "
        f"CN=claim.{args.batch} in {out} (provisioning topics only)"
        + (f"; {len(made)} claim-only kits in {kits}" if made else "")
        + f" ({time.monotonic() - t0:.1f} s)"
    )
    _out(args, doc, text)
    return 0


def revoke_claim(args: argparse.Namespace) -> int:
    """Disable a claim batch on the bench."""
    from host_tools.bench import fleet_provisioning as fp
    from host_tools.identity.cli import _bench, _confirm, _out

    bench = _bench(args)
    if args.claim not in bench.claims():
        raise UserError(f"no claim batch {args.claim!r} on the bench {bench.layout.root}")
    if args.dry_run:
        _out(args, {"plan": {"disable": args.claim}}, f"would disable claim batch {args.claim}")
        return 0
    bench.require_up()
    _confirm(args, f"disable claim batch {args.claim}", ask=False)
    new = fp.disable_batch(bench, args.claim, args.reason)
    _out(
        args,
        {"disabled": args.claim, "new": new},
        f"claim batch {args.claim} disabled{'' if new else ' (already)'}: its identity "
        "reaches nothing, its certificate is on the CRL; provisioned things keep working",
    )
    return 0


def rotate_over_the_air(args: argparse.Namespace) -> int:
    """``thingkit rotate --over-the-air THING...``: rotate running kits on the bench with
    keys made on the kits (host_tools.bench.cert_rotation.rotate_over_the_air)."""
    from host_tools.bench.cert_rotation import rotate_over_the_air as rotate
    from host_tools.identity.cli import _bench, _confirm, _out

    if not args.things:
        raise UserError("name the things to rotate", "thingkit rotate --over-the-air THING")
    if args.target == "aws":
        return rotate_over_the_air_aws(args)
    bench = _bench(args)
    if args.dry_run:
        _out(
            args,
            {"plan": list(args.things)},
            "\n".join(f"would ask {t} for a new key and CSR" for t in args.things),
        )
        return 0
    bench.require_up()
    _confirm(args, f"rotate {len(args.things)} certificate(s) over the air", ask=False)
    quiet = getattr(args, "json", False)
    reps = [
        rotate(bench, t, args.timeout, None if quiet else lambda s: print(s, file=sys.stderr))
        for t in args.things
    ]
    _out(
        args,
        {"rotated": [r.__dict__ for r in reps]},
        "\n".join(r.line() for r in reps),
    )
    return 0 if all(r.confirmed for r in reps) else 1


def rotate_over_the_air_aws(args: argparse.Namespace) -> int:
    """``thingkit rotate --over-the-air --target aws THING...``: the kit's CSR read on its
    own topic by an operator MQTT connection to the AWS IoT endpoint, the certificate made
    by ``CreateCertificateFromCsr`` and sent back on the same topic, the old certificate
    revoked once the kit reports the new one and answers a ping
    (:func:`host_tools.identity.rotation.rotate_aws_over_the_air`). Run against moto and
    the bench's broker only (tests/host/test_rotation_aws.py)."""
    from host_tools.identity.cli import _aws, _confirm, _out
    from host_tools.identity.rotation import DeviceLink, rotate_aws_over_the_air
    from host_tools.view.remote import RemoteSpec, split_endpoint
    from provisioning.store import FleetStore

    fleet = args.fleet or state_home() / "fleet"
    spec = FleetStore(fleet).read_spec() or {}
    if args.dry_run:
        _out(
            args,
            {"plan": list(args.things)},
            "\n".join(
                f"would ask {t} for a CSR and call CreateCertificateFromCsr" for t in args.things
            ),
        )
        return 0
    if not (args.operator_cert and args.operator_key):
        raise UserError(
            "rotate --over-the-air --target aws needs --operator-cert FILE --operator-key FILE",
            "an identity whose policy allows the kit's identity/csr, ping/pong and shadow topics",
        )
    iot, opts = _aws(args, spec, False)
    endpoint = (
        args.endpoint
        or spec.get("endpoint")
        or iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    )
    host, port = split_endpoint(endpoint, 8883)
    _confirm(args, f"rotate {len(args.things)} certificate(s) on AWS IoT", ask=True)
    quiet = getattr(args, "json", False)
    say = None if quiet else (lambda s: print(s, file=sys.stderr))
    reps = []
    for thing in args.things:
        remote = RemoteSpec(host, port, args.operator_cert, args.operator_key,
                            args.endpoint_ca, [thing], opts.topic_prefix)  # fmt: skip
        remote.check()
        with DeviceLink(host, port, thing, remote.context(), opts.topic_prefix) as link:
            reps.append(rotate_aws_over_the_air(iot, link, thing, opts.policy_name,
                                                args.timeout, args.old_status, say))  # fmt: skip
    _out(args, {"rotated": [r.__dict__ for r in reps]}, "\n".join(r.line() for r in reps))
    return 0 if all(r.confirmed for r in reps) else 1
