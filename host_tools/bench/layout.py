"""Files of one bench, all under one directory, and its saved run state."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

# Service identities use a '.' so they can never collide with a thing name.
SERVICES_CN = "bench.services"
OPERATOR_CN = "bench.operator"


@dataclass(frozen=True)
class BenchLayout:
    """Paths of a bench rooted at ``root``."""

    root: Path

    @property
    def server_ca(self) -> Path:
        """CA standing in for Amazon Root CA: signs the broker and the bench's own clients."""
        return self.root / "server-ca"

    @property
    def fleet_ca(self) -> Path:
        """The device CA (provisioning's): signs the things' certificates."""
        return self.root / "fleet-ca"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    def identity(self, cn: str) -> tuple[Path, Path]:
        """(cert PEM, key PEM) of a bench identity (broker or a service client)."""
        return self.pki / f"{cn}.crt", self.pki / f"{cn}.key"

    @property
    def client_cafile(self) -> Path:
        """Every CA whose client certificates the broker accepts."""
        return self.pki / "client-cas.pem"

    @property
    def server_ca_pem(self) -> Path:
        return self.pki / "server-ca.pem"

    @property
    def server_ca_der(self) -> Path:
        return self.pki / "server-ca.der"

    @property
    def mosquitto_conf(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def acl(self) -> Path:
        return self.root / "acl"

    @property
    def registry(self) -> Path:
        """Things registered on the bench (the ACL is generated from it)."""
        return self.root / "things.json"

    @property
    def shadows(self) -> Path:
        return self.root / "shadows"

    @property
    def jobs(self) -> Path:
        """Jobs service state: one JSON file per job."""
        return self.root / "jobs"

    @property
    def streams(self) -> Path:
        """MQTT file delivery: one JSON record per stream plus its files."""
        return self.root / "streams"

    @property
    def groups(self) -> Path:
        """Static thing groups (job targets): ``{"groups": {name: [things]}}``."""
        return self.root / "groups.json"

    @property
    def claims(self) -> Path:
        """Claim batches (fleet provisioning by claim): claim identity, allow-list."""
        return self.root / "claims.json"

    @property
    def fleet_provisioning(self) -> Path:
        """The provisioning service's records: events (JSON lines) and ownership tokens."""
        return self.root / "fleet-provisioning"

    @property
    def ntp_control(self) -> Path:
        return self.root / "ntp.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def broker_log(self) -> Path:
        return self.logs / "mosquitto.log"

    @property
    def services_log(self) -> Path:
        return self.logs / "services.log"

    @property
    def ntp_log(self) -> Path:
        return self.logs / "ntp.log"

    @property
    def state_file(self) -> Path:
        return self.root / "bench.json"

    def read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def write_state(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.state_file)
