"""The one catalogue of checklist items: ids (the partner checklist, docs/checklist.rst), sections and titles.

``thingkit validate`` (:mod:`host_tools.validate`) and the HIL suite's report
(:mod:`hil_tests.plugin.checklist`, a view on this module) both take their items from
here, so every report says the same thing about the same item. Ids are never renamed or
reused; titles are short forms of the requirement. ``app2.<component>`` is one item per
component of the board under test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

APP1 = "App #1 (AWS IoT hardware kit checklist)"
APP2 = "App #2 (AWS IoT hardware kit checklist)"
APPENDIX_B = "Appendix B: hardware best practices"
LENS = "Well-Architected IoT Lens practices"
SECTIONS = (APP1, APP2, APPENDIX_B, LENS)


@dataclass(frozen=True)
class Item:
    """One checklist item: its id, the section it belongs to and its title."""

    id: str
    section: str
    title: str


def _items(section: str, *pairs: tuple[str, str]) -> dict[str, Item]:
    return {i: Item(i, section, t) for i, t in pairs}


# Checklist order: App #1, (App #2 per component), Appendix B, Lens.
ITEMS: dict[str, Item] = {
    **_items(
        APP1,
        ("app1.online_topic", "App #1 publishes to a known topic that the device is online"),
        ("app1.shadow_online", "App #1 updates the thing shadow to say the device is online"),
        ("app1.subscribe", "App #1 subscribes to a topic and shows that the subscription works"),
    ),
    **_items(
        APPENDIX_B,
        ("hw.tls12", "The device talks to the cloud over TLS 1.2"),
        ("hw.cert_auth", "The device authenticates with an X.509 client certificate"),
        ("hw.unique_cert", "No certificate is used by more than one device"),
        (
            "hw.cert_only_credentials",
            "The device cannot be configured with credentials other than TLS certificates",
        ),
        ("hw.no_hardcoded_credentials", "No credentials in code or firmware images"),
        ("hw.no_hardcoded_urls", "No hard-coded URLs or endpoints in the firmware"),
        ("hw.no_url_shorteners", "No shortened URLs on domains the project lacks"),
        ("hw.no_cognito_config", "No hard-coded Cognito configuration"),
        ("hw.mqtt_not_rest", "Data is published over MQTT, not the REST API"),
        ("hw.shadow_validated", "The device's use of the thing shadow passes validation"),
        ("hw.doc_urls_configurable", "Documentation URLs can be changed in one place"),
        ("hw.docs_formats", "Documentation ships as PDF, single- and multi-page HTML"),
        ("hw.features_listed", "The documentation lists the AWS IoT features supported"),
    ),
    **_items(
        LENS,
        ("lens.time_before_connect", "Time synchronised by NTP before the first TLS connect"),
        ("lens.backoff_jitter", "Reconnects use exponential backoff with jitter"),
        ("lens.shadow_sync", "Device state is synchronised with the shadow on every connect"),
        ("lens.offline_state", "The shadow shows the device offline after an unclean disconnect"),
        ("lens.store_forward", "Data taken while offline is kept and sent after reconnecting"),
        ("lens.least_privilege", "A device may use only its own topics, shadow and jobs"),
        ("lens.signed_updates", "Updates are signed and checked on the device"),
        ("lens.rollback", "A failed update returns to the previous firmware"),
        ("lens.staged_rollout", "Updates roll out to a small group first, with abort criteria"),
        ("lens.config_via_shadow", "Configuration changes arrive through the shadow"),
        ("lens.diagnostics", "The device reports health data"),
        ("lens.timestamps", "Every published message carries a device timestamp"),
        ("lens.cert_lifecycle", "Certificates can be revoked and rotated"),
    ),
}

# Items a HIL test cannot show: audits of documents and images (thingkit validate and
# the docs audit cover them). The HIL summary says so instead of "no test".
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


def component_label(comp: dict) -> str:
    """How a board component is named in App #2 titles: ``env (i2c_sensor, bme280)``."""
    return f"{comp['id']} ({comp.get('kind')}, {comp.get('driver')})"


def item(item_id: str, components: dict[str, str] | None = None) -> Item:
    """The catalogue entry for ``item_id``.

    Args:
        item_id: an id of docs/checklist.rst, or ``app2.<component>``.
        components: component id -> label (:func:`component_label`), for App #2 titles.

    Raises:
        KeyError: an unknown id (a typo in a marker must not pass silently).
    """
    if _APP2_RX.fullmatch(item_id):
        comp = item_id.split(".", 1)[1]
        what = (components or {}).get(comp, comp)
        return Item(item_id, APP2, f"App #2 publishes the readings of {what} at a fixed interval")
    return ITEMS[item_id]


def title(item_id: str, components: dict[str, str] | None = None) -> str:
    """The title of ``item_id``; an id outside the catalogue is its own title."""
    return item(item_id, components).title if is_known(item_id) else item_id


def is_known(item_id: str) -> bool:
    return item_id == APP2_ALL or item_id in ITEMS or bool(_APP2_RX.fullmatch(item_id))


def catalogue(components: dict[str, str] | None = None) -> list[Item]:
    """Every item, App #2 expanded to the given components, in checklist order."""
    out = [it for i, it in ITEMS.items() if i.startswith("app1.")]
    out += [item(f"app2.{c}", components) for c in (components or {})]
    out += [it for i, it in ITEMS.items() if not i.startswith("app1.")]
    return out


def order(item_id: str) -> tuple[int, int, str]:
    """Sort key: checklist order, App #2 items right after App #1, unknown ids last."""
    ids = list(ITEMS)
    if item_id.startswith("app2."):
        return (ids.index("app1.subscribe"), 1, item_id)
    return (ids.index(item_id) if item_id in ids else len(ids), 0, item_id)
