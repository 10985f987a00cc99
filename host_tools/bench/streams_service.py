"""AWS IoT MQTT-based file delivery (streams) on the bench, JSON variant.

A stream is a list of files (ids 0-255) with a version. The operator registers one from
files on disk (:func:`register_stream`, e.g. an OTA bundle as file 0); the service
answers devices as the AWS developer guide "Using AWS IoT MQTT-based file delivery in
devices" describes:

- ``$aws/things/{thing}/streams/{streamId}/describe/json`` ``{"c"}`` ->
  ``.../description/json`` ``{"c", "s": version, "d": description, "r": [{"f", "z"}]}``;
- ``.../get/json`` ``{"c", "s", "f", "l", "o", "n", "b"}`` -> one message per block on
  ``.../data/json`` ``{"c", "f", "l", "i", "p": base64}``; ``o`` is a block number,
  ``b`` a hex bitmap of wanted blocks counted from ``o`` (bit 0 = LSB of the first byte);
  at most 128 KiB per request;
- errors on ``.../rejected/json`` ``{"o": code, "m": message, "c"}`` with the guide's
  codes (InvalidJson, InvalidRequest, BlockSizeOutOfBounds, OffsetOutOfBounds,
  BlockCountLimitExceeded, BlockBitmapLimitExceeded, ResourceNotFound, VersionMismatch,
  InternalError).

Example::

    register_stream(layout.streams, "ota-1-2-0", {0: Path("app.tkota")})
    replies = StreamsEngine(layout.streams).handle("kit-1", "ota-1-2-0", "get", payload)
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

STREAM_ID_RE = re.compile(r"[a-zA-Z0-9_-]{1,128}")
MIN_BLOCK, MAX_BLOCK = 256, 131072
MAX_OFFSET = MAX_COUNT = 98304
MAX_BITMAP_BYTES = 12288
MAX_REPLY_BYTES = 131072
MAX_CLIENT_TOKEN_BYTES = 64
REQUEST_SUBSCRIPTIONS = [
    "$aws/things/+/streams/+/get/json",
    "$aws/things/+/streams/+/describe/json",
]
REPLY_QOS = 1

_log = logging.getLogger(__name__)
Reply = tuple[str, dict[str, Any]]


class StreamError(Exception):
    """A request answered on ``rejected/json``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def register_stream(
    directory: Path,
    stream_id: str,
    files: dict[int, Path | bytes],
    description: str = "",
) -> dict[str, Any]:
    """Create or replace a stream; its version goes up by one on each replacement.

    Args:
        directory: The bench's streams directory (``BenchLayout.streams``).
        stream_id: 1-128 of ``a-z A-Z 0-9 _ -``.
        files: File id (0-255) -> path to copy, or the bytes themselves.
        description: Free text returned by DescribeStream.

    Returns:
        The stream record ``{streamId, version, description, files: [{fileId, size}]}``.

    Raises:
        ValueError: Invalid stream id, file id or no files.
    """
    if not STREAM_ID_RE.fullmatch(stream_id):
        raise ValueError(f"invalid stream id {stream_id!r}")
    if not files or any(not 0 <= int(f) <= 255 for f in files):
        raise ValueError("a stream needs files with ids 0 to 255")
    directory.mkdir(parents=True, exist_ok=True)
    old = _read_record(directory, stream_id)
    version = old["version"] + 1 if old else 1
    entries = []
    for file_id, source in sorted(files.items()):
        target = directory / f"{stream_id}.v{version}.{file_id}.bin"
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            shutil.copyfile(source, target)
        entries.append({"fileId": int(file_id), "size": target.stat().st_size, "name": target.name})
    record = {
        "streamId": stream_id,
        "version": version,
        "description": description,
        "files": entries,
    }
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)
    os.replace(tmp, directory / f"{stream_id}.json")
    if old:
        for entry in old["files"]:
            (directory / entry["name"]).unlink(missing_ok=True)
    return record


def delete_stream(directory: Path, stream_id: str) -> bool:
    """Remove a stream and its files; False when there was none."""
    record = _read_record(directory, stream_id)
    if record is None:
        return False
    (directory / f"{stream_id}.json").unlink(missing_ok=True)
    for entry in record["files"]:
        (directory / entry["name"]).unlink(missing_ok=True)
    return True


def _read_record(directory: Path, stream_id: str) -> dict[str, Any] | None:
    try:
        return json.loads((directory / f"{stream_id}.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def _int(req: dict, key: str, lo: int, hi: int, code: str, default: int | None = None) -> int:
    value = req.get(key, default)
    if value is None:
        raise StreamError("InvalidRequest", f'"{key}" is required')
    if isinstance(value, bool) or not isinstance(value, int):
        raise StreamError("InvalidRequest", f'"{key}" must be an integer')
    if not lo <= value <= hi:
        raise StreamError(code, f'"{key}" {value} is out of bounds ({lo} to {hi})')
    return value


def _bitmap_blocks(text: Any, offset: int) -> list[int]:
    """Block numbers whose bit is set in a ``"0x..."`` bitmap (bit 0 = LSB of byte 0)."""
    if not isinstance(text, str):
        raise StreamError("InvalidRequest", '"b" must be a hex string')
    digits = text[2:] if text[:2].lower() == "0x" else text
    if len(digits) % 2:
        digits = "0" + digits
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raise StreamError("InvalidRequest", '"b" is not a hex bitmap') from None
    if len(raw) > MAX_BITMAP_BYTES:
        raise StreamError("BlockBitmapLimitExceeded", "The block bitmap is too large")
    return [
        offset + i * 8 + bit for i, byte in enumerate(raw) for bit in range(8) if byte >> bit & 1
    ]


class StreamsEngine:
    """Answers describe and get requests from the streams in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def handle(self, stream_id: str, op: str, payload: bytes) -> list[Reply]:
        """Process one request; return ``(suffix, document)`` replies in order.

        ``suffix`` is ``description/json``, ``data/json`` or ``rejected/json``.
        """
        token = None
        try:
            try:
                req = json.loads(payload.decode("utf-8")) if payload.strip() else {}
            except (UnicodeDecodeError, ValueError):
                raise StreamError("InvalidJson", "The stream request is not valid JSON") from None
            if not isinstance(req, dict):
                raise StreamError("InvalidJson", "The stream request must be a JSON object")
            c = req.get("c")
            if c is not None and (not isinstance(c, str) or len(c.encode()) > 64):
                raise StreamError("InvalidRequest", "The client token is invalid")
            token = c
            record = _read_record(self.directory, stream_id)
            if record is None or not STREAM_ID_RE.fullmatch(stream_id):
                raise StreamError("ResourceNotFound", f"Stream {stream_id} not found")
            if op == "describe":
                doc = {
                    "s": record["version"],
                    "d": record["description"],
                    "r": [{"f": f["fileId"], "z": f["size"]} for f in record["files"]],
                }
                return [("description/json", self._tok(doc, token))]
            return self._get(record, req, token)
        except StreamError as exc:
            return [("rejected/json", self._tok({"o": exc.code, "m": exc.message}, token))]
        except OSError:
            _log.exception("streams: cannot read stream %s", stream_id)
            err = {"o": "InternalError", "m": "Internal error"}
            return [("rejected/json", self._tok(err, token))]

    @staticmethod
    def _tok(doc: dict[str, Any], token: str | None) -> dict[str, Any]:
        return {"c": token, **doc} if token is not None else doc

    def _get(self, record: dict, req: dict, token: str | None) -> list[Reply]:
        file_id = _int(req, "f", 0, 255, "InvalidRequest")
        entry = next((f for f in record["files"] if f["fileId"] == file_id), None)
        if entry is None:
            raise StreamError("ResourceNotFound", f"File {file_id} not found in the stream")
        if "s" in req and req["s"] != record["version"]:
            raise StreamError(
                "VersionMismatch",
                f"Stream version {req['s']} does not match the latest version {record['version']}",
            )
        size = _int(req, "l", MIN_BLOCK, MAX_BLOCK, "BlockSizeOutOfBounds")
        offset = _int(req, "o", 0, MAX_OFFSET, "OffsetOutOfBounds", 0)
        count = _int(req, "n", 0, MAX_COUNT, "BlockCountLimitExceeded", MAX_REPLY_BYTES // size)
        total_blocks = -(-entry["size"] // size)
        if offset >= total_blocks:
            raise StreamError("OffsetOutOfBounds", f"Block offset {offset} is past the end of file")
        if "b" in req:
            wanted = [i for i in _bitmap_blocks(req["b"], offset) if i < total_blocks]
        else:
            wanted = list(range(offset, total_blocks))
        limit = min(count or MAX_REPLY_BYTES // size, MAX_REPLY_BYTES // size)
        wanted = wanted[:limit]
        if not wanted:
            raise StreamError("ResourceNotFound", "No requested block exists in the file")
        replies: list[Reply] = []
        with open(self.directory / entry["name"], "rb") as handle:
            for block in wanted:
                handle.seek(block * size)
                data = handle.read(size)
                doc = {"f": file_id, "l": len(data), "i": block}
                doc["p"] = base64.b64encode(data).decode("ascii")
                replies.append(("data/json", self._tok(doc, token)))
        return replies


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """``$aws/things/T/streams/S/get/json`` -> ``(T, S, "get")``, else None."""
    parts = topic.split("/")
    if len(parts) != 7 or parts[:2] != ["$aws", "things"] or parts[3] != "streams":
        return None
    if parts[6] != "json" or parts[5] not in ("get", "describe"):
        return None
    return parts[2], parts[4], parts[5]


def attach(client: mqtt.Client, engine: StreamsEngine, log: logging.Logger | None = None) -> None:
    """Serve stream requests on ``client`` (subscribes on every connect)."""
    logger = log or _log
    previous = client.on_connect

    def on_connect(cl: mqtt.Client, userdata: Any, *args: Any) -> None:
        if previous is not None:
            previous(cl, userdata, *args)
        reason = args[1] if len(args) > 1 else 0
        if not getattr(reason, "is_failure", reason != 0):
            cl.subscribe([(t, REPLY_QOS) for t in REQUEST_SUBSCRIPTIONS])

    def on_request(cl: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            parsed = parse_topic(message.topic)
            if parsed is None:
                return
            thing, stream_id, op = parsed
            base = f"$aws/things/{thing}/streams/{stream_id}/"
            for suffix, doc in engine.handle(stream_id, op, message.payload):
                body = json.dumps(doc, separators=(",", ":")).encode()
                cl.publish(base + suffix, body, qos=REPLY_QOS)
                if suffix == "rejected/json":
                    logger.info("streams %s: %s %s", base + op, doc["o"], doc["m"])
        except Exception:
            logger.exception("streams: failed to serve %s", message.topic)

    client.on_connect = on_connect
    for topic_filter in REQUEST_SUBSCRIPTIONS:
        client.message_callback_add(topic_filter, on_request)
    if client.is_connected():
        client.subscribe([(t, REPLY_QOS) for t in REQUEST_SUBSCRIPTIONS])
