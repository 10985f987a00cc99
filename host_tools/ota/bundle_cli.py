"""``thingkit ota keygen|build|sign|inspect``: thin wrappers over host_tools.ota.bundle/keys.

thingkit ota keygen                                  # .thingkit/ota/signing-key.pem (0600)
thingkit ota build --version 1.2.0 --boards sim -o app-1.2.0.unsigned
thingkit ota sign --key .thingkit/ota/signing-key.pem app-1.2.0.unsigned -o app-1.2.0.tkota
thingkit ota inspect app-1.2.0.tkota --pubkey .thingkit/ota/signing-key.der
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from host_tools.cli.output import Progress, emit
from host_tools.cli.table import JSON, Command, arg
from host_tools.errors import UserError
from host_tools.ota import bundle, keys
from host_tools.paths import FIRMWARE

log = logging.getLogger("thingkit")


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def cmd_keygen(args: argparse.Namespace) -> int:
    path = args.key or keys.default_key_path()
    kept = Path(path).exists() and not args.force
    # An existing key is kept (kits made by `kit create` already trust it): a new one
    # would orphan them, so only --force replaces it.
    key = keys.open_or_create(path) if kept else keys.generate_key(path, overwrite=args.force)
    pub = keys.public_der(key)
    emit(
        args,
        {
            "key": str(path),
            "new": not kept,
            "pubkey": str(keys.pubkey_path(path)),
            "key_id": keys.key_id(pub),
        },
        f"signing key {path} ({'kept: it exists; --force replaces it' if kept else 'new'}, "
        f"0600, keep it on this host); public key "
        f"{keys.pubkey_path(path)} ({len(pub)} bytes, key_id {keys.key_id(pub)})",
    )
    return 0


def chips_of(boards: list[str]) -> list[str]:
    """The chips of known boards, in first-seen order (UserError for an unknown board)."""
    from host_tools.boards.registry import load_board

    chips: list[str] = []
    for b in boards:
        chip = load_board(b, check=False).chip
        if chip not in chips:
            chips.append(chip)
    return chips


def cmd_build(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    boards = _csv(args.boards)
    board_chips = chips_of(boards)  # also refuses unknown boards
    chips = _csv(args.chips) if args.chips else (board_chips if args.kind == "firmware" else None)
    with Progress(args) as progress:
        what = "compiling" if args.kind == "app" else "checking and packing"
        progress.step(f"{what} {args.source} into an unsigned {args.kind} bundle")
        data = bundle.build_from_source(
            args.source,
            version=args.version,
            boards=boards,
            kind=args.kind,
            min_version=args.min_version,
            chips=chips,
        )
    bundle.write_file(args.output, data)
    b = bundle.parse(data)
    rt = b.manifest.get("runtime")
    what = f"{args.kind} {b.manifest['version']}" + (
        f" ({rt['project_name']} {rt['version']}, {rt['chip']} app image)" if rt else ""
    )
    emit(
        args,
        {
            "bundle": str(args.output),
            "kind": args.kind,
            "version": b.manifest["version"],
            "boards": boards,
            "files": len(b.manifest["files"]),
            "payload_bytes": len(b.payload),
            "bytes": len(data),
            "signed": False,
        },
        f"built {args.output}: {what} for {','.join(boards)}, "
        f"{len(b.manifest['files'])} files, payload {len(b.payload)} B, total {len(data)} B, "
        f"unsigned, {time.monotonic() - t0:.1f} s",
    )
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    key = keys.load_key(args.key or keys.default_key_path())
    try:
        data = Path(args.input).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read bundle {args.input}", exc.strerror or str(exc)) from exc
    signed = bundle.sign(data, key)
    bundle.write_file(args.output, signed)
    kid = keys.key_id(keys.public_der(key))
    emit(
        args,
        {"bundle": str(args.output), "key_id": kid, "bytes": len(signed)},
        f"signed {args.output} with key_id {kid} ({len(signed)} bytes)",
    )
    return 0


def _human(report: dict, path: Path) -> str:
    m, s = report["manifest"], report["sizes"]
    created = datetime.fromtimestamp(m["created"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    sig = {
        "valid": f"valid (key_id {m['key_id']})",
        "invalid": f"INVALID (key_id {m['key_id']})",
        "wrong_key": f"signed by another key (key_id {m['key_id']}, "
        f"given key {report['pubkey_id']})",
        "unsigned": "unsigned",
        "not_checked": f"present, not checked (key_id {m['key_id']}; give --pubkey)",
    }[report["signature"]]
    lines = [
        f"bundle     {path}",
        f"kind       {m['kind']} {m['version']} (min_version {m['min_version']})",
        f"boards     {','.join(m['boards'])}  chips {','.join(m.get('chips', [])) or '-'}",
    ]
    rt = m.get("runtime")
    if rt:
        lines.append(
            f"runtime    {rt.get('project_name')} {rt.get('version')} ({rt.get('chip')} "
            "ESP-IDF app image: the interpreter, judged by this version)"
        )
    lines += [
        f"created    {created}",
        (
            f"sizes      total {s['total']} B = header {s['header']} B (manifest "
            f"{s['manifest']} B, signature {s['signature']} B) + payload {s['payload']} B"
        ),
        f"signature  {sig}",
        "payload    "
        + (
            f"ok (sha256 {m['payload_sha256'][:16]}...)"
            if report["payload_ok"]
            else "MISMATCH: " + ", ".join(report["payload_problems"])
        ),
        f"files      {len(m['files'])}",
    ]
    lines += [f"  {f['size']:>8}  {f['sha256'][:16]}  {f['path']}" for f in m["files"]]
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read bundle {args.file}", exc.strerror or str(exc)) from exc
    default = keys.pubkey_path(keys.default_key_path())  # the workspace's key, if made
    path = args.pubkey or (default if default.exists() else None)
    pub = keys.load_public(path) if path else None
    report = bundle.inspect(data, pub, where=str(args.file))
    print(json.dumps(report, indent=1) if args.json else _human(report, args.file))
    return 0 if report["ok"] else 1


COMMANDS = (
    Command(
        "ota keygen",
        cmd_keygen,
        "create the ECDSA P-256 code-signing key",
        (
            arg("--key", type=Path, help="private key PEM (default .thingkit/ota/)"),
            arg("--force", action="store_true", help="replace an existing key"),
            JSON,
        ),
    ),
    Command(
        "ota build",
        cmd_build,
        "compile firmware/ into an unsigned update bundle",
        (
            arg(
                "--version",
                help="MAJOR.MINOR.PATCH (app: required; firmware: read from the image's descriptor)",
            ),
            arg("--min-version", default="0.0.0", help="lowest running version allowed"),
            arg("--boards", required=True, help="compatible board ids, comma-separated"),
            arg("--chips", help="compatible chips (default: the boards' chips for firmware)"),
            arg("--kind", choices=bundle.KINDS, default="app"),
            arg(
                "--source",
                type=Path,
                default=FIRMWARE,
                help="app: the firmware tree; firmware: MicroPython's -OTA .app-bin (ESP-IDF app image)",
            ),
            arg("-o", "--output", type=Path, required=True),
            JSON,
        ),
    ),
    Command(
        "ota sign",
        cmd_sign,
        "sign a bundle with the code-signing key",
        (
            arg("input", type=Path),
            arg(
                "--key",
                type=Path,
                default=None,
                help="private key PEM (default .thingkit/ota/signing-key.pem)",
            ),
            arg("-o", "--output", type=Path, required=True),
            JSON,
        ),
    ),
    Command(
        "ota inspect",
        cmd_inspect,
        "show a bundle's manifest, sizes and checks",
        (
            arg("file", type=Path),
            arg(
                "--pubkey",
                type=Path,
                help="public key (DER/PEM) or private key PEM (default: the workspace key, if any)",
            ),
            JSON,
        ),
    ),
)
