"""App #1 on any target (virtual kit or board), observed on the broker and in the shadow
service. The App #1 items are shown by the same checks ``thingkit validate`` runs
(host_tools/validate/checks.py), on this suite's kit, bench and observer."""

from __future__ import annotations

import json
import time

import pytest

from hil_tests.helpers import ping, reported, wait_connected
from host_tools.validate.checks import check_for
from host_tools.validate.cloud import BenchCloud
from host_tools.validate.engine import Session

pytestmark = pytest.mark.slow


def test_online_message_shadow_and_ping(bench, make_kit, observer, hil_target, tmp_path):
    kit = make_kit(bench)
    t0 = time.time()
    kit.power_on()
    acc = wait_connected(observer, kit.thing, True, 30, since=t0)
    assert acc is not None, kit.console()

    # The checks of thingkit validate, on this kit: each App #1 item met, with evidence.
    s = Session(hil_target, BenchCloud.of(bench), tmp_path, kit.thing, kit, observer, t0, acc)
    for item in ("app1.online_topic", "app1.shadow_online", "app1.subscribe"):
        got = {r.id: r for r in check_for(item).run(s)}
        assert got[item].status == "met", (got[item].evidence, kit.console())
        assert got[item].evidence

    status = observer.wait(
        lambda m: m.topic == f"thingkit/{kit.thing}/status" and not m.retain, 5, since=t0
    )
    doc = status.json()
    assert doc["state"] == "online" and doc["thing"] == kit.thing
    assert abs(doc["ts"] / 1000 - time.time()) < 60, "device timestamp is not NTP time"

    shadow = observer.shadow_get(kit.thing)
    rep = shadow["state"]["reported"]
    assert rep["connected"] is True
    assert rep["board"] == kit.board.id, "the kit reports another board than the target's"
    assert rep["boot"]["time_source"] == "ntp"

    pong = ping(observer, kit.thing)
    assert pong is not None, kit.console()
    assert pong.json()["thing"] == kit.thing


def test_ping_with_garbage_payload_is_answered_and_kit_survives(bench, make_kit, observer):
    kit = make_kit(bench)
    t0 = time.time()
    kit.power_on()
    assert wait_connected(observer, kit.thing, True, 30, since=t0), kit.console()
    t1 = observer.publish(f"thingkit/{kit.thing}/ping", b"\xff not json")
    pong = observer.wait(lambda m: m.topic == f"thingkit/{kit.thing}/pong", 5, since=t1)
    assert pong is not None and pong.json()["id"] is None
    assert ping(observer, kit.thing)


def test_shadow_offline_after_power_cut_and_online_after_reboot(bench, make_kit, observer):
    kit = make_kit(bench)
    t0 = time.time()
    kit.power_on()
    assert wait_connected(observer, kit.thing, True, 30, since=t0), kit.console()

    t_kill = time.time()
    kit.power_off()
    off = wait_connected(observer, kit.thing, False, 1.5 * 30, since=t_kill)
    assert off is not None, "shadow not offline within 1.5 x keepalive"
    assert observer.shadow_get(kit.thing)["state"]["reported"]["connected"] is False
    lwt = observer.find(
        lambda m: (
            m.topic == f"thingkit/{kit.thing}/status" and (m.json() or {}).get("state") == "offline"
        ),
        since=t_kill,
    )
    assert lwt is not None and lwt.json()["reason"] == "connection_lost"

    t_on = time.time()
    kit.power_on()
    assert wait_connected(observer, kit.thing, True, 30, since=t_on), kit.console()
    assert observer.shadow_get(kit.thing)["state"]["reported"]["connected"] is True


def test_settings_delta_applied_and_bad_value_refused(bench, make_kit, observer):
    kit = make_kit(bench)
    t0 = time.time()
    kit.power_on()
    assert wait_connected(observer, kit.thing, True, 30, since=t0), kit.console()

    acc_topic = f"$aws/things/{kit.thing}/shadow/update/accepted"
    t1 = time.time()
    observer.shadow_request(
        kit.thing, "update", {"state": {"desired": {"settings": {"log_level": "warn"}}}}
    )
    m = observer.wait(
        lambda m: (
            m.topic == acc_topic and reported(m).get("settings", {}).get("log_level") == "warn"
        ),
        5,
        since=t1,
    )
    assert m is not None, kit.console()

    t2 = time.time()
    observer.shadow_request(
        kit.thing, "update", {"state": {"desired": {"settings": {"log_level": "loud"}}}}
    )
    m = observer.wait(
        lambda m: (
            m.topic == acc_topic and reported(m).get("settings_rejected", {}).get("log_level")
        ),
        5,
        since=t2,
    )
    assert m is not None, kit.console()
    rep = reported(m)
    assert rep["settings"]["log_level"] == "warn", "device must keep its previous value"
    assert "must be one of" in rep["settings_rejected"]["log_level"]


def test_shadow_documents_survive_bench_restart(own_bench, make_kit):
    from host_tools.bench.observer import Observer

    kit = make_kit(own_bench)
    with Observer(own_bench) as obs:
        t0 = time.time()
        kit.power_on()
        assert wait_connected(obs, kit.thing, True, 30, since=t0), kit.console()
        before = obs.shadow_get(kit.thing)
    kit.power_off()
    own_bench.down()
    own_bench.up()
    with Observer(own_bench) as obs:
        after = obs.shadow_get(kit.thing)
    assert after is not None
    assert after["version"] >= before["version"]
    assert json.dumps(after["state"]["reported"]["settings"]) == json.dumps(
        before["state"]["reported"]["settings"]
    )
