"""Checklist items and needs of HIL tests that do not carry markers themselves.

A test file may say it all with markers::

    @pytest.mark.checklist("app1.subscribe")
    @pytest.mark.capability("virtual_kit")       # uses kit.flash, kit.set_hw, ...
    @pytest.mark.board_feature("bme280")

For tests written before the markers existed, this table says the same thing, keyed by
``file::function``. A test's own markers win: an entry here only fills in what the test
does not declare. Entries for tests that no longer exist are ignored.

``app2.*`` stands for one ``app2.<component>`` item per component of the board under
test. Ids and titles come from the one catalogue, :mod:`host_tools.checklist.catalog`
(:func:`unknown_ids` lists any this table names that it lacks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from host_tools.checklist.catalog import is_known


@dataclass(frozen=True)
class Needs:
    checklist: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    why: str = ""  # why the capability is needed, shown in the skip reason
    features: tuple[str, ...] = field(default=())


TABLE: dict[str, Needs] = {
    # test_app1.py
    "test_app1.py::test_online_message_shadow_and_ping": Needs(
        ("app1.online_topic", "app1.shadow_online", "app1.subscribe", "lens.timestamps")
    ),
    "test_app1.py::test_ping_with_garbage_payload_is_answered_and_kit_survives": Needs(
        ("app1.subscribe",)
    ),
    "test_app1.py::test_shadow_offline_after_power_cut_and_online_after_reboot": Needs(
        ("lens.offline_state", "app1.shadow_online"), ("power_cut",), "cuts the power"
    ),
    "test_app1.py::test_settings_delta_applied_and_bad_value_refused": Needs(
        ("lens.config_via_shadow", "hw.shadow_validated")
    ),
    # test_bad_input.py
    "test_bad_input.py::test_bad_config_idles_with_clear_error_then_recovers": Needs(
        ("hw.cert_only_credentials",),
        ("virtual_kit", "live_fs"),
        "edits config.json in the kit's flash directory while it runs",
    ),
    "test_bad_input.py::test_unparsable_config_is_reported": Needs(
        (), ("virtual_kit",), "writes the kit's flash directory"
    ),
    "test_bad_input.py::test_corrupt_certificate_keeps_retrying_without_crash": Needs(
        (), ("virtual_kit",), "writes the kit's flash directory"
    ),
    # test_isolation.py
    "test_isolation.py::test_thing_cannot_reach_another_things_topics": Needs(
        ("lens.least_privilege",), ("virtual_kit",), "reads the kit's flash directory"
    ),
    # test_time_and_backoff.py
    "test_time_and_backoff.py::test_no_tls_before_ntp_then_connects_once_ntp_answers": Needs(
        ("lens.time_before_connect",), ("power_cut",), "needs a cold start (RTC at 2000)"
    ),
    "test_time_and_backoff.py::test_ntp_skew_sets_device_clock": Needs(
        ("lens.time_before_connect",)
    ),
    "test_time_and_backoff.py::test_retry_delays_grow_capped_and_jittered": Needs(
        ("lens.backoff_jitter",)
    ),
    "test_time_and_backoff.py::test_person_sets_clock_when_ntp_is_down": Needs(
        ("lens.time_before_connect",),
        ("virtual_kit", "rtc_set"),
        "sets the RTC while the firmware runs",
    ),
    # test_app2.py
    "test_app2.py::test_readings_follow_the_hardware": Needs(
        ("app2.*",), ("sim_hw",), "drives the simulated sensors"
    ),
    "test_app2.py::test_unplugged_sensor_is_an_error_while_others_go_on": Needs(
        (), ("sim_hw",), "unplugs a simulated sensor"
    ),
    "test_app2.py::test_interval_and_components_through_the_shadow": Needs(
        ("lens.config_via_shadow", "lens.timestamps")
    ),
    "test_app2.py::test_diagnostics_published_and_kept_in_named_shadow": Needs(
        ("lens.diagnostics",), ("virtual_kit",), "compares with the sim's heap cap"
    ),
    "test_app2.py::test_app2_survives_many_intervals_in_its_heap": Needs(("app2.*",)),
}


def unknown_ids() -> list[str]:
    """Checklist ids in :data:`TABLE` that the catalogue does not know (should be none)."""
    return sorted({i for n in TABLE.values() for i in n.checklist if not is_known(i)})


def lookup(nodeid: str) -> Needs | None:
    """The entry for a test node id (``hil_tests/test_x.py::test_y[param]``), if any."""
    path, _, name = nodeid.partition("::")
    key = f"{path.rsplit('/', 1)[-1]}::{name.split('[', 1)[0]}"
    return TABLE.get(key)
