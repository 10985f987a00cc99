"""``thingkit ca|provision|register|revoke|rotate|teardown``: the fleet provisioning toolkit.

Each command is a thin wrapper over a library function in ``provisioning/``. Irreversible
steps (issuing certificates, registering with a cloud, revoking) print their plan with
``--dry-run`` and ask before acting unless ``--yes``. The CA passphrase comes from
``$THINGKIT_CA_PASSPHRASE`` or a prompt. Wire into the main parser with
``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path

from host_tools.cli.table import BENCH_ROOT, FLEET_DIR, JSON, ArgGroup, Command, arg, build
from host_tools.errors import UserError
from host_tools.paths import REPO, state_home

PASSPHRASE_ENV = "THINGKIT_CA_PASSPHRASE"
AMAZON_ROOT_CA = REPO / "provisioning/data/AmazonRootCA1.pem"


# -- shared helpers ---------------------------------------------------------------------
def _out(args: argparse.Namespace, doc: dict, text: str) -> None:
    print(json.dumps(doc, indent=1) if getattr(args, "json", False) else text)


def _tty() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def _confirm(args: argparse.Namespace, question: str, ask: bool = True) -> None:
    """Ask before acting (``ask``: AWS calls and what cannot be undone); local,
    re-runnable steps on this host or the bench pass ``ask=False`` and just go ahead."""
    if args.yes or not ask:
        return
    if not _tty():
        raise UserError(
            f"refusing to {question} without confirmation",
            "no terminal to ask on: add --yes to go ahead, or --dry-run to see the plan",
        )
    if input(f"{question}? [y/N] ").strip().lower() not in ("y", "yes"):
        raise UserError("cancelled")


def _passphrase(args: argparse.Namespace, confirm: bool = False) -> bytes | None:
    if getattr(args, "no_passphrase", False):
        return None
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env.encode()
    if not _tty():
        raise UserError(
            "the CA passphrase is needed", f"set {PASSPHRASE_ENV}, or run in a terminal to type it"
        )
    pw = getpass.getpass(f"CA passphrase (or set {PASSPHRASE_ENV}): ").encode()
    if confirm and getpass.getpass("again: ").encode() != pw:
        raise UserError("the passphrases differ")
    if not pw:
        raise UserError("an empty passphrase is not allowed", "use --no-passphrase for a bench CA")
    return pw


def _load_ca(args: argparse.Namespace, directory: Path):
    from provisioning.ca import ISSUING_KEY, CAError, CertificateAuthority, is_encrypted

    try:
        key = directory / ISSUING_KEY
        pw = _passphrase(args) if key.exists() and is_encrypted(key) else None
        return CertificateAuthority.load(directory, pw), pw
    except CAError as exc:
        raise UserError(str(exc), where=f"thingkit ca show --dir {directory}") from exc


def _progress(args: argparse.Namespace):
    if getattr(args, "json", False) or not sys.stderr.isatty():
        return None
    t0 = time.monotonic()

    def bar(phase: str, done: int, total: int) -> None:
        frac = done / total if total else 1.0
        fill = int(frac * 30)
        rate = done / max(time.monotonic() - t0, 1e-6)
        sys.stderr.write(
            f"\r{phase:<10} [{'#' * fill}{'.' * (30 - fill)}] {done}/{total} {rate:.0f}/s "
        )
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return bar


def _bench(args: argparse.Namespace):
    from host_tools.bench.bench import Bench

    root = getattr(args, "bench_root", None) or getattr(args, "root", None)
    return Bench(root or state_home() / "bench")


def _store(args: argparse.Namespace):
    from provisioning.store import FleetStore

    root = args.fleet or state_home() / "fleet"
    store = FleetStore(root)
    spec = store.read_spec()
    if spec is None:
        raise UserError(f"no fleet in {root}", where="thingkit provision --out DIR")
    return store, spec


def _bench_ca_check(bench, spec: dict) -> None:
    if Path(spec["ca_dir"]).resolve() != bench.layout.fleet_ca.resolve():
        raise UserError(
            f"this fleet was issued by the CA in {spec['ca_dir']}, not the bench's fleet CA",
            "the bench trusts only its own fleet CA",
            "thingkit provision --target bench",
        )


# -- ca ---------------------------------------------------------------------------------
def cmd_ca_init(args: argparse.Namespace) -> int:
    from provisioning.ca import CAError, CertificateAuthority, ValidityPolicy

    try:
        policy = ValidityPolicy(
            args.root_days, args.issuing_days, args.leaf_days, args.renew_before_days, args.crl_days
        )
    except CAError as exc:
        raise UserError(str(exc)) from exc
    plan = {
        "dir": str(args.dir),
        "name": args.name,
        "policy": policy.__dict__,
        "encrypted": not args.no_passphrase,
    }
    if args.dry_run:
        _out(
            args,
            {"plan": plan},
            f"would create root and issuing CA '{args.name}' in {args.dir} "
            f"(keys {'encrypted' if not args.no_passphrase else 'NOT encrypted'}; {policy})",
        )
        return 0
    _confirm(args, f"create a CA in {args.dir}", ask=False)  # refuses an existing CA
    try:
        ca = CertificateAuthority.create(
            args.dir,
            args.name,
            _passphrase(args, confirm=True),
            organization=args.org,
            policy=policy,
        )
    except CAError as exc:
        raise UserError(str(exc)) from exc
    _out(
        args,
        _ca_doc(ca),
        f"CA created in {args.dir}: {ca.root_cert.subject.rfc4514_string()} "
        f"-> {ca.issuing.cert.subject.rfc4514_string()}",
    )
    return 0


def _ca_doc(ca) -> dict:
    from provisioning.ca import ISSUING_KEY, ROOT_KEY, is_encrypted
    from provisioning.revocation import RevocationList, fingerprint

    def c(cert) -> dict:
        return {
            "subject": cert.subject.rfc4514_string(),
            "fingerprint": fingerprint(cert),
            "not_after": cert.not_valid_after_utc.isoformat(),
        }

    d = ca.directory
    return {
        "dir": str(d),
        "root": c(ca.root_cert),
        "issuing": c(ca.issuing.cert),
        "retired": [c(r) for r in ca.retired],
        "policy": ca.policy.__dict__,
        "keys_encrypted": all(
            is_encrypted(d / k) for k in (ROOT_KEY, ISSUING_KEY) if (d / k).exists()
        ),
        "root_key_present": (d / ROOT_KEY).exists(),
        "revoked": len(RevocationList(d).entries),
    }


def cmd_ca_show(args: argparse.Namespace) -> int:
    from provisioning.ca import CAError, CertificateAuthority

    try:
        doc = _ca_doc(CertificateAuthority.load_public(args.dir))
    except CAError as exc:
        raise UserError(str(exc), where="thingkit ca init") from exc
    lines = [f"CA in {doc['dir']}"]
    for k in ("root", "issuing"):
        lines.append(
            f"  {k:<8} {doc[k]['subject']}  until {doc[k]['not_after'][:10]}  "
            f"sha256 {doc[k]['fingerprint'][:16]}..."
        )
    lines += [f"  retired  {r['subject']} until {r['not_after'][:10]}" for r in doc["retired"]]
    lines.append(
        f"  keys {'encrypted' if doc['keys_encrypted'] else 'NOT encrypted'}; root key "
        f"{'here (move it offline)' if doc['root_key_present'] else 'offline'}; "
        f"{doc['revoked']} revoked; policy {doc['policy']}"
    )
    _out(args, doc, "\n".join(lines))
    return 0


def cmd_ca_rotate_intermediate(args: argparse.Namespace) -> int:
    from provisioning.ca import CAError

    ca, pw = _load_ca(args, args.dir)
    if args.dry_run:
        _out(
            args,
            {"plan": {"retire": ca.issuing.cert.subject.rfc4514_string()}},
            f"would issue a new intermediate from the root in {args.dir} and retire "
            f"{ca.issuing.cert.subject.rfc4514_string()} (it stays trusted until it expires)",
        )
        return 0
    _confirm(args, "issue a new intermediate CA")
    try:
        new = ca.rotate_intermediate(pw)
    except CAError as exc:
        raise UserError(str(exc), "the root key is needed (bring it back online)") from exc
    _out(
        args,
        _ca_doc(new),
        f"new intermediate {new.issuing.cert.subject.rfc4514_string()}; "
        f"retired {ca.issuing.cert.subject.rfc4514_string()}; re-run `thingkit register` to "
        "register it (AWS) or `bench up` again (bench trust)",
    )
    return 0


# -- provision --------------------------------------------------------------------------
def _records(args: argparse.Namespace):
    from provisioning.manifest import (
        ManifestError,
        assign_names,
        generated_records,
        load_manifest,
    )

    try:
        if args.manifest:
            recs = load_manifest(args.manifest, default_model=args.model or "")
        else:
            recs = generated_records(
                args.count, args.model or args.board, args.serial_prefix, args.serial_start
            )
        return assign_names(recs, args.name_template)
    except ManifestError as exc:
        raise UserError(str(exc), where=str(args.manifest or "--count")) from exc


def _endpoint(args: argparse.Namespace) -> tuple[dict, bytes]:
    """The fleet's endpoint settings and server CA, by target."""
    if args.target == "bench":
        b = _bench(args)
        # Ports survive bench down/up (saved at the first start): a fleet made while the
        # bench is down still reaches it once it is up.
        return (
            {
                "endpoint": "localhost",
                "port": b.port,
                "ntp_servers": (f"127.0.0.1:{b.ntp_port}",),
                "region": "",
            },
            b.layout.server_ca_der.read_bytes(),
        )
    endpoint = args.endpoint
    if not endpoint:
        if not args.region:
            raise UserError("an AWS endpoint is needed", "give --endpoint or --region")
        try:
            import boto3

            endpoint = boto3.client("iot", region_name=args.region).describe_endpoint(
                endpointType="iot:Data-ATS"
            )["endpointAddress"]
        except Exception as exc:
            raise UserError(
                f"cannot look up the AWS IoT endpoint in {args.region}: {exc}",
                "check AWS credentials or give --endpoint",
            ) from exc
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    path = args.server_ca or AMAZON_ROOT_CA
    data = path.read_bytes()
    cert = (
        x509.load_pem_x509_certificate(data)
        if b"-----BEGIN" in data
        else x509.load_der_x509_certificate(data)
    )
    return (
        {
            "endpoint": endpoint,
            "port": args.port,
            "ntp_servers": tuple(args.ntp or ["pool.ntp.org"]),
            "region": args.region or "",
        },
        cert.public_bytes(serialization.Encoding.DER),
    )


def _provision_plan(args: argparse.Namespace) -> dict:
    """What ``provision`` would do, checked: the records, refusals, endpoint and CA.

    Raises:
        UserError: refused devices (without --skip-refused), or a CA the target refuses.
    """
    from host_tools.boards.registry import load_board
    from provisioning.fleet import preview_fleet

    out = args.out or state_home() / "fleet"
    if args.target is None:  # AWS when an AWS endpoint or region is named, else the bench
        args.target = "aws" if args.endpoint or args.region else "bench"
    board = load_board(args.board)
    records, bad = _records(args)
    refused = {s: "" for s in (bad.rejected if bad else set())}
    pv = preview_fleet(records, out)
    problems = (bad.problems if bad else []) + list(pv.refused.values())
    refused.update(pv.refused)
    if problems and not args.skip_refused:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise UserError(
            f"{len(refused)} device(s) refused, nothing written: {'; '.join(problems[:5])}{more}",
            "fix the manifest, or add --skip-refused to provision the others",
            str(args.manifest or out),
        )
    ep, server_ca = _endpoint(args)
    if args.target == "bench":
        ca_dir = _bench(args).layout.fleet_ca
        if args.ca and Path(args.ca).resolve() != ca_dir.resolve():
            raise UserError(
                f"--target bench issues from the bench's fleet CA ({ca_dir}), not {args.ca}",
                "the bench trusts only its own fleet CA; --ca is for --target aws",
            )
        if not ca_dir.exists():
            raise UserError("the bench has no fleet CA yet", where="thingkit bench up")
    else:
        ca_dir = args.ca or state_home() / "ca"
    return {
        "out": out,
        "board": board,
        "records": records,
        "refused": refused,
        "preview": pv,
        "endpoint": ep,
        "server_ca": server_ca,
        "ca_dir": ca_dir,
        "images": not args.no_images,
        "trees": args.trees or args.target == "bench",
    }


def _provision_done_text(args: argparse.Namespace, p: dict, res) -> str:
    board, out = p["board"], p["out"]
    text = (
        res.summary()
        + f"\ntarget {args.target}, issued by the CA in {p['ca_dir']}"
        + (" (the bench's fleet CA: the bench trusts only it)" if args.target == "bench" else "")
    )
    if res.refused:
        text += "\n" + "\n".join(f"  refused: {r}" for r in res.refused[:20])
    if p["images"]:
        text += (
            f"\nflash: esptool --chip {board.chip} write-flash "
            f"{hex(board.filesystem_offset())} {out}/images/<thing>.littlefs.bin"
        )
    return text


def _plan_doc(args: argparse.Namespace, p: dict) -> dict:
    board, ep = p["board"], p["endpoint"]
    return {
        "out": str(p["out"]),
        "ca": str(p["ca_dir"]),
        "target": args.target,
        **ep,
        "ntp_servers": list(ep["ntp_servers"]),
        "board": board.id,
        "fs_offset": hex(board.filesystem_offset()),
        "new": len(p["preview"].new),
        "already": len(p["preview"].known),
        "refused": sorted(p["refused"]),
        "images": p["images"],
        "trees": p["trees"],
    }


def _plan_text(args: argparse.Namespace, p: dict) -> str:
    board, ep, pv = p["board"], p["endpoint"], p["preview"]
    return (
        f"would issue {len(pv.new)} identities for target {args.target} ({len(pv.known)} "
        f"already provisioned, {len(p['refused'])} refused) from {p['ca_dir']} into "
        f"{p['out']}: endpoint {ep['endpoint']}:{ep['port']}, board {board.id} (images "
        f"flashed at {hex(board.filesystem_offset())}){'' if p['images'] else ', no images'}"
    )


def cmd_provision(args: argparse.Namespace) -> int:
    from provisioning.fleet import FleetError, FleetSpec, provision_fleet
    from provisioning.store import StoreError

    if args.claim:
        from host_tools.identity.claim import provision_claim

        return provision_claim(args)
    p = _provision_plan(args)
    board, out, ep, pv, ca_dir = p["board"], p["out"], p["endpoint"], p["preview"], p["ca_dir"]
    if args.dry_run:
        _out(args, {"plan": _plan_doc(args, p)}, _plan_text(args, p))
        return 0
    if pv.new:
        _confirm(args, f"issue {len(pv.new)} device certificates from {ca_dir}", ask=False)
    ca, _pw = _load_ca(args, ca_dir)
    spec = FleetSpec(
        target=args.target,
        board=board.id,
        partition_size=board.filesystem_size(),
        fs_offset=board.filesystem_offset(),
        name_template=args.name_template,
        **ep,
    )
    try:
        res = provision_fleet(
            ca,
            spec,
            [r for r in p["records"] if r.serial not in p["refused"]],
            out,
            p["server_ca"],
            images=p["images"],
            trees=p["trees"],
            full_images=args.full_images,
            extra_files={"board.json": (json.dumps(board.data, indent=1) + "\n").encode()},
            jobs=args.jobs,
            progress=_progress(args),
            refused=p["refused"],
        )
    except (FleetError, StoreError) as exc:
        raise UserError(str(exc), where=str(out)) from exc
    doc = {**res.to_json(), "target": args.target, "ca": str(ca_dir)}
    _out(args, doc, _provision_done_text(args, p, res))
    return 1 if res.refused else 0


# -- register / revoke / rotate / teardown ---------------------------------------------------
def _aws(args: argparse.Namespace, spec: dict, dry: bool):
    """(boto3 iot client or None, AwsOptions)."""
    from provisioning.aws.plan import AwsOptions

    region = args.region or spec.get("region") or os.environ.get("AWS_REGION", "")
    if not region:
        raise UserError("an AWS region is needed", "give --region")
    client, account = None, args.account_id
    try:
        import boto3
        from botocore.config import Config

        cfg = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=30)
        client = boto3.client("iot", region_name=region, config=cfg)
        if not account:
            sts = boto3.client("sts", region_name=region, config=cfg)
            account = sts.get_caller_identity()["Account"]
    except Exception as exc:
        if not dry:
            raise UserError(
                f"cannot reach AWS in {region}: {exc}", "check AWS credentials"
            ) from exc
        account = account or "ACCOUNT_ID"
    opts = AwsOptions(
        region=region,
        account=account,
        topic_prefix=spec.get("topic_prefix", "thingkit"),
        policy_name=args.policy_name,
        thing_type=args.thing_type,
        groups=args.group or ["thingkit-fleet"],
        ca_mode=args.ca_mode,
        rule_role_arn=args.rule_role_arn or "",
        jitp=args.jitp,
        jitp_role_arn=args.jitp_role_arn or "",
        claim_template=args.claim_template or "",
        claim_role_arn=args.claim_role_arn or "",
    )
    return client, opts


def _claim(store, ca) -> object:
    """The fleet's claim certificate (issued once, kept in <fleet>/claim/)."""
    from provisioning.bundle import atomic_write
    from provisioning.ca import KeyPair, Usage

    d = store.root / "claim"
    if (d / "claim.crt.der").exists():
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_der_private_key((d / "claim.key.der").read_bytes(), None)
        return KeyPair(key, x509.load_der_x509_certificate((d / "claim.crt.der").read_bytes()))
    pair = ca.issue("thingkit-claim", Usage.CLIENT, days=ca.policy.leaf_days)
    atomic_write(d / "claim.key.der", pair.key_der, private=True)
    atomic_write(d / "claim.crt.der", pair.cert_der)
    return pair


def cmd_register(args: argparse.Namespace) -> int:
    from provisioning.ca import CertificateAuthority

    store, spec = _store(args)
    active = [e for e in store.devices.values() if e.status == "active"]
    if args.target == "bench":
        from host_tools.bench import registry as br

        b = _bench(args)
        _bench_ca_check(b, spec)
        if args.dry_run:
            _out(
                args,
                {"plan": {"bench": str(b.layout.root), "things": len(active)}},
                f"would register {len(active)} things on the bench {b.layout.root}: ACL "
                "regenerated and CRL published; the broker reloads its ACL if it changed and "
                "restarts only if revocations changed",
            )
            return 0
        b.require_up()
        _confirm(args, f"register {len(active)} things on the bench", ask=False)
        t0 = time.monotonic()
        n = br.register_things(b, {e.thing_name: e.fingerprint for e in active}, reload=False)
        br.publish_crl(b, restart=False)
        did = b.apply_config()
        _out(
            args,
            {"registered": n, "things": len(active), "broker": did},
            f"bench: {len(active)} things registered ({n} new or changed); "
            f"{_BROKER_DID[did]} ({time.monotonic() - t0:.1f} s)",
        )
        return 0
    from provisioning.aws.apply import Applier
    from provisioning.aws.plan import PlanError, registration_plan

    client, opts = _aws(args, spec, args.dry_run)
    ca_pub = CertificateAuthority.load_public(Path(spec["ca_dir"]))
    try:
        if args.dry_run:
            plan = registration_plan(active, opts, ca_pub, claim=None)
            _out(args, plan.to_json(), plan.render())
            plan.check(dry_run=True)
            return 0
        ca, _pw = _load_ca(args, Path(spec["ca_dir"]))
        claim = _claim(store, ca) if opts.claim_template else None
        plan = registration_plan(active, opts, ca, claim)
        plan.check()
    except PlanError as exc:
        raise UserError(str(exc)) from exc
    _confirm(args, f"make {len(plan.steps)} AWS IoT API calls in {opts.region}")
    bar = _progress(args)
    res = Applier(client, store.root / "aws-state.jsonl", rate=args.rate).apply(
        plan, ca=ca, progress=(lambda d, t: bar("aws", d, t)) if bar else None
    )
    _out(
        args,
        {**res.__dict__},
        res.summary("aws register") + "".join(f"\n  failed: {e}" for e in res.errors[:20]),
    )
    return 1 if res.errors else 0


# What Bench.apply_config did, as the commands say it.
_BROKER_DID = {
    "unchanged": "nothing changed for the broker: it was left alone, no kit disconnected",
    "reloaded": "broker ACL reloaded (SIGHUP: connections kept)",
    "restarted": "broker restarted to load the new CRL or CAs (kits reconnect)",
    "down": "the broker is not running: applies when it starts",
}


def _revoke_targets(args, store, spec, things_fps: list[tuple[str, str]]) -> str:
    """Push revocations to the target; return a line saying what was done."""
    target = args.target or spec.get("target", "aws")
    if target == "bench":
        from host_tools.bench import registry as br

        b = _bench(args)
        _bench_ca_check(b, spec)
        br.publish_crl(b, restart=False)
        return f"bench CRL published; {_BROKER_DID[b.apply_config()]}"
    if target == "aws":
        from provisioning.aws.apply import Applier
        from provisioning.aws.plan import revocation_plan

        client, opts = _aws(args, spec, False)
        res = Applier(client, store.root / "aws-revoke-state.jsonl", rate=args.rate).apply(
            revocation_plan(opts, things_fps)
        )
        if res.errors:
            raise UserError("AWS revocation failed: " + "; ".join(res.errors[:3]))
        return res.summary("aws revoke")
    return "recorded only (no target)"


def _revoke_one_cert(args: argparse.Namespace) -> int:
    """``revoke --cert FILE``: one certificate on the bench, whoever it belongs to."""
    from cryptography import x509

    from host_tools.bench import registry as br
    from provisioning.ca import CAError

    data = args.cert.read_bytes()
    cert = (
        x509.load_pem_x509_certificate(data)
        if b"-----BEGIN" in data
        else x509.load_der_x509_certificate(data)
    )
    cn = cert.subject.rfc4514_string().removeprefix("CN=")
    if args.dry_run:
        _out(args, {"plan": {"revoke": cn}}, f"would revoke {cn}'s certificate on the bench")
        return 0
    b = _bench(args)
    b.require_up()
    _confirm(args, f"revoke the certificate of {cn} on the bench", ask=False)
    try:
        entry, new = br.revoke_on_bench(b, cert, cn, args.reason)
    except CAError as exc:
        raise UserError(str(exc)) from exc
    _out(
        args,
        entry.__dict__,
        f"revoked {cn} ({entry.fingerprint[:12]}...)"
        f"{'' if new else ' (already revoked)'}; bench CRL published, broker restarted",
    )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from provisioning.lifecycle import LifecycleError, find_cert, pending_old, revoke_in_fleet

    if getattr(args, "claim", None):
        from host_tools.identity.claim import revoke_claim

        return revoke_claim(args)
    if args.cert:
        return _revoke_one_cert(args)
    store, spec = _store(args)
    todo: list[tuple[str, str]] = []
    for thing in args.things:
        if thing not in store.devices:
            raise UserError(f"{thing} is not in the fleet at {store.root}")
        fps = pending_old(store, thing) if args.previous else [store.devices[thing].fingerprint]
        todo += [(thing, fp) for fp in fps]
    if args.dry_run or not todo:
        _out(
            args,
            {"plan": [{"thing": t, "fingerprint": f} for t, f in todo]},
            "\n".join(f"would revoke {t} {f[:12]}..." for t, f in todo) or "nothing to revoke",
        )
        return 0
    on_bench = (args.target or spec.get("target", "aws")) == "bench"
    if on_bench:
        _bench(args).require_up()
    _confirm(args, f"revoke {len(todo)} certificate(s) on AWS", ask=not on_bench)
    ca, _pw = _load_ca(args, Path(spec["ca_dir"]))
    with store:
        try:
            for thing, fp in todo:
                revoke_in_fleet(store, ca, thing, args.reason, cert=find_cert(store, thing, fp))
        except LifecycleError as exc:
            raise UserError(str(exc)) from exc
        store.write_manifests()
    done = _revoke_targets(args, store, spec, todo)
    _out(args, {"revoked": [f for _t, f in todo]}, f"revoked {len(todo)} certificate(s); {done}")
    return 0


def _rotate_text(res, store, target: str) -> str:
    """What ``rotate`` says: one line per device, then what waits for delivery or
    confirmation and the command that finishes it."""

    def names(ts: list[str]) -> str:
        return " ".join(ts[:3]) + (" ..." if len(ts) > 3 else "")

    text = "\n".join(res.lines)
    if res.undelivered:
        how = "register them (thingkit register) and " if target == "aws" else ""
        text += (
            f"\n{len(res.undelivered)} device(s) wait for delivery: {how}flash or send "
            f"{store.images_dir}/<thing>.littlefs.bin, then `thingkit rotate --confirm "
            f"{names(res.undelivered)}`"
        )
    if res.unconfirmed:
        text += (
            f"\n{len(res.unconfirmed)} kit(s) did not confirm: see `thingkit kit console "
            f"{res.unconfirmed[0]}`; once they are connected, `thingkit rotate --confirm "
            f"{names(res.unconfirmed)}`"
        )
    return text


def cmd_rotate(args: argparse.Namespace) -> int:
    import datetime as dt

    from provisioning.ca import CertificateAuthority
    from provisioning.lifecycle import (
        due,
        pending_old,
    )

    if args.over_the_air:
        from host_tools.identity.claim import rotate_over_the_air

        return rotate_over_the_air(args)
    store, spec = _store(args)
    if args.confirm:
        args.previous = True
        return cmd_revoke(args)
    things = list(args.things)
    if args.due:
        pub = CertificateAuthority.load_public(Path(spec["ca_dir"]))
        things += [
            t
            for t, e in store.devices.items()
            if e.status == "active"
            and due(dt.datetime.fromisoformat(e.not_after), pub)
            and t not in things
        ]
    for t in things:
        if t not in store.devices:
            raise UserError(f"{t} is not in the fleet at {store.root}")
    if args.dry_run or not things:
        _out(
            args,
            {"plan": things},
            "\n".join(f"would rotate {t}" for t in things) or "no certificate is due for rotation",
        )
        return 0
    target = args.target or spec.get("target", "aws")
    kits = args.kits or state_home() / "kits"
    if target == "bench" and any((kits / t).exists() for t in things):
        _bench(args).require_up()  # delivery to a kit needs the broker
    _confirm(args, f"issue new certificates for {len(things)} device(s)", ask=target == "aws")
    ca, _pw = _load_ca(args, Path(spec["ca_dir"]))
    from host_tools.identity.rotation import rotate_things

    res = rotate_things(store, ca, things, target, kits, lambda: _bench(args), timeout=args.timeout)
    pending = [t for t in things if pending_old(store, t)]
    text = _rotate_text(res, store, target)
    _out(args, {"rotated": res.docs, "pending": pending}, text)
    return 0


def cmd_teardown(args: argparse.Namespace) -> int:
    store, spec = _store(args)
    target = args.target or spec.get("target", "aws")
    if target == "bench":
        from host_tools.bench import registry as br

        b = _bench(args)
        things = list(store.devices)
        if args.dry_run:
            _out(args, {"plan": things}, f"would remove {len(things)} things from the bench")
            return 0
        _confirm(args, f"remove {len(things)} things from the bench")
        n = br.unregister_things(b, things)
        _out(args, {"removed": n}, f"bench: {n} things removed, ACL regenerated")
        return 0
    from provisioning.aws.apply import Applier, teardown

    client, _opts = _aws(args, spec, args.dry_run)
    a = Applier(client, store.root / "aws-state.jsonl", rate=args.rate)
    lines, _ = teardown(a, dry_run=True)
    if args.dry_run or not lines:
        _out(
            args,
            {"plan": lines},
            "\n".join(f"would remove {x}" for x in lines) or "nothing recorded to remove",
        )
        return 0
    _confirm(args, f"remove {len(lines)} AWS IoT resources")
    bar = _progress(args)
    _lines, res = teardown(a, progress=(lambda d, t: bar("teardown", d, t)) if bar else None)
    _out(
        args,
        {**res.__dict__},
        res.summary("teardown") + "".join(f"\n  failed: {e}" for e in res.errors[:20]),
    )
    return 1 if res.errors else 0


def cmd_bench_reuse(args: argparse.Namespace) -> int:
    """``thingkit bench reuse``: certificates presented by two live connections."""
    from host_tools.bench.registry import reuse_report

    found = reuse_report(_bench(args))
    _out(
        args,
        {"reused": [r.__dict__ for r in found]},
        "\n".join(r.line() for r in found) or "no certificate is used by two live connections",
    )
    return 1 if found else 0


# -- parser -----------------------------------------------------------------------------
# -- the commands ---------------------------------------------------------------------
_CA_DIR = state_home() / "ca"
DRY = (
    arg("--dry-run", action="store_true", help="print the plan, change nothing"),
    arg("--yes", action="store_true", help="do not ask before acting"),
)
AWS = ArgGroup(
    (
        arg("--region", help="AWS region (default: the fleet's)"),
        arg("--account-id", help="AWS account id (default: from STS)"),
        arg("--policy-name", default="thingkit-device"),
        arg("--thing-type", default="thingkit-kit"),
        arg("--group", action="append", help="static thing group (repeatable)"),
        arg(
            "--ca-mode",
            choices=["register", "none"],
            default="register",
            help="register the CA (default) or certificates without a CA",
        ),
        arg("--rule-role-arn", help="IAM role the Last-Will topic rule publishes with"),
        arg("--jitp", action="store_true", help="attach a JITP template to the CA"),
        arg("--jitp-role-arn"),
        arg("--claim-template", help="create a fleet-provisioning-by-claim template"),
        arg("--claim-role-arn"),
        arg("--rate", type=float, default=10.0, help="API calls per second (default 10)"),
    ),
    title="AWS",
)
CA_DIR = arg("--dir", type=Path, default=_CA_DIR, help=f"CA directory (default {_CA_DIR})")


def _fleet_command(targets: list[str]) -> tuple:
    """The arguments every fleet command shares."""
    return (
        FLEET_DIR,
        arg("--target", choices=targets, help="default: the fleet's target"),
        BENCH_ROOT[0],
        AWS,
        *DRY,
        JSON,
    )


_THINGS = (
    arg("things", nargs="*", help="thing names"),
    arg("--cert", type=Path, help="revoke this certificate (bench kits)"),
    arg(
        "--previous",
        action="store_true",
        help="revoke the superseded certificates (after rotation)",
    ),
)

GROUPS = {"ca": "the fleet CA (offline root, issuing intermediate)"}

COMMANDS = (
    Command(
        "ca init",
        cmd_ca_init,
        "create a root and issuing CA",
        (
            CA_DIR,
            arg("--name", default="thingkit fleet"),
            arg("--org", default="thingkit"),
            arg("--root-days", type=int, default=20 * 365),
            arg("--issuing-days", type=int, default=10 * 365),
            arg("--leaf-days", type=int, default=5 * 365),
            arg("--renew-before-days", type=int, default=30),
            arg("--crl-days", type=int, default=30),
            arg("--no-passphrase", action="store_true", help="keys unencrypted (bench only)"),
            *DRY,
            JSON,
        ),
    ),
    Command("ca show", cmd_ca_show, "certificates, policy, revocations", (CA_DIR, JSON)),
    Command(
        "ca rotate-intermediate",
        cmd_ca_rotate_intermediate,
        "new issuing CA from the root",
        (CA_DIR, *DRY, JSON),
    ),
    Command(
        "provision",
        cmd_provision,
        "issue device identities, configs and images",
        (
            ArgGroup(
                (
                    arg("--count", type=int, help="this many devices, serials generated"),
                    arg(
                        "--manifest",
                        type=Path,
                        help="the manufacturer's allow list (CSV or JSON)",
                    ),
                ),
                exclusive=True,
                required=True,
            ),
            arg(
                "--fleet",
                type=Path,
                dest="out",
                metavar="DIR",
                help="fleet directory (default .thingkit/fleet)",
            ),
            arg("--out", type=Path, dest="out", help=argparse.SUPPRESS),  # earlier name
            arg(
                "--target",
                choices=["aws", "bench"],
                default=None,
                help="default: aws if --endpoint or --region is given, else the local bench",
            ),
            BENCH_ROOT[0],
            arg("--ca", type=Path, help="CA directory for --target aws (default .thingkit/ca)"),
            arg("--region"),
            arg("--endpoint", help="MQTT endpoint (default: looked up for --region)"),
            arg("--port", type=int, default=8883),
            arg("--ntp", action="append", default=None, help="NTP server (repeatable)"),
            arg("--server-ca", type=Path, help="endpoint CA (default Amazon Root CA 1)"),
            arg("--board", default="esp32-devkitc"),
            arg("--model", help="model for records without one (default: the board id)"),
            arg("--name-template", default="{model}-{serial}"),
            arg("--serial-prefix", default="SN"),
            arg("--serial-start", type=int, default=1),
            arg("--no-images", action="store_true"),
            arg("--full-images", action="store_true", help="pad images to the partition"),
            arg("--trees", action="store_true", help="also write devices/<thing>/ trees"),
            arg("--jobs", type=int, help="worker processes (default: one per core)"),
            arg(
                "--skip-refused",
                action="store_true",
                help="provision the valid devices even if some are refused",
            ),
            arg(
                "--claim",
                action="store_true",
                help="make a claim batch instead: one claim identity + the allow-list (bench)",
            ),
            arg("--batch", default="thingkit-claim", help="claim batch / template name"),
            arg("--sim-kits", action="store_true", help="with --claim: claim-only kits"),
            arg("--kits", type=Path, help="virtual kits root (default .thingkit/kits)"),
            *DRY,
            JSON,
        ),
    ),
    Command(
        "register",
        cmd_register,
        "register the fleet on the bench or AWS IoT",
        _fleet_command(["aws", "bench"]),
    ),
    Command(
        "revoke",
        cmd_revoke,
        "revoke certificates (bench CRL, AWS REVOKED)",
        (
            *_fleet_command(["aws", "bench", "none"]),
            *_THINGS,
            arg("--reason", default="unspecified"),
            arg("--claim", metavar="BATCH", help="disable a batch's claim"),
        ),
    ),
    Command(
        "rotate",
        cmd_rotate,
        "new certificates before expiry; old ones revoked on confirm",
        (
            *_fleet_command(["aws", "bench"]),
            *_THINGS,
            arg("--reason", default="superseded"),
            arg("--due", action="store_true", help="every certificate due for renewal"),
            arg(
                "--confirm",
                action="store_true",
                help="devices confirmed: revoke their old certificates",
            ),
            arg("--kits", type=Path, help="virtual kits root (bench delivery)"),
            arg(
                "--over-the-air",
                action="store_true",
                help="the running kit makes the new key and CSR; old revoked once it switched",
            ),
            arg("--endpoint", help="--over-the-air --target aws: MQTT HOST[:PORT]"),
            arg("--operator-cert", type=Path, help="--target aws: operator certificate (PEM)"),
            arg("--operator-key", type=Path, help="--target aws: operator key (PEM)"),
            arg("--endpoint-ca", type=Path, help="--target aws: endpoint's CA (default: system)"),
            arg(
                "--old-status",
                choices=["REVOKED", "INACTIVE"],
                default="REVOKED",
                help="--target aws: the old certificate's status once the kit confirmed",
            ),
            arg("--timeout", type=float, default=60.0),
        ),
    ),
    Command(
        "teardown",
        cmd_teardown,
        "remove what register created",
        _fleet_command(["aws", "bench"]),
    ),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the identity commands to a parser (for tests of this feature alone)."""
    build(subparsers, COMMANDS, GROUPS)
