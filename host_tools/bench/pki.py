"""The bench's certificates: a server CA (AWS's role), the broker's certificate, and the
bench's own client identities (services and operator)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization

from host_tools.bench.layout import OPERATOR_CN, SERVICES_CN, BenchLayout
from provisioning.ca import CertificateAuthority, KeyPair, Usage

BROKER_CN = "localhost"


def _write_pair(paths: tuple[Path, Path], pair: KeyPair, chain: bytes = b"") -> None:
    cert, key = paths
    cert.parent.mkdir(parents=True, exist_ok=True)
    cert.write_bytes(pair.cert_pem + chain)
    key.touch(mode=0o600)
    key.write_bytes(pair.key_pem())


def ensure(layout: BenchLayout) -> None:
    """Create whatever certificates the bench is missing; keep the ones it has."""
    server_ca = CertificateAuthority.open_or_create(layout.server_ca, "thingkit bench server")
    fleet_ca = CertificateAuthority.open_or_create(layout.fleet_ca, "thingkit bench fleet")
    layout.pki.mkdir(parents=True, exist_ok=True)
    chain = server_ca.issuing.cert_pem
    broker = layout.identity(BROKER_CN)
    if not broker[0].exists():
        pair = server_ca.issue(
            BROKER_CN, Usage.SERVER, dns_names=["localhost"], ip_addresses=["127.0.0.1"]
        )
        _write_pair(broker, pair, chain)
    for cn in (SERVICES_CN, OPERATOR_CN):
        paths = layout.identity(cn)
        if not paths[0].exists():
            _write_pair(paths, server_ca.issue(cn, Usage.CLIENT), chain)
    root_pem = server_ca.root_cert.public_bytes(serialization.Encoding.PEM)
    layout.server_ca_pem.write_bytes(root_pem)
    layout.server_ca_der.write_bytes(server_ca.root_der)
    layout.client_cafile.write_bytes(fleet_ca.chain_pem + server_ca.chain_pem)
