"""Make a virtual kit that is ready to boot against a bench: firmware, identity, config."""

from __future__ import annotations

from pathlib import Path

from host_tools.bench.bench import Bench
from host_tools.kit.sim import DEFAULT_HEAP, SimKit
from host_tools.ota import keys
from provisioning.bundle import DeviceConfig, write_ota_pubkey
from provisioning.device import provision_device


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
