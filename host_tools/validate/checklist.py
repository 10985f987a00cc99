"""Checklist items and their results (ids from shared/CHECKLISTS.md; never renamed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

TITLES = {
    "app1.online_topic": "App #1 publishes to a known topic that the device is online",
    "app1.shadow_online": "App #1 updates the thing shadow to say the device is online",
    "app1.subscribe": "App #1 subscribes to a topic and shows that the subscription works",
    "hw.tls12": "The device talks to the cloud over TLS 1.2",
    "hw.cert_auth": "The device authenticates with an X.509 client certificate",
    "hw.no_hardcoded_urls": "No hard-coded URLs or endpoints in the firmware",
    "lens.time_before_connect": "Time synchronised by NTP before the first TLS connect",
    "lens.shadow_sync": "Device state is synchronised with the shadow on every connect",
    "lens.offline_state": "The shadow shows the device offline after an unclean disconnect",
    "lens.store_forward": "Data taken while offline is kept and sent after reconnecting",
    "lens.signed_updates": "Updates are signed and checked on the device",
    "lens.rollback": "A failed update returns to the previous firmware",
    "lens.staged_rollout": "Updates roll out to a small group first, with abort criteria",
    "lens.config_via_shadow": "Configuration changes arrive through the shadow",
    "lens.diagnostics": "The device reports health data",
    "lens.timestamps": "Every published message carries a device timestamp",
}

MET = "met"
NOT_MET = "not_met"


@dataclass
class Result:
    id: str
    status: str
    evidence: list[str] = field(default_factory=list)
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or TITLES.get(self.id, self.id)

    def to_json(self) -> dict:
        d = asdict(self)
        return {
            "id": d["id"],
            "title": d["title"],
            "status": d["status"],
            "evidence": d["evidence"],
        }


def met(item: str, *evidence: str) -> Result:
    return Result(item, MET, list(evidence))


def not_met(item: str, *evidence: str) -> Result:
    return Result(item, NOT_MET, list(evidence))
