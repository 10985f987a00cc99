"""MQTT-based file delivery (streams): block serving and errors as the AWS developer guide
describes them, on the engine and on a real bench with paho device clients (ACL included)."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

import pytest

from host_tools.bench.bench import Bench
from host_tools.bench.jobs_service import DeviceSession
from host_tools.bench.streams_service import (
    StreamsEngine,
    delete_stream,
    parse_topic,
    register_stream,
)

MOSQUITTO = Path("/usr/sbin/mosquitto")
DATA = os.urandom(5000)  # 4 full 1024-byte blocks and one of 904


@pytest.fixture
def streams(tmp_path: Path) -> StreamsEngine:
    register_stream(tmp_path, "s1", {0: DATA, 3: b"x" * 300}, description="bundle 1.2.0")
    return StreamsEngine(tmp_path)


def get(eng: StreamsEngine, body: object, stream: str = "s1", op: str = "get"):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return eng.handle(stream, op, payload)


def test_describe(streams: StreamsEngine) -> None:
    [(suffix, doc)] = get(streams, {"c": "t1"}, op="describe")
    assert suffix == "description/json"
    assert doc == {
        "c": "t1",
        "s": 1,
        "d": "bundle 1.2.0",
        "r": [{"f": 0, "z": 5000}, {"f": 3, "z": 300}],
    }


def test_blocks_in_order_and_reassembled(streams: StreamsEngine) -> None:
    replies = get(streams, {"c": "t", "s": 1, "f": 0, "l": 1024, "o": 0, "n": 5})
    assert [s for s, _ in replies] == ["data/json"] * 5
    assert [d["i"] for _, d in replies] == [0, 1, 2, 3, 4]
    assert [d["l"] for _, d in replies] == [1024] * 4 + [904]
    assert all(d["c"] == "t" and d["f"] == 0 for _, d in replies)
    assert b"".join(base64.b64decode(d["p"]) for _, d in replies) == DATA


def test_offset_count_and_default_count(streams: StreamsEngine) -> None:
    replies = get(streams, {"f": 0, "l": 1024, "o": 2, "n": 2})
    assert [d["i"] for _, d in replies] == [2, 3]
    assert base64.b64decode(replies[0][1]["p"]) == DATA[2048:3072]
    assert "c" not in replies[0][1]
    # No "n": up to 128 KiB / l blocks, stopping at the end of the file.
    assert [d["i"] for _, d in get(streams, {"f": 0, "l": 256, "o": 18})] == [18, 19]


def test_bitmap_selects_blocks(streams: StreamsEngine) -> None:
    # The guide's example: offset 20, bitmap 0x130080 -> blocks 20, 21, 24, 43.
    big = os.urandom(256 * 50)
    register_stream(streams.directory, "s2", {1: big})
    replies = get(streams, {"f": 1, "l": 256, "o": 20, "n": 32, "b": "0x130080"}, "s2")
    assert [d["i"] for _, d in replies] == [20, 21, 24, 43]
    assert base64.b64decode(replies[3][1]["p"]) == big[43 * 256 : 44 * 256]


def test_reply_capped_at_128k(streams: StreamsEngine) -> None:
    register_stream(streams.directory, "big", {0: os.urandom(300_000)})
    replies = get(streams, {"f": 0, "l": 65536, "o": 0, "n": 5}, "big")
    assert [d["i"] for _, d in replies] == [0, 1]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{nope", "InvalidJson"),
        ({"f": 0, "l": 255}, "BlockSizeOutOfBounds"),
        ({"f": 0, "l": 131073}, "BlockSizeOutOfBounds"),
        ({"f": 0, "l": 1024, "o": 5}, "OffsetOutOfBounds"),
        ({"f": 0, "l": 1024, "o": 98305}, "OffsetOutOfBounds"),
        ({"f": 0, "l": 1024, "n": 98305}, "BlockCountLimitExceeded"),
        ({"f": 0, "l": 256, "b": "0x" + "ff" * 12289}, "BlockBitmapLimitExceeded"),
        ({"f": 0, "l": 256, "b": "0xzz"}, "InvalidRequest"),
        ({"f": 7, "l": 1024}, "ResourceNotFound"),
        ({"l": 1024}, "InvalidRequest"),
        ({"f": 0, "l": 1024, "s": 2}, "VersionMismatch"),
        ({"f": 0, "l": 1024, "c": "c" * 65}, "InvalidRequest"),
    ],
)
def test_errors(streams: StreamsEngine, body: object, code: str) -> None:
    [(suffix, doc)] = get(streams, body)
    assert suffix == "rejected/json" and doc["o"] == code and doc["m"]


def test_error_echoes_valid_token_only(streams: StreamsEngine) -> None:
    [(_, doc)] = get(streams, {"c": "abc", "f": 0, "l": 10})
    assert doc == {"c": "abc", "o": "BlockSizeOutOfBounds", "m": doc["m"]}
    [(_, doc)] = get(streams, {"c": "abc", "f": 0, "l": 1024}, stream="missing")
    assert doc["o"] == "ResourceNotFound" and doc["c"] == "abc"


def test_reregister_bumps_version_and_delete(streams: StreamsEngine) -> None:
    rec = register_stream(streams.directory, "s1", {0: b"new" * 100})
    assert rec["version"] == 2
    [(_, doc)] = get(streams, {"f": 0, "l": 1024, "s": 1})
    assert doc["o"] == "VersionMismatch"
    [(_, doc)] = get(streams, {"f": 0, "l": 1024, "s": 2})
    assert base64.b64decode(doc["p"]) == b"new" * 100
    assert len(list(streams.directory.glob("s1.*.bin"))) == 1  # old files removed
    assert delete_stream(streams.directory, "s1") and not delete_stream(streams.directory, "s1")
    assert get(streams, {"f": 0, "l": 1024})[0][1]["o"] == "ResourceNotFound"


def test_parse_topic() -> None:
    assert parse_topic("$aws/things/kit-1/streams/s1/get/json") == ("kit-1", "s1", "get")
    assert parse_topic("$aws/things/kit-1/streams/s1/describe/json") == ("kit-1", "s1", "describe")
    assert parse_topic("$aws/things/kit-1/streams/s1/get/cbor") is None
    assert parse_topic("$aws/things/kit-1/streams/s1/data/json") is None


# -- on a real bench ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto not installed")
    b = Bench(tmp_path_factory.mktemp("streamsbench") / "bench")
    b.up()
    yield b
    b.down()


def test_device_downloads_stream_over_mqtt(bench: Bench, tmp_path: Path) -> None:
    payload = os.urandom(10_000)
    register_stream(bench.layout.streams, "ota-x", {0: payload}, "x")
    dev = DeviceSession.create(bench, "stream-1", tmp_path)
    try:
        got = bytearray()
        for offset in range(0, 10, 4):
            blocks = dev.stream_get("ota-x", min(4, 10 - offset), f=0, l=1024, o=offset, n=4, s=1)
            assert [b["i"] for b in blocks] == list(range(offset, offset + len(blocks)))
            got += b"".join(base64.b64decode(b["p"]) for b in blocks)
        assert bytes(got) == payload
        [err] = dev.stream_get("ota-x", 1, f=0, l=100)
        assert err["o"] == "BlockSizeOutOfBounds"
        [err] = dev.stream_get("nope", 1, f=0, l=1024)
        assert err["o"] == "ResourceNotFound"
        t0 = time.time()
        dev.publish("$aws/things/stream-1/streams/ota-x/describe/json", {"c": "d1"})
        got_d = dev.wait(lambda t, d: t.endswith("/description/json"), 10, since=t0)
        assert got_d is not None and got_d[1]["r"] == [{"f": 0, "z": 10_000}]
    finally:
        dev.close()


def test_acl_thing_cannot_read_another_things_stream(bench: Bench, tmp_path: Path) -> None:
    register_stream(bench.layout.streams, "ota-y", {0: os.urandom(2048)})
    owner = DeviceSession.create(bench, "stream-own", tmp_path)
    other = DeviceSession.create(bench, "stream-other", tmp_path)
    try:
        t0 = time.time()
        other.client.subscribe("$aws/things/stream-own/streams/#", qos=1)
        other.publish("$aws/things/stream-own/streams/ota-y/get/json", {"f": 0, "l": 1024})
        # The owner's own request is served and its blocks never reach the other thing.
        assert len(owner.stream_get("ota-y", 2, f=0, l=1024, n=2)) == 2
        time.sleep(1.0)
        assert not [m for m in other.messages if m[0] >= t0]
        # Nor did the other's forged request produce replies on the owner's topics.
        forged = [m for m in owner.messages if m[0] >= t0 and b'"c"' not in m[2]]
        assert forged == []
        denied = (
            r"Denied PUBLISH from stream-other \(.*'\$aws/things/stream-own/streams/ota-y/get/json'"
        )
        assert re.search(denied, bench.broker_log())
    finally:
        owner.close()
        other.close()
