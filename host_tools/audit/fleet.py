"""Device configs: credential fields other than the certificate, and certificate reuse.

A device config is a ``config.json`` at the root of a device filesystem (a kit's flash
directory, or one provisioned bundle of a fleet), with its certificate at ``tls.cert``
relative to that root (``certs/device.crt.der``).

    found = check_configs(find_configs([Path("fleet")]), show=str)
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from host_tools.audit.rules import Finding
from host_tools.paths import FIRMWARE

CONFIG_NAME = "config.json"
DEFAULT_CERT = "certs/device.crt.der"


def _firmware_rule() -> tuple[frozenset[str], frozenset[str]]:
    """The device's own rule (firmware/tk/config.py: CREDENTIAL_FIELDS, NOT_CLOUD), read
    from its source: the audit flags exactly the fields the firmware refuses."""
    tree = ast.parse((FIRMWARE / "tk" / "config.py").read_text())
    found = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id in ("CREDENTIAL_FIELDS", "NOT_CLOUD"):
            found[target.id] = frozenset(ast.literal_eval(node.value))
    return found["CREDENTIAL_FIELDS"], found["NOT_CLOUD"]


# Field names (lower case, without '_', '-' or spaces) of credentials other than a
# certificate; objects whose fields are not cloud credentials (the Wi-Fi network's key).
_CREDENTIAL_FIELDS, _NOT_CLOUD = _firmware_rule()


@dataclass
class DeviceConfig:
    """One device config found on disk."""

    path: Path
    doc: dict | None
    text: str
    error: str = ""

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def thing(self) -> str:
        t = self.doc.get("thing_name") if isinstance(self.doc, dict) else None
        return t if isinstance(t, str) else self.root.name


def find_configs(dirs: Iterable[Path]) -> list[DeviceConfig]:
    """Every ``config.json`` under the given directories (or the files themselves)."""
    paths: list[Path] = []
    for d in dirs:
        d = Path(d)
        paths += [d] if d.is_file() else sorted(d.rglob(CONFIG_NAME))
    out = []
    for p in paths:
        text = p.read_text(encoding="utf-8", errors="replace")
        try:
            out.append(DeviceConfig(p, json.loads(text), text))
        except ValueError as exc:
            out.append(DeviceConfig(p, None, text, f"not valid JSON ({exc})"))
    return out


def _line_of(text: str, key: str, start: int) -> tuple[int, int]:
    """(line, offset) of the next ``"key":`` at or after ``start`` in the JSON text."""
    m = re.compile(r'"' + re.escape(key) + r'"\s*:').search(text, start)
    if not m:
        return 1, start
    return text.count("\n", 0, m.start()) + 1, m.end()


def credential_fields(cfg: DeviceConfig, show: Callable[[Path], str]) -> list[Finding]:
    """``appb.non_cert_credential`` for every credential-like field, at any depth."""
    out: list[Finding] = []
    pos = 0

    def walk(node: object, where: str) -> None:
        nonlocal pos
        if isinstance(node, list):
            for item in node:
                walk(item, where)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            line, pos = _line_of(cfg.text, key, pos)
            name = f"{where}.{key}" if where else key
            norm = re.sub(r"[_\-\s]", "", str(key).lower())
            if norm in _CREDENTIAL_FIELDS:
                out.append(
                    Finding(
                        show(cfg.path),
                        line,
                        "appb.non_cert_credential",
                        f"field '{name}': a credential other than the TLS certificate "
                        "(the firmware accepts only certificates)",
                        str(key),
                    )
                )
            if str(key).lower() not in _NOT_CLOUD:
                walk(value, name)
            else:
                _, pos = _skip(cfg.text, pos, value)

    walk(cfg.doc, "")
    return out


def _skip(text: str, pos: int, value: object) -> tuple[int, int]:
    """Move past the keys of a value that is not walked, so later lines stay right."""
    if isinstance(value, dict):
        for k, v in value.items():
            _, pos = _line_of(text, k, pos)
            _, pos = _skip(text, pos, v)
    return 0, pos


def cert_digest(cfg: DeviceConfig) -> tuple[str, Path] | None:
    """SHA-256 of the DER of the device's certificate, and its path; None if absent."""
    tls = cfg.doc.get("tls") if isinstance(cfg.doc, dict) else None
    rel = tls.get("cert") if isinstance(tls, dict) and isinstance(tls.get("cert"), str) else None
    path = cfg.root / (rel or DEFAULT_CERT)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            data = x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
        except ValueError:
            pass
    return hashlib.sha256(data).hexdigest(), path


def cert_reuse(configs: list[DeviceConfig], show: Callable[[Path], str]) -> list[Finding]:
    """``appb.cert_reuse`` for each device whose certificate another device also uses."""
    by_digest: dict[str, list[DeviceConfig]] = {}
    for cfg in configs:
        d = cert_digest(cfg) if cfg.doc is not None else None
        if d:
            by_digest.setdefault(d[0], []).append(cfg)
    out = []
    for digest, group in sorted(by_digest.items()):
        if len(group) < 2:
            continue
        for cfg in group:
            others = ", ".join(f"{show(o.path)} ({o.thing})" for o in group if o is not cfg)
            line, _ = _line_of(cfg.text, "cert", 0)
            out.append(
                Finding(
                    show(cfg.path),
                    line,
                    "appb.cert_reuse",
                    f"certificate sha256:{digest[:16]} of {cfg.thing} is also used by {others}",
                    digest,
                )
            )
    return out


def check_configs(configs: list[DeviceConfig], show: Callable[[Path], str]) -> list[Finding]:
    """All device-config rules over a set of configs (a fleet)."""
    out: list[Finding] = []
    for cfg in configs:
        if cfg.doc is not None:
            out += credential_fields(cfg, show)
    return out + cert_reuse(configs, show)
