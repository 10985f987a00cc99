"""The device bundle: what provisioning writes into a kit's flash filesystem.

A bundle is the device's identity (private key and certificate, DER, the form Mbed TLS
loads with the least RAM), the CA that signs the server it talks to, and ``config.json``
with everything the firmware must not hard-code: endpoint, port, thing name, NTP servers.

Layout on the device filesystem (paths are relative to the filesystem root)::

    config.json
    certs/device.crt.der
    certs/device.key.der
    certs/server-ca.der
    certs/ota-signing.der      (OTA code-signing public key, write_ota_pubkey)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from provisioning.ca import KeyPair
from provisioning.doc_urls import base_url as docs_base_url
from provisioning.errors import ProvisioningError

CONFIG_FILE = "config.json"
CERT_FILE = "certs/device.crt.der"
KEY_FILE = "certs/device.key.der"
SERVER_CA_FILE = "certs/server-ca.der"
# The OTA code-signing public key (SubjectPublicKeyInfo DER): see host_tools/ota/keys.py.
OTA_PUBKEY_FILE = "certs/ota-signing.der"
CONFIG_SCHEMA = 1

# AWS IoT thing names: 1-128 of [a-zA-Z0-9:_-]. thingkit also uses the thing name as the
# MQTT client id and in topic names, so it keeps to 64 characters and leaves out ':'.
THING_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class BundleError(ProvisioningError, ValueError):
    """A bundle cannot be made from the values given."""


def check_thing_name(name: str) -> str:
    """Return ``name`` if it is a valid thing name, else raise :class:`BundleError`."""
    if not isinstance(name, str) or not THING_NAME_RE.fullmatch(name):
        raise BundleError(f"thing name {name!r} is not valid: use 1-64 letters, digits, '_' or '-'")
    return name


@dataclass
class DeviceConfig:
    """The device's ``config.json``; see firmware/tk/config.py for how it is checked."""

    thing_name: str
    endpoint: str
    port: int = 8883
    ntp_servers: list[str] = field(default_factory=lambda: ["pool.ntp.org"])
    keepalive_s: int = 30
    topic_prefix: str = "thingkit"
    backoff_base_ms: int = 1000
    backoff_cap_ms: int = 120000
    backoff_reset_s: int = 30
    log_level: str = "info"
    # Documentation link the device shows: from the one configured value (docs/urls.toml).
    docs_url: str = field(default_factory=docs_base_url)
    telemetry_interval_s: int = 10
    diag_interval_s: int = 60
    # Bench only (storm benchmark): the firmware honours False on the virtual kit alone.
    backoff_jitter: bool = True
    # Telemetry records kept on flash while offline (firmware/tk/outbox.py).
    outbox_max_records: int = 512
    # Seconds a new firmware version has to confirm itself before it is rolled back.
    ota_confirm_s: int = 300
    # Last resort: seconds without a cloud session after which the device reboots
    # (firmware/tk/device.py; its outbox is on flash and survives). 0: never.
    offline_reboot_s: int = 900
    # The hardware watchdog's time-out (firmware/tk/watchdog.py), 10..600 s.
    watchdog_s: int = 60

    def to_json(self) -> dict:
        """The JSON document the firmware reads."""
        d = asdict(self)
        doc = {
            "schema": CONFIG_SCHEMA,
            "thing_name": d["thing_name"],
            "mqtt": {
                "endpoint": d["endpoint"],
                "port": d["port"],
                "keepalive_s": d["keepalive_s"],
                "topic_prefix": d["topic_prefix"],
            },
            "tls": {"cert": CERT_FILE, "key": KEY_FILE, "ca": SERVER_CA_FILE},
            "ntp": {"servers": d["ntp_servers"]},
            "backoff": {
                "base_ms": d["backoff_base_ms"],
                "cap_ms": d["backoff_cap_ms"],
                "reset_after_s": d["backoff_reset_s"],
            },
            "log_level": d["log_level"],
            "docs_url": d["docs_url"],
            "app2": {"interval_s": d["telemetry_interval_s"]},
            "diag": {"interval_s": d["diag_interval_s"]},
        }
        # Written only when not the firmware's default, so earlier configs stay as they were.
        if not d["backoff_jitter"]:
            doc["backoff"]["jitter"] = False
        if d["outbox_max_records"] != 512:
            doc["outbox"] = {"max_records": d["outbox_max_records"]}
        if d["ota_confirm_s"] != 300:
            doc["ota"] = {"confirm_s": d["ota_confirm_s"]}
        if d["offline_reboot_s"] != 900:
            doc["offline"] = {"reboot_after_s": d["offline_reboot_s"]}
        if d["watchdog_s"] != 60:
            doc["watchdog"] = {"timeout_s": d["watchdog_s"]}
        return doc


def write_bundle(
    fs_root: Path, identity: KeyPair, server_ca_der: bytes, config: DeviceConfig
) -> None:
    """Write the identity, server CA and config into a device filesystem tree.

    Each file is written to a temporary name and renamed, so an interrupted write never
    leaves a half file where the device reads.
    """
    files = bundle_files(identity, server_ca_der, config)
    for rel, data in files.items():
        _atomic_write(fs_root / rel, data, private=rel == KEY_FILE)


def config_bytes(config: DeviceConfig) -> bytes:
    """``config.json`` as written to the device."""
    return (json.dumps(config.to_json(), indent=1) + "\n").encode()


def bundle_files(identity: KeyPair, server_ca_der: bytes, config: DeviceConfig) -> dict[str, bytes]:
    """The bundle's files (device path -> bytes), after checking the identity matches.

    Raises:
        BundleError: invalid thing name, or the certificate's subject is not CN=thing.
    """
    check_thing_name(config.thing_name)
    cn = identity.cert.subject.rfc4514_string()
    if cn != f"CN={config.thing_name}":
        raise BundleError(f"certificate subject {cn} does not match thing {config.thing_name}")
    return {
        CERT_FILE: identity.cert_der,
        KEY_FILE: identity.key_der,
        SERVER_CA_FILE: server_ca_der,
        CONFIG_FILE: config_bytes(config),
    }


def write_ota_pubkey(fs_root: Path, pubkey_der: bytes) -> None:
    """Write the OTA code-signing public key where the firmware looks for it.

    Raises:
        BundleError: not a P-256 SubjectPublicKeyInfo (91 bytes, uncompressed point).
    """
    if len(pubkey_der) != 91 or pubkey_der[26:27] != b"\x04":
        raise BundleError("the OTA signing key must be a P-256 SubjectPublicKeyInfo DER")
    _atomic_write(Path(fs_root) / OTA_PUBKEY_FILE, pubkey_der)


def atomic_write(path: Path, data: bytes, private: bool = False) -> None:
    """Write ``data`` to a temporary name and rename it over ``path``."""
    _atomic_write(path, data, private)


def _atomic_write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
