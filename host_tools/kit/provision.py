"""Make a virtual kit that is ready to boot against a bench: firmware, identity, config."""

from __future__ import annotations

import json
from pathlib import Path

from host_tools.bench.bench import Bench
from host_tools.errors import UserError
from host_tools.kit.sim import DEFAULT_HEAP, SimKit
from host_tools.ota import keys
from provisioning.bundle import DeviceConfig, write_ota_pubkey
from provisioning.device import provision_device

# Where a claim kit keeps the batch's claim identity (config.json tls.cert / tls.key).
CLAIM_CERT_FILE = "certs/claim.crt.der"
CLAIM_KEY_FILE = "certs/claim.key.der"


def bench_config(bench: Bench, thing: str, **overrides: object) -> DeviceConfig:
    """The device config for a kit on this bench: endpoint and ports come from the bench."""
    fields: dict = {
        "thing_name": thing,
        "endpoint": "localhost",
        "port": bench.port,
        "ntp_servers": [f"127.0.0.1:{bench.ntp_port}"],
        "topic_prefix": bench.topic_prefix,
    }
    fields.update(overrides)
    return DeviceConfig(**fields)


def create_sim_kit(
    bench: Bench,
    kits_root: Path,
    thing: str,
    heap: str = DEFAULT_HEAP,
    mode: str | None = None,
    board: str = "sim",
    ota_key: Path | None = None,
    **config: object,
) -> SimKit:
    """Flash firmware, provision a fresh identity and register the thing on the bench.

    The kit also gets the OTA code-signing public key (``certs/ota-signing.der``) of
    ``ota_key`` (a private key PEM), by default the bench's key, created on first use
    (host_tools.ota.keys.bench_key_path).
    """
    kit = SimKit(Path(kits_root) / thing, heap=heap)
    kit.install_board(board)
    kit.install_firmware(mode=mode)  # None: as the board's image runs code (mpy or ROMFS)
    kit.calibrate()
    cfg = bench_config(bench, thing, **config)
    ident = provision_device(
        bench.fleet_ca(), cfg, kit.flash, bench.layout.server_ca_der.read_bytes()
    )
    signing = keys.open_or_create(ota_key or keys.bench_key_path(bench.layout.root))
    write_ota_pubkey(kit.flash, keys.public_der(signing))
    bench.register(thing, ident.fingerprint)
    return kit


def create_claim_kit(
    bench: Bench,
    kits_root: Path,
    thing: str,
    serial: str,
    batch: str,
    claim_dir: Path,
    heap: str = DEFAULT_HEAP,
    board: str = "sim",
    ota_key: Path | None = None,
    **config: object,
) -> SimKit:
    """A kit as a factory of a claim batch flashes it: firmware, the batch's claim
    certificate and key, its serial and template, and no identity of its own.

    Nothing is registered: the kit provisions itself through the bench's fleet
    provisioning service on first boot (firmware/tk/fleet_prov.py). ``config.json``
    names the thing the allow-list gives ``serial`` (the CSR's CN) and points ``tls`` at
    the claim files.
    """
    from host_tools.bench.fleet_provisioning import claim_files
    from provisioning.bundle import CONFIG_FILE, SERVER_CA_FILE, atomic_write

    cert_p, key_p = claim_files(Path(claim_dir))
    if not cert_p.exists():
        raise UserError(f"no claim identity in {claim_dir}", where="thingkit provision --claim")
    kit = SimKit(Path(kits_root) / thing, heap=heap)
    kit.install_board(board)
    kit.install_firmware()
    kit.calibrate()
    doc = bench_config(bench, thing, **config).to_json()
    doc["tls"].update(cert=CLAIM_CERT_FILE, key=CLAIM_KEY_FILE)
    doc["claim"] = {"template": batch, "serial": serial}
    flash = kit.flash
    atomic_write(flash / CLAIM_CERT_FILE, cert_p.read_bytes())
    atomic_write(flash / CLAIM_KEY_FILE, key_p.read_bytes(), private=True)
    atomic_write(flash / SERVER_CA_FILE, bench.layout.server_ca_der.read_bytes())
    atomic_write(flash / CONFIG_FILE, (json.dumps(doc, indent=1) + "\n").encode())
    signing = keys.open_or_create(ota_key or keys.bench_key_path(bench.layout.root))
    write_ota_pubkey(flash, keys.public_der(signing))
    return kit
