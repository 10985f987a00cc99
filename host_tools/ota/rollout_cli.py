"""``thingkit ota deploy|status``: thin wrappers over :mod:`host_tools.ota.rollout`.

thingkit ota deploy --bundle app-1.2.0.tkota --to fleet --canary 10% --abort-failure-rate 0.2
thingkit ota deploy --bundle app-1.2.0.tkota --to kit-1 --target aws --bucket B \\
    --stream-role-arn arn:aws:iam::123:role/iot-ota --dry-run
thingkit ota status ota-1-2-0-1700000000 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from host_tools.cli.table import BENCH_ROOT, JSON, Command, arg
from host_tools.errors import UserError
from host_tools.ota import rollout

log = logging.getLogger("thingkit")


def _bench(args: argparse.Namespace) -> Any:
    from host_tools.bench.bench import Bench
    from host_tools.paths import state_home

    return Bench(args.bench_root or state_home() / "bench")


def _backend(args: argparse.Namespace) -> Any:
    if args.target == "bench":
        return rollout.BenchBackend(_bench(args))
    try:
        import boto3
    except ImportError:
        raise UserError("boto3 is not installed", where="pip install boto3") from None
    bucket = getattr(args, "bucket", None)
    role = getattr(args, "stream_role_arn", None)
    if getattr(args, "func", None) is cmd_deploy and not (bucket and role):
        raise UserError("--target aws needs --bucket and --stream-role-arn")
    session = boto3.session.Session(region_name=args.region)
    return rollout.AwsBackend(
        session.client("iot"),
        session.client("s3"),
        bucket or "",
        role or "",
        getattr(args, "max_per_minute", None),
    )


def _targets(values: list[str]) -> list[str]:
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def _check_bundle(args: argparse.Namespace) -> None:
    """Refuse a bundle that ``ota inspect`` calls invalid (signature, payload)."""
    from host_tools.ota import bundle, keys

    try:
        data = Path(args.bundle).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read bundle {args.bundle}", exc.strerror or str(exc)) from exc
    pub = None
    if args.target == "bench":  # the workspace key the bench's kits trust
        pem = keys.bench_key_path(_bench(args).layout.root)
        pub = keys.public_der(keys.load_key(pem)) if pem.exists() else None
    report = bundle.inspect(data, pub, where=str(args.bundle))
    sig = report["signature"]
    if report["ok"] or (args.allow_unsigned and sig == "unsigned" and report["payload_ok"]):
        return
    why = [] if report["payload_ok"] else list(report["payload_problems"])
    if sig not in ("valid", "not_checked") and not (args.allow_unsigned and sig == "unsigned"):
        why.append(f"signature {sig}" + (f" (the kits trust {keys.key_id(pub)})" if pub else ""))
    raise UserError(
        f"{args.bundle} would fail on its targets: {'; '.join(why)}",
        where=f"thingkit ota inspect {args.bundle}",
    )


def _check_boards(args: argparse.Namespace, plan: rollout.Plan) -> None:
    """Refuse a bundle whose boards leave out a bench kit it targets (the kit would refuse
    it as wrong_board). Things with no virtual kit here are not checked."""
    if args.target != "bench":
        return
    from host_tools.ota import bundle

    boards = bundle.parse(Path(args.bundle).read_bytes()).manifest["boards"]
    kits = _bench(args).layout.root.parent / "kits"  # where `thingkit kit create` puts kits
    wrong = []
    for thing in plan.things:
        try:
            board = json.loads((kits / thing / "flash" / "board.json").read_text())["id"]
        except (OSError, ValueError, KeyError):
            continue
        if board not in boards:
            wrong.append(f"{thing} is {board}")
    if wrong:
        raise UserError(
            f"{args.bundle} would fail on its targets: for boards {','.join(boards)}, but "
            + ", ".join(wrong[:5])
            + (f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""),
            where="thingkit ota build --boards",
        )


def cmd_deploy(args: argparse.Namespace) -> int:
    _check_bundle(args)
    backend = _backend(args)
    try:
        plan = rollout.make_plan(
            args.bundle,
            _targets(args.to),
            backend.resolve,
            canary=args.canary,
            abort_failure_rate=args.abort_failure_rate,
            job_id=args.job_id,
            target=args.target,
            canary_timeout_s=args.canary_timeout,
            allow_unsigned=args.allow_unsigned,
        )
        _check_boards(args, plan)
        if args.dry_run:
            shown = plan.to_dict()
            if isinstance(backend, rollout.AwsBackend):
                shown["aws"] = {
                    "s3": {"bucket": backend.bucket, "key": backend.key(plan)},
                    "create_job": [backend.job_request(plan, s) for s in plan.stages],
                }
            if args.json:
                print(json.dumps(shown, indent=1))
            else:
                _print_plan(plan, shown)
            return 0
        report = rollout.deploy(plan, backend)
    finally:
        backend.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(f"{report.job_id}: {report.outcome}; {report.message}")
    return 0 if report.outcome == "deployed" else 1


def _print_plan(plan: rollout.Plan, shown: dict) -> None:
    print(f"would deploy {plan.bundle} ({plan.kind} {plan.version}, {plan.size} bytes)")
    print(f"  stream {plan.stream_id} on {plan.target}; document {json.dumps(plan.document)}")
    for st in plan.stages:
        print(f"  job {st.job_id} ({st.name}): {len(st.things)} things: {', '.join(st.things)}")
    if len(plan.stages) > 1:
        print(
            f"  the rest starts only when the canary failure rate is at most "
            f"{plan.abort_failure_rate:.0%} (time limit {plan.canary_timeout_s:.0f} s)"
        )
    if plan.abort_config:
        print(f"  abortConfig {json.dumps(plan.abort_config)}")
    for req in shown.get("aws", {}).get("create_job", []):
        print(f"  aws iot create-job {json.dumps(req)}")


def cmd_status(args: argparse.Namespace) -> int:
    backend = _backend(args)
    backend.details = True
    try:
        rows = rollout.status(args.job, backend)
    finally:
        backend.close()
    # Exit 1 when a device failed: a script must not read a failed rollout as done.
    failed = sum(r["status"] in rollout.FAILED_STATES for r in rows)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 1 if failed else 0
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
        details = " ".join(f"{k}={v}" for k, v in sorted(r["statusDetails"].items()))
        print(f"{r['thing']:<24} {r['stage']:<7} {r['status']:<12} {details}")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"{args.job}: {len(rows)} devices: {summary}", file=sys.stderr)
    return 1 if failed else 0


COMMON = (
    arg("--target", choices=("bench", "aws"), default="bench"),
    BENCH_ROOT[0],
    arg("--region", help="AWS region (--target aws)"),
    JSON,
)


COMMANDS = (
    Command(
        "ota deploy",
        cmd_deploy,
        "deploy a bundle through jobs (staged rollout)",
        (
            arg("--bundle", type=Path, required=True, help="signed bundle file"),
            arg(
                "--to",
                action="append",
                required=True,
                help="thing or group (repeat or comma-separate)",
            ),
            arg("--canary", help="canary count N or share P%% (default: no canary)"),
            arg(
                "--abort-failure-rate",
                type=float,
                default=0.2,
                help="abort when the failure rate is above this (0-1, default 0.2)",
            ),
            arg(
                "--canary-timeout", type=float, default=600.0, help="seconds to wait for the canary"
            ),
            arg("--job-id", help="job id (default ota-<version>-<time>)"),
            arg("--bucket", help="S3 bucket for the bundle (--target aws)"),
            arg("--stream-role-arn", help="role AWS IoT uses to read S3 (--target aws)"),
            arg("--max-per-minute", type=int, help="job executions rollout rate (aws)"),
            arg("--allow-unsigned", action="store_true", help="deploy an unsigned bundle"),
            arg("--dry-run", action="store_true", help="print the plan, change nothing"),
            *COMMON,
        ),
    ),
    Command(
        "ota status",
        cmd_status,
        "per-device status of a deployment (exit 1 if any device failed)",
        (
            arg("job", help="deployment (job) id"),
            *COMMON,
        ),
    ),
)
