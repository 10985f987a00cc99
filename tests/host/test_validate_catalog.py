"""One checklist catalogue: ``thingkit validate`` and the HIL suite take their items and
titles from host_tools.checklist.catalog, and no title is written anywhere else."""

from __future__ import annotations

import ast
from pathlib import Path

from hil_tests.plugin import checklist as hil_checklist
from hil_tests.plugin import mapping
from host_tools.checklist import catalog
from host_tools.paths import REPO
from host_tools.validate import checklist as val_checklist
from host_tools.validate.checks import CHECKS


def test_validate_and_hil_use_the_same_objects() -> None:
    assert hil_checklist.item is catalog.item
    assert hil_checklist.catalogue is catalog.catalogue
    assert hil_checklist.NOT_HIL is catalog.NOT_HIL
    comps = {"env": "env (i2c_sensor, bme280)"}
    hil_items = hil_checklist.catalogue(comps)
    assert [it.id for it in hil_items][:4] == [
        "app1.online_topic",
        "app1.shadow_online",
        "app1.subscribe",
        "app2.env",
    ]
    for it in hil_items:
        if not it.id.startswith("app2."):
            assert it is catalog.ITEMS[it.id]  # the very object, not a copy
            assert val_checklist.TITLES[it.id] is it.title
            assert val_checklist.met(it.id).title is it.title


def test_every_id_used_is_in_the_catalogue() -> None:
    assert mapping.unknown_ids() == []
    for check in CHECKS:
        for i in check.items:
            assert catalog.is_known(i), (check.name, i)
    # every item validate shows has its title from the catalogue
    shown = {i for c in CHECKS for i in c.items if i != catalog.APP2_ALL}
    assert shown <= set(catalog.ITEMS)


def _string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def test_no_title_is_defined_twice() -> None:
    titles = {it.title for it in catalog.ITEMS.values()}
    assert len(titles) == len(catalog.ITEMS), "two items share a title"
    where: dict[str, list[str]] = {}
    for top in ("host_tools", "hil_tests"):
        for path in sorted((REPO / top).rglob("*.py")):
            for s in _string_constants(path):
                if s in titles:
                    where.setdefault(s, []).append(str(path.relative_to(REPO)))
    elsewhere = {t: f for t, f in where.items() if f != ["host_tools/checklist/catalog.py"]}
    assert elsewhere == {}
    assert set(where) == titles  # each title is written once, in the catalogue


def test_order_puts_app2_after_app1_and_unknown_last() -> None:
    ids = [
        "lens.timestamps",
        "x.unknown",
        "app2.env",
        "hw.tls12",
        "app1.subscribe",
        "app1.online_topic",
    ]
    assert sorted(ids, key=catalog.order) == [
        "app1.online_topic",
        "app1.subscribe",
        "app2.env",
        "hw.tls12",
        "lens.timestamps",
        "x.unknown",
    ]
