"""Tests for the Device Shadow emulation's pure logic (no MQTT)."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import threading
from typing import Any

import pytest

from host_tools.bench import shadow_doc
from host_tools.bench.shadow_engine import (
    MAX_STATE_BYTES,
    ShadowEngine,
    parse_request_topic,
    reply_topic,
)

T0 = 1_700_000_000


class Clock:
    """A settable clock returning fractional epoch seconds."""

    def __init__(self, now: float = T0 + 0.75) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(clock: Clock) -> ShadowEngine:
    return ShadowEngine(clock=clock)


def req(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def update(engine: ShadowEngine, doc: Any, thing: str = "T", shadow: str | None = None):
    return engine.handle(thing, shadow, "update", doc if isinstance(doc, bytes) else req(doc))


def replies(result: list[tuple[str, dict]]) -> dict[str, dict]:
    return dict(result)


def suffixes(result: list[tuple[str, dict]]) -> list[str]:
    return [suffix for suffix, _ in result]


def rejected(result: list[tuple[str, dict]], op: str = "update") -> dict:
    assert suffixes(result) == [f"{op}/rejected"], result
    return result[0][1]


# --- topics -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("$aws/things/T/shadow/update", ("T", None, "update")),
        ("$aws/things/T/shadow/get", ("T", None, "get")),
        ("$aws/things/T/shadow/delete", ("T", None, "delete")),
        ("$aws/things/T/shadow/name/S/get", ("T", "S", "get")),
        (
            "$aws/things/my:thing_1-a/shadow/name/cfg:v2_x-y/update",
            ("my:thing_1-a", "cfg:v2_x-y", "update"),
        ),
        ("$aws/things/name/shadow/update", ("name", None, "update")),
    ],
)
def test_parse_request_topic_accepts_requests(topic: str, expected: tuple) -> None:
    assert parse_request_topic(topic) == expected


@pytest.mark.parametrize(
    "topic",
    [
        "$aws/things/T/shadow/update/accepted",
        "$aws/things/T/shadow/update/delta",
        "$aws/things/T/shadow/name/S/get/rejected",
        "$aws/things/T/shadow/list",
        "$aws/things/T/shadow/name/S",
        "$aws/things/T/jobs/get",
        "things/T/shadow/update",
        "$aws/things//shadow/update",
        "$aws/things/T/shadow/name//update",
        "$aws/things/bad name/shadow/update",
        "$aws/things/bad.name/shadow/update",
        "$aws/things/T/shadow/name/bad~name/update",
        f"$aws/things/{'x' * 129}/shadow/update",
        f"$aws/things/T/shadow/name/{'s' * 65}/update",
    ],
)
def test_parse_request_topic_rejects_other_topics(topic: str) -> None:
    assert parse_request_topic(topic) is None


def test_name_length_limits() -> None:
    assert parse_request_topic(f"$aws/things/{'x' * 128}/shadow/get") is not None
    assert parse_request_topic(f"$aws/things/T/shadow/name/{'s' * 64}/get") is not None


def test_reply_topic() -> None:
    assert reply_topic("T", None, "update/delta") == "$aws/things/T/shadow/update/delta"
    assert reply_topic("T", "S", "get/rejected") == "$aws/things/T/shadow/name/S/get/rejected"


def test_handle_refuses_unknown_op_and_bad_names(engine: ShadowEngine) -> None:
    with pytest.raises(ValueError):
        engine.handle("T", None, "list", b"")
    with pytest.raises(ValueError):
        engine.handle("bad name", None, "get", b"")
    with pytest.raises(ValueError):
        engine.handle("T", "", "get", b"")


# --- get / create ---------------------------------------------------------------------------


def test_get_missing_classic_shadow_is_404(engine: ShadowEngine) -> None:
    error = rejected(engine.handle("T", None, "get", b""), "get")
    assert error == {"code": 404, "message": "No shadow exists with name: 'T'", "timestamp": T0}


def test_get_missing_named_shadow_is_404(engine: ShadowEngine) -> None:
    error = rejected(engine.handle("T", "cfg", "get", req({"clientToken": "c1"})), "get")
    assert error["code"] == 404
    assert error["message"] == "No shadow exists with name: 'T~cfg'"
    assert error["clientToken"] == "c1"


def test_first_update_creates_shadow(engine: ShadowEngine) -> None:
    result = update(engine, {"state": {"reported": {"color": "red", "n": 1}}})
    assert suffixes(result) == ["update/accepted", "update/documents"]
    accepted = result[0][1]
    assert accepted == {
        "state": {"reported": {"color": "red", "n": 1}},
        "metadata": {"reported": {"color": {"timestamp": T0}, "n": {"timestamp": T0}}},
        "version": 1,
        "timestamp": T0,
    }
    documents = result[1][1]
    assert "previous" not in documents
    assert documents["current"] == {
        "state": {"reported": {"color": "red", "n": 1}},
        "metadata": {"reported": {"color": {"timestamp": T0}, "n": {"timestamp": T0}}},
        "version": 1,
    }
    assert documents["timestamp"] == T0


def test_get_returns_full_document_with_delta(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"color": "green", "engine": "ON"}}})
    update(engine, {"state": {"desired": {"color": "RED", "state": "STOP"}}})
    doc = replies(engine.handle("T", None, "get", b""))["get/accepted"]
    assert doc["state"] == {
        "desired": {"color": "RED", "state": "STOP"},
        "reported": {"color": "green", "engine": "ON"},
        "delta": {"color": "RED", "state": "STOP"},
    }
    assert set(doc["metadata"]) == {"desired", "reported"}
    assert doc["version"] == 2
    assert doc["timestamp"] == T0
    assert "clientToken" not in doc


def test_get_without_delta_when_in_sync(engine: ShadowEngine) -> None:
    update(engine, {"state": {"desired": {"a": 1}, "reported": {"a": 1}}})
    doc = replies(engine.handle("T", None, "get", b""))["get/accepted"]
    assert "delta" not in doc["state"]


def test_get_accepts_garbage_or_empty_body(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"a": 1}}})
    assert suffixes(engine.handle("T", None, "get", b"not json")) == ["get/accepted"]
    assert suffixes(engine.handle("T", None, "get", b"\xff")) == ["get/accepted"]


def test_get_uses_current_clock(engine: ShadowEngine, clock: Clock) -> None:
    update(engine, {"state": {"reported": {"a": 1}}})
    clock.now = T0 + 50.9
    doc = replies(engine.handle("T", None, "get", b""))["get/accepted"]
    assert doc["timestamp"] == T0 + 50
    assert doc["metadata"]["reported"]["a"] == {"timestamp": T0}


# --- client token ----------------------------------------------------------------------------


def test_client_token_is_echoed_everywhere(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"a": 1}}})
    result = update(engine, {"state": {"desired": {"a": 2}}, "clientToken": "tok"})
    assert suffixes(result) == ["update/accepted", "update/delta", "update/documents"]
    assert all(doc["clientToken"] == "tok" for _, doc in result)
    got = replies(engine.handle("T", None, "get", req({"clientToken": "g"})))
    assert got["get/accepted"]["clientToken"] == "g"
    conflict = rejected(
        update(engine, {"state": {"reported": {}}, "version": 99, "clientToken": "v"})
    )
    assert conflict["clientToken"] == "v"
    deleted = replies(engine.handle("T", None, "delete", req({"clientToken": "d"})))
    assert deleted["delete/accepted"]["clientToken"] == "d"


def test_client_token_limit_is_64_bytes(engine: ShadowEngine) -> None:
    assert suffixes(update(engine, {"state": {}, "clientToken": "a" * 64}))[0] == "update/accepted"
    error = rejected(update(engine, {"state": {}, "clientToken": "a" * 65}))
    assert error == {"code": 400, "message": "Invalid clientToken", "timestamp": T0}


def test_client_token_limit_counts_utf8_bytes(engine: ShadowEngine) -> None:
    assert (
        suffixes(update(engine, {"state": {}, "clientToken": "€" * 21 + "a"}))[0]
        == "update/accepted"
    )
    assert (
        rejected(update(engine, {"state": {}, "clientToken": "€" * 22}))["message"]
        == "Invalid clientToken"
    )


def test_client_token_must_be_a_string(engine: ShadowEngine) -> None:
    assert (
        rejected(update(engine, {"state": {}, "clientToken": 5}))["message"]
        == "Invalid clientToken"
    )


def test_get_with_too_long_client_token_is_rejected(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"a": 1}}})
    error = rejected(engine.handle("T", None, "get", req({"clientToken": "x" * 65})), "get")
    assert (error["code"], error["message"]) == (400, "Invalid clientToken")


# --- request validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"{'state': {}}", b"[1, 2]", b'"state"', b'{"state":{"reported":{"a":NaN}}}'],
)
def test_invalid_json(engine: ShadowEngine, payload: bytes) -> None:
    error = rejected(update(engine, payload))
    assert (error["code"], error["message"]) == (400, "Invalid JSON")
    assert error["timestamp"] == T0


def test_payload_not_utf8_is_415(engine: ShadowEngine) -> None:
    error = rejected(update(engine, b'{"state":{"reported":{"a":"\xff\xfe"}}}'))
    assert error["code"] == 415
    assert error["message"].startswith("Unsupported documented encoding")


def test_missing_state(engine: ShadowEngine) -> None:
    error = rejected(update(engine, {"reported": {"a": 1}, "clientToken": "t"}))
    assert error == {
        "code": 400,
        "message": "Missing required node: state",
        "timestamp": T0,
        "clientToken": "t",
    }


@pytest.mark.parametrize("state", [[], "on", 3, True])
def test_state_must_be_object(engine: ShadowEngine, state: Any) -> None:
    error = rejected(update(engine, {"state": state}))
    assert (error["code"], error["message"]) == (400, "State node must be an object")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("desired", "Desired node must be an object"),
        ("reported", "Reported node must be an object"),
    ],
)
@pytest.mark.parametrize("value", [[1], "x", 0, False])
def test_sections_must_be_objects(
    engine: ShadowEngine, section: str, message: str, value: Any
) -> None:
    error = rejected(update(engine, {"state": {section: value}}))
    assert (error["code"], error["message"]) == (400, message)


def test_state_with_unknown_node_is_rejected(engine: ShadowEngine) -> None:
    error = rejected(update(engine, {"state": {"delta": {"a": 1}}}))
    assert error["code"] == 400
    assert error["message"] == "State contains an invalid node: 'delta'"


@pytest.mark.parametrize("version", ["1", -1, 1.5, True, [1]])
def test_invalid_version(engine: ShadowEngine, version: Any) -> None:
    error = rejected(update(engine, {"state": {"reported": {"a": 1}}, "version": version}))
    assert (error["code"], error["message"]) == (400, "Invalid version")


def nest(levels: int, leaf: Any = 1) -> dict:
    """An object nested ``levels`` deep, counting itself: nest(1) == {"k1": 1}."""
    value: Any = leaf
    for level in range(levels, 0, -1):
        value = {f"k{level}": value}
    return value


@pytest.mark.parametrize("section", ["desired", "reported"])
def test_nesting_depth_six_is_accepted(engine: ShadowEngine, section: str) -> None:
    assert shadow_doc.nesting_depth(nest(6)) == 6
    assert suffixes(update(engine, {"state": {section: nest(6)}}))[0] == "update/accepted"


@pytest.mark.parametrize("section", ["desired", "reported"])
def test_nesting_depth_seven_is_rejected(engine: ShadowEngine, section: str) -> None:
    error = rejected(update(engine, {"state": {section: nest(7)}}))
    assert (error["code"], error["message"]) == (
        400,
        "JSON contains too many levels of nesting; maximum is 6",
    )
    assert engine.document("T") is None


def test_arrays_count_as_nesting_levels(engine: ShadowEngine) -> None:
    assert (
        suffixes(update(engine, {"state": {"reported": nest(5, [1, 2])}}))[0] == "update/accepted"
    )
    assert rejected(update(engine, {"state": {"reported": nest(6, [1])}}))["code"] == 400


@pytest.mark.parametrize("array", [[None, "RED"], ["RED", [1, None]], [{"a": [None]}]])
def test_arrays_may_not_hold_null(engine: ShadowEngine, array: list) -> None:
    error = rejected(update(engine, {"state": {"desired": {"colors": array}}}))
    assert error["code"] == 400
    assert engine.document("T") is None


def test_null_inside_object_inside_array_is_allowed(engine: ShadowEngine) -> None:
    assert (
        suffixes(update(engine, {"state": {"reported": {"list": [{"a": None}]}}}))[0]
        == "update/accepted"
    )


# --- size limit -------------------------------------------------------------------------------


def padded(section_bytes: int) -> dict:
    """A section whose compact JSON is exactly ``section_bytes`` long."""
    overhead = len('{"p":""}')
    return {"p": "x" * (section_bytes - overhead)}


def test_state_of_exactly_8_kb_is_accepted(engine: ShadowEngine) -> None:
    result = update(engine, {"state": {"desired": padded(4096), "reported": padded(4096)}})
    assert suffixes(result)[0] == "update/accepted"


def test_desired_plus_reported_over_8_kb_is_413(engine: ShadowEngine) -> None:
    error = rejected(update(engine, {"state": {"desired": padded(4096), "reported": padded(4097)}}))
    assert error == {
        "code": 413,
        "message": "The payload exceeds the maximum size allowed",
        "timestamp": T0,
    }


def test_size_limit_applies_to_merged_document(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": padded(MAX_STATE_BYTES - 100)}})
    error = rejected(
        update(engine, {"state": {"desired": {"extra": "y" * 200}}, "clientToken": "s"})
    )
    assert (error["code"], error["clientToken"]) == (413, "s")
    assert engine.document("T")["version"] == 1
    assert "desired" not in engine.document("T")["state"]


def test_metadata_does_not_count_towards_size(engine: ShadowEngine) -> None:
    many = {f"k{i:04d}": 1 for i in range(900)}  # 9 KB of state
    assert rejected(update(engine, {"state": {"reported": many}}))["code"] == 413
    small = {f"k{i:04d}": 1 for i in range(600)}  # 6 KB of state, ~20 KB of metadata
    assert suffixes(update(engine, {"state": {"reported": small}}))[0] == "update/accepted"


def test_non_ascii_is_measured_in_utf8_bytes(engine: ShadowEngine) -> None:
    text = "€" * 2731  # 8193 bytes of UTF-8, 2731 characters
    assert rejected(update(engine, {"state": {"reported": {"t": text}}}))["code"] == 413


# --- versions ---------------------------------------------------------------------------------


def test_every_accepted_update_increments_version(engine: ShadowEngine) -> None:
    versions = [
        replies(update(engine, {"state": {"reported": {"a": 1}}}))["update/accepted"]["version"]
        for _ in range(3)
    ]
    assert versions == [1, 2, 3]


def test_update_without_changes_is_accepted_and_refreshes_timestamps(
    engine: ShadowEngine, clock: Clock
) -> None:
    update(engine, {"state": {"reported": {"a": 1, "b": 2}}})
    clock.now = T0 + 10
    result = replies(update(engine, {"state": {"reported": {"a": 1}}}))
    assert result["update/accepted"]["version"] == 2
    meta = engine.document("T")["metadata"]["reported"]
    assert meta == {"a": {"timestamp": T0 + 10}, "b": {"timestamp": T0}}
    assert (
        result["update/documents"]["previous"]["state"]
        == result["update/documents"]["current"]["state"]
    )


def test_empty_state_is_accepted_and_increments_version(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"a": 1}}})
    accepted = replies(update(engine, {"state": {}}))["update/accepted"]
    assert accepted["version"] == 2
    assert accepted["state"] == {} and accepted["metadata"] == {}
    assert engine.document("T")["state"] == {"reported": {"a": 1}}


def test_version_conflict_is_409(engine: ShadowEngine) -> None:
    update(engine, {"state": {"desired": {"colors": ["RED", "GREEN", "BLUE"]}}})
    error = rejected(
        update(
            engine, {"state": {"desired": {"colors": ["BLUE"]}}, "version": 0, "clientToken": "c"}
        )
    )
    assert error == {
        "code": 409,
        "message": "Version conflict",
        "timestamp": T0,
        "clientToken": "c",
    }
    assert engine.document("T")["state"]["desired"]["colors"] == ["RED", "GREEN", "BLUE"]


def test_matching_version_is_accepted(engine: ShadowEngine) -> None:
    update(engine, {"state": {"desired": {"colors": ["RED"]}}})
    accepted = replies(update(engine, {"state": {"desired": {"colors": ["BLUE"]}}, "version": 1}))[
        "update/accepted"
    ]
    assert accepted["version"] == 2


def test_version_of_a_new_shadow_is_zero(engine: ShadowEngine) -> None:
    assert rejected(update(engine, {"state": {"reported": {"a": 1}}, "version": 1}))["code"] == 409
    assert (
        suffixes(update(engine, {"state": {"reported": {"a": 1}}, "version": 0}))[0]
        == "update/accepted"
    )


def test_version_null_means_no_version(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"a": 1}}})
    assert (
        suffixes(update(engine, {"state": {"reported": {"a": 2}}, "version": None}))[0]
        == "update/accepted"
    )


# --- accepted / metadata ----------------------------------------------------------------------


def test_accepted_carries_only_request_fields(engine: ShadowEngine, clock: Clock) -> None:
    update(engine, {"state": {"reported": {"a": 1, "b": {"c": 2}}, "desired": {"z": 0}}})
    clock.now = T0 + 5
    accepted = replies(update(engine, {"state": {"reported": {"b": {"d": 3}}}}))["update/accepted"]
    assert accepted["state"] == {"reported": {"b": {"d": 3}}}
    assert accepted["metadata"] == {"reported": {"b": {"d": {"timestamp": T0 + 5}}}}
    assert engine.document("T")["state"]["reported"] == {"a": 1, "b": {"c": 2, "d": 3}}
    assert engine.document("T")["metadata"]["reported"] == {
        "a": {"timestamp": T0},
        "b": {"c": {"timestamp": T0}, "d": {"timestamp": T0 + 5}},
    }


def test_top_level_fields_outside_state_are_ignored(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"a": 1}}, "metadata": {"x": 1}, "other": True})
    doc = engine.document("T")
    assert doc["state"] == {"reported": {"a": 1}}
    assert doc["metadata"] == {"reported": {"a": {"timestamp": T0}}}


def test_array_metadata_has_one_entry_per_element(engine: ShadowEngine) -> None:
    accepted = replies(update(engine, {"state": {"reported": {"rgb": [128, 128, 128]}}}))[
        "update/accepted"
    ]
    assert accepted["metadata"] == {"reported": {"rgb": [{"timestamp": T0}] * 3}}


def test_arrays_are_replaced_whole(engine: ShadowEngine, clock: Clock) -> None:
    update(engine, {"state": {"desired": {"colors": ["RED", "GREEN", "BLUE"]}}})
    clock.now = T0 + 1
    update(engine, {"state": {"desired": {"colors": ["RED"]}}})
    doc = engine.document("T")
    assert doc["state"]["desired"] == {"colors": ["RED"]}
    assert doc["metadata"]["desired"] == {"colors": [{"timestamp": T0 + 1}]}


def test_value_can_change_type(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"x": 1}}})
    update(engine, {"state": {"reported": {"x": {"y": 2}}}})
    doc = engine.document("T")
    assert doc["state"]["reported"] == {"x": {"y": 2}}
    assert doc["metadata"]["reported"] == {"x": {"y": {"timestamp": T0}}}
    update(engine, {"state": {"reported": {"x": [1]}}})
    assert engine.document("T")["metadata"]["reported"] == {"x": [{"timestamp": T0}]}


# --- null deletes -----------------------------------------------------------------------------


def test_null_deletes_a_key(engine: ShadowEngine) -> None:
    update(
        engine,
        {"state": {"desired": {"engine": "ON", "color": "red"}, "reported": {"color": "red"}}},
    )
    accepted = replies(update(engine, {"state": {"desired": {"engine": None}}}))["update/accepted"]
    assert accepted["state"] == {"desired": {"engine": None}}
    assert accepted["metadata"] == {"desired": {"engine": {"timestamp": T0}}}
    doc = engine.document("T")
    assert doc["state"] == {"desired": {"color": "red"}, "reported": {"color": "red"}}
    assert doc["metadata"]["desired"] == {"color": {"timestamp": T0}}


def test_null_leaves_no_empty_objects_behind(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"a": {"b": {"c": 1}}, "keep": 1}}})
    update(engine, {"state": {"reported": {"a": {"b": {"c": None}}}}})
    doc = engine.document("T")
    assert doc["state"] == {"reported": {"keep": 1}}
    assert doc["metadata"] == {"reported": {"keep": {"timestamp": T0}}}


def test_deleting_last_key_removes_the_section(engine: ShadowEngine) -> None:
    update(engine, {"state": {"desired": {"a": 1}, "reported": {"b": 1}}})
    update(engine, {"state": {"desired": {"a": None}}})
    doc = engine.document("T")
    assert doc["state"] == {"reported": {"b": 1}}
    assert set(doc["metadata"]) == {"reported"}


def test_null_for_missing_key_is_a_no_op(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"a": 1}}})
    update(engine, {"state": {"reported": {"zzz": None, "new": {"x": None}}}})
    assert engine.document("T")["state"] == {"reported": {"a": 1}}


def test_desired_null_removes_the_section(engine: ShadowEngine) -> None:
    update(engine, {"state": {"desired": {"color": "red"}, "reported": {"color": "blue"}}})
    result = update(engine, {"state": {"reported": {"color": "red"}, "desired": None}})
    assert "update/delta" not in suffixes(result)
    accepted = replies(result)["update/accepted"]
    assert accepted["state"] == {"reported": {"color": "red"}, "desired": None}
    doc = engine.document("T")
    assert doc["state"] == {"reported": {"color": "red"}}
    assert set(doc["metadata"]) == {"reported"}


def test_state_null_clears_but_keeps_the_shadow(engine: ShadowEngine) -> None:
    update(engine, {"state": {"desired": {"a": 1}, "reported": {"b": 2}}})
    accepted = replies(update(engine, {"state": None}))["update/accepted"]
    assert accepted["version"] == 2
    doc = engine.document("T")
    assert doc["state"] == {} and doc["metadata"] == {} and doc["version"] == 2


# --- delta ------------------------------------------------------------------------------------


def delta_of(result: list[tuple[str, dict]]) -> dict | None:
    return replies(result).get("update/delta")


def test_delta_has_differing_and_missing_desired_keys_only(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"color": "GREEN", "engine": "ON", "same": 1}}})
    delta = delta_of(
        update(engine, {"state": {"desired": {"color": "RED", "state": "STOP", "same": 1}}})
    )
    assert delta["state"] == {"color": "RED", "state": "STOP"}
    assert delta["metadata"] == {"color": {"timestamp": T0}, "state": {"timestamp": T0}}
    assert delta["version"] == 2
    assert delta["timestamp"] == T0


def test_delta_keeps_full_path_of_nested_differences(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"lights": {"color": {"r": 255, "g": 0, "b": 255}}}}})
    delta = delta_of(
        update(
            engine, {"state": {"desired": {"lights": {"color": {"r": 255, "g": 255, "b": 255}}}}}
        )
    )
    assert delta["state"] == {"lights": {"color": {"g": 255}}}
    assert delta["metadata"] == {"lights": {"color": {"g": {"timestamp": T0}}}}


def test_delta_carries_whole_differing_array(engine: ShadowEngine, clock: Clock) -> None:
    update(engine, {"state": {"reported": {"rgb": [128, 128, 128]}}})
    clock.now = T0 + 3
    delta = delta_of(update(engine, {"state": {"desired": {"rgb": [255, 255, 0]}}}))
    assert delta["state"] == {"rgb": [255, 255, 0]}
    assert delta["metadata"] == {"rgb": [{"timestamp": T0 + 3}] * 3}


def test_equal_arrays_are_not_in_delta(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"rgb": [1, 2]}}})
    assert delta_of(update(engine, {"state": {"desired": {"rgb": [1, 2]}}})) is None


def test_delta_metadata_equals_desired_metadata(engine: ShadowEngine, clock: Clock) -> None:
    update(engine, {"state": {"desired": {"a": 1, "b": 1}}})
    clock.now = T0 + 9
    delta = delta_of(update(engine, {"state": {"reported": {"a": 1}}}))
    assert delta["state"] == {"b": 1}
    assert delta["metadata"] == {"b": {"timestamp": T0}}


def test_delta_is_sent_while_desired_and_reported_still_differ(engine: ShadowEngine) -> None:
    update(engine, {"state": {"desired": {"a": 1, "b": 2}}})
    partial = update(engine, {"state": {"reported": {"a": 1}}})
    assert delta_of(partial)["state"] == {"b": 2}
    done = update(engine, {"state": {"reported": {"b": 2}}})
    assert delta_of(done) is None


def test_deleting_reported_key_brings_it_back_into_delta(engine: ShadowEngine) -> None:
    update(engine, {"state": {"desired": {"a": 1}, "reported": {"a": 1}}})
    assert delta_of(update(engine, {"state": {"reported": {"a": None}}}))["state"] == {"a": 1}


def test_delta_compares_json_types(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"flag": 1, "num": 1, "s": "1"}}})
    delta = delta_of(update(engine, {"state": {"desired": {"flag": True, "num": 1.0, "s": 1}}}))
    assert delta["state"] == {"flag": True, "s": 1}


def test_reported_object_vs_desired_scalar(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"x": {"y": 1}}}})
    assert delta_of(update(engine, {"state": {"desired": {"x": 5}}}))["state"] == {"x": 5}
    update(engine, {"state": {"desired": {"x": {"y": 1, "z": 2}}}})
    assert engine.document("T")["state"]["delta"] == {"x": {"z": 2}}


def test_reply_order(engine: ShadowEngine) -> None:
    result = update(engine, {"state": {"desired": {"a": 1}}})
    assert suffixes(result) == ["update/accepted", "update/delta", "update/documents"]


# --- named shadows, delete --------------------------------------------------------------------


def test_named_and_classic_shadows_are_isolated(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"where": "classic"}}})
    update(engine, {"state": {"reported": {"where": "named"}}}, shadow="cfg")
    update(engine, {"state": {"reported": {"where": "other thing"}}}, thing="U", shadow="cfg")
    assert engine.document("T")["state"]["reported"] == {"where": "classic"}
    assert engine.document("T", "cfg")["state"]["reported"] == {"where": "named"}
    assert engine.document("U", "cfg")["version"] == 1
    assert engine.document("U") is None
    assert engine.things() == [("T", None), ("T", "cfg"), ("U", "cfg")]
    engine.handle("T", "cfg", "delete", b"")
    assert engine.document("T")["state"]["reported"] == {"where": "classic"}
    assert engine.things() == [("T", None), ("U", "cfg")]


def test_delete_missing_shadow_is_404(engine: ShadowEngine) -> None:
    error = rejected(engine.handle("T", "s1", "delete", b""), "delete")
    assert error == {"code": 404, "message": "No shadow exists with name: 'T~s1'", "timestamp": T0}


def test_delete_then_update_continues_versions(engine: ShadowEngine) -> None:
    for value in range(4):
        update(engine, {"state": {"reported": {"a": value}}})
    accepted = replies(engine.handle("T", None, "delete", b""))["delete/accepted"]
    assert accepted == {"version": 4, "timestamp": T0}
    assert rejected(engine.handle("T", None, "get", b""), "get")["code"] == 404
    assert rejected(engine.handle("T", None, "delete", b""), "delete")["code"] == 404
    result = update(engine, {"state": {"reported": {"b": 1}}})
    assert replies(result)["update/accepted"]["version"] == 5
    assert "previous" not in replies(result)["update/documents"]
    assert engine.document("T")["state"] == {"reported": {"b": 1}}


def test_update_after_delete_checks_version_against_deleted_one(engine: ShadowEngine) -> None:
    update(engine, {"state": {"reported": {"a": 1}}})
    update(engine, {"state": {"reported": {"a": 2}}})
    engine.handle("T", None, "delete", b"")
    assert rejected(update(engine, {"state": {"reported": {"a": 3}}, "version": 0}))["code"] == 409
    assert (
        replies(update(engine, {"state": {"reported": {"a": 3}}, "version": 2}))["update/accepted"][
            "version"
        ]
        == 3
    )


def test_document_returns_a_copy(engine: ShadowEngine) -> None:
    assert engine.document("T") is None
    update(engine, {"state": {"reported": {"list": [1]}}})
    doc = engine.document("T")
    doc["state"]["reported"]["list"].append(2)
    assert engine.document("T")["state"]["reported"] == {"list": [1]}


def test_replies_do_not_alias_engine_state(engine: ShadowEngine) -> None:
    result = update(engine, {"state": {"reported": {"list": [1]}}})
    replies(result)["update/documents"]["current"]["state"]["reported"]["list"].append(9)
    assert engine.document("T")["state"]["reported"] == {"list": [1]}


# --- persistence ------------------------------------------------------------------------------


def test_persistence_round_trip(tmp_path: pathlib.Path, clock: Clock) -> None:
    first = ShadowEngine(store_dir=tmp_path, clock=clock)
    update(first, {"state": {"desired": {"a": 1}, "reported": {"a": 0}}})
    update(first, {"state": {"reported": {"b": [1, 2]}}}, shadow="cfg")
    update(first, {"state": {"reported": {"x": 1}}}, thing="gone")
    first.handle("gone", None, "delete", b"")
    second = ShadowEngine(store_dir=tmp_path, clock=clock)
    assert second.things() == first.things() == [("T", None), ("T", "cfg")]
    assert second.document("T") == first.document("T")
    assert second.document("T", "cfg") == first.document("T", "cfg")
    assert second.document("gone") is None
    assert (
        replies(update(second, {"state": {"reported": {"x": 2}}}, thing="gone"))["update/accepted"][
            "version"
        ]
        == 2
    )
    assert (
        replies(update(second, {"state": {"reported": {"a": 1}}, "version": 1}))["update/accepted"][
            "version"
        ]
        == 2
    )


def test_store_uses_one_safe_file_per_shadow(tmp_path: pathlib.Path) -> None:
    store = ShadowEngine(store_dir=tmp_path / "shadows")
    update(store, {"state": {"reported": {"a": 1}}}, thing="a:b")
    update(store, {"state": {"reported": {"a": 1}}}, thing="a:b", shadow="c:d")
    names = sorted(path.name for path in (tmp_path / "shadows").iterdir())
    assert names == ["a%3Ab.json", "a%3Ab~c%3Ad.json"]
    data = json.loads((tmp_path / "shadows" / "a%3Ab~c%3Ad.json").read_text())
    assert (data["thing"], data["shadow"], data["version"]) == ("a:b", "c:d", 1)


def test_rejected_requests_are_not_persisted(tmp_path: pathlib.Path) -> None:
    store = ShadowEngine(store_dir=tmp_path)
    update(store, {"state": "bad"})
    store.handle("T", None, "get", b"")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_file_is_ignored_with_a_warning(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = ShadowEngine(store_dir=tmp_path)
    update(good, {"state": {"reported": {"ok": True}}}, thing="good")
    update(good, {"state": {"reported": {"ok": True}}}, thing="bad")
    (tmp_path / "bad.json").write_text('{"format": 1, "thing": "bad", "sta')
    (tmp_path / "wrongname.json").write_text((tmp_path / "good.json").read_text())
    (tmp_path / "typed.json").write_text(
        json.dumps(
            {
                "format": 1,
                "thing": "typed",
                "shadow": None,
                "state": [],
                "metadata": {},
                "version": 1,
                "deleted": False,
            }
        )
    )
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    with caplog.at_level(logging.WARNING, logger="host_tools.bench.shadow_engine"):
        engine = ShadowEngine(store_dir=tmp_path)
    assert engine.things() == [("good", None)]
    assert engine.document("bad") is None
    assert rejected(engine.handle("bad", None, "get", b""), "get")["code"] == 404
    warned = " ".join(record.getMessage() for record in caplog.records)
    for name in ("bad.json", "wrongname.json", "typed.json", "binary.json"):
        assert name in warned
    assert (
        replies(update(engine, {"state": {"reported": {"ok": 1}}}, thing="bad"))["update/accepted"][
            "version"
        ]
        == 1
    )


def test_write_failure_is_a_500_and_changes_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = ShadowEngine(store_dir=tmp_path, clock=Clock())
    update(engine, {"state": {"reported": {"a": 1}}})

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    error = rejected(update(engine, {"state": {"reported": {"a": 2}}, "clientToken": "w"}))
    assert error == {
        "code": 500,
        "message": "Internal service failure",
        "timestamp": T0,
        "clientToken": "w",
    }
    assert engine.document("T")["state"]["reported"] == {"a": 1}
    assert rejected(engine.handle("T", None, "delete", b""), "delete")["code"] == 500
    assert engine.document("T") is not None
    assert sorted(path.name for path in tmp_path.iterdir()) == ["T.json"]


def test_store_directory_is_created(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "a" / "b"
    ShadowEngine(store_dir=target)
    assert target.is_dir()


# --- shadow_doc helpers -----------------------------------------------------------------------


def test_json_equal() -> None:
    assert shadow_doc.json_equal({"a": [1, {"b": 2.0}]}, {"a": [1, {"b": 2}]})
    assert not shadow_doc.json_equal(True, 1)
    assert not shadow_doc.json_equal(0, False)
    assert not shadow_doc.json_equal([1, 2], [2, 1])
    assert not shadow_doc.json_equal({"a": 1}, {"a": 1, "b": None})
    assert shadow_doc.json_equal(None, None)


def test_merge_section_does_not_mutate_inputs() -> None:
    current = {"a": {"b": 1}}
    patch = {"a": {"c": 2}}
    merged = shadow_doc.merge_section(current, patch)
    assert merged == {"a": {"b": 1, "c": 2}}
    assert current == {"a": {"b": 1}} and patch == {"a": {"c": 2}}


def test_nesting_depth_and_sizes() -> None:
    assert shadow_doc.nesting_depth(5) == 0
    assert shadow_doc.nesting_depth({}) == 1
    assert shadow_doc.nesting_depth({"a": [[1]]}) == 3
    assert shadow_doc.encoded_size(None) == 0
    assert shadow_doc.encoded_size({"a": "é"}) == len('{"a":"é"}'.encode())


def test_concurrent_updates_are_serialised(tmp_path: pathlib.Path) -> None:
    engine = ShadowEngine(store_dir=tmp_path)

    def worker(name: str) -> None:
        for value in range(50):
            update(engine, {"state": {"reported": {name: value}}})

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    doc = engine.document("T")
    assert doc["version"] == 200
    assert doc["state"]["reported"] == {"w0": 49, "w1": 49, "w2": 49, "w3": 49}
    assert ShadowEngine(store_dir=tmp_path).document("T")["version"] == 200
