"""Issue one device identity and write its bundle: the first slice of bulk provisioning."""

from __future__ import annotations

from pathlib import Path

from provisioning.bundle import DeviceConfig, check_thing_name, write_bundle
from provisioning.ca import CertificateAuthority, KeyPair, Usage


def provision_device(
    ca: CertificateAuthority, config: DeviceConfig, fs_root: Path, server_ca_der: bytes
) -> KeyPair:
    """Issue a fresh EC P-256 key and certificate (CN = thing name) and write the bundle.

    Returns:
        The device's key pair (the caller registers its certificate with the cloud).
    """
    check_thing_name(config.thing_name)
    identity = ca.issue(config.thing_name, Usage.CLIENT)
    write_bundle(fs_root, identity, server_ca_der, config)
    return identity
