"""The checklist items a HIL test can show, with the ids of shared/CHECKLISTS.md.

Ids are never renamed or reused; titles are short forms of the requirement. ``app2.<c>``
is one item per component of the board under test. Titles the validator already has come
from :mod:`host_tools.validate.checklist`, so both reports say the same thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from host_tools.validate.checklist import TITLES as _VALIDATE_TITLES

APP1 = "App #1 (AWS IoT hardware kit checklist)"
APP2 = "App #2 (AWS IoT hardware kit checklist)"
APPENDIX_B = "Appendix B: hardware best practices"
LENS = "Well-Architected IoT Lens practices"
SECTIONS = (APP1, APP2, APPENDIX_B, LENS)

_ITEMS: dict[str, tuple[str, str]] = {
    "app1.online_topic": (APP1, "App #1 publishes to a known topic that the device is online"),
    "app1.shadow_online": (APP1, "App #1 updates the thing shadow to say the device is online"),
    "app1.subscribe": (APP1, "App #1 subscribes to a topic and shows the subscription works"),
    "hw.tls12": (APPENDIX_B, "The device talks to the cloud over TLS 1.2"),
    "hw.cert_auth": (APPENDIX_B, "The device authenticates with an X.509 client certificate"),
    "hw.unique_cert": (APPENDIX_B, "No certificate is used by more than one device"),
    "hw.cert_only_credentials": (
        APPENDIX_B,
        "The device cannot be configured with credentials other than TLS certificates",
    ),
    "hw.no_hardcoded_credentials": (APPENDIX_B, "No credentials in code or firmware images"),
    "hw.no_hardcoded_urls": (APPENDIX_B, "No hard-coded URLs or endpoints"),
    "hw.no_url_shorteners": (APPENDIX_B, "No shortened URLs on domains the project lacks"),
    "hw.no_cognito_config": (APPENDIX_B, "No hard-coded Cognito configuration"),
    "hw.mqtt_not_rest": (APPENDIX_B, "Data is published over MQTT, not the REST API"),
    "hw.shadow_validated": (APPENDIX_B, "The device's use of the thing shadow passes validation"),
    "hw.doc_urls_configurable": (APPENDIX_B, "Documentation URLs can be changed in one place"),
    "hw.docs_formats": (APPENDIX_B, "Documentation ships as PDF, single- and multi-page HTML"),
    "hw.features_listed": (APPENDIX_B, "The documentation lists the AWS IoT features supported"),
    "lens.time_before_connect": (LENS, "Time synchronised by NTP before the first TLS connect"),
    "lens.backoff_jitter": (LENS, "Reconnects use exponential backoff with jitter"),
    "lens.shadow_sync": (LENS, "Device state is synchronised with the shadow on every connect"),
    "lens.offline_state": (LENS, "The shadow shows the device offline after an unclean drop"),
    "lens.store_forward": (LENS, "Data taken while offline is kept and sent after reconnecting"),
    "lens.least_privilege": (LENS, "A device may use only its own topics, shadow and jobs"),
    "lens.signed_updates": (LENS, "Updates are signed and checked on the device"),
    "lens.rollback": (LENS, "A failed update returns to the previous firmware"),
    "lens.staged_rollout": (LENS, "Updates roll out to a small group first"),
    "lens.config_via_shadow": (LENS, "Configuration changes arrive through the shadow"),
    "lens.diagnostics": (LENS, "The device reports health data"),
    "lens.timestamps": (LENS, "Every published message carries a device timestamp"),
    "lens.cert_lifecycle": (LENS, "Certificates can be revoked and rotated"),
}

# Items HIL tests cannot show: they are audits of documents and images (thingkit validate
# and the docs audit cover them). The summary says so instead of "no test".
NOT_HIL = {
    "hw.no_hardcoded_credentials": "static scan of the firmware image (thingkit validate)",
    "hw.no_hardcoded_urls": "static scan of the firmware image (thingkit validate)",
    "hw.no_url_shorteners": "documentation and image audit",
    "hw.no_cognito_config": "static scan of the firmware image",
    "hw.doc_urls_configurable": "documentation audit",
    "hw.docs_formats": "documentation build",
    "hw.features_listed": "documentation audit",
}

_APP2_RX = re.compile(r"app2\.[a-z0-9_]{1,32}")
APP2_ALL = "app2.*"


@dataclass(frozen=True)
class Item:
    id: str
    section: str
    title: str


def item(item_id: str, components: dict[str, str] | None = None) -> Item:
    """The catalogue entry for ``item_id``.

    Args:
        item_id: an id of shared/CHECKLISTS.md, or ``app2.<component>``.
        components: component id -> description, for app2 titles.

    Raises:
        KeyError: an unknown id (a typo in a marker must not pass silently).
    """
    if _APP2_RX.fullmatch(item_id):
        comp = item_id.split(".", 1)[1]
        what = (components or {}).get(comp, comp)
        return Item(item_id, APP2, f"App #2 publishes the readings of {what} at a fixed interval")
    section, title = _ITEMS[item_id]
    return Item(item_id, section, _VALIDATE_TITLES.get(item_id, title))


def is_known(item_id: str) -> bool:
    return item_id == APP2_ALL or item_id in _ITEMS or bool(_APP2_RX.fullmatch(item_id))


def catalogue(components: dict[str, str] | None = None) -> list[Item]:
    """Every item, App #2 expanded to the given components, in checklist order."""
    out = [item(i) for i in _ITEMS if i.startswith("app1.")]
    out += [item(f"app2.{c}", components) for c in (components or {})]
    out += [item(i) for i in _ITEMS if not i.startswith("app1.")]
    return out
