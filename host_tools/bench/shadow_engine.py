"""Emulation of the AWS IoT Device Shadow service, without MQTT.

:class:`ShadowEngine` takes one shadow request (thing, optional shadow name,
operation, raw payload) and returns the replies AWS IoT would publish, in the
order it publishes them. :mod:`host_tools.bench.shadow_service` wires it to an
MQTT client. Documents can be kept in a directory, one JSON file per shadow, so
they survive a bench restart.

Behaviour follows the AWS IoT developer guide: "Device Shadow service
documents", "Device Shadow MQTT topics", "Interacting with shadows" and
"Device Shadow error messages".
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import pathlib
import re
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from host_tools.bench import shadow_doc

log = logging.getLogger(__name__)

SHADOW_TOPIC_PREFIX = "$aws/things/"
OPERATIONS = ("get", "update", "delete")
THING_NAME_RE = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
SHADOW_NAME_RE = re.compile(r"[a-zA-Z0-9:_-]{1,64}")
MAX_CLIENT_TOKEN_BYTES = 64
MAX_STATE_BYTES = 8 * 1024
STORE_FORMAT = 1

Reply = tuple[str, dict[str, Any]]
ShadowKey = tuple[str, str | None]


def parse_request_topic(topic: str) -> tuple[str, str | None, str] | None:
    """Split a shadow request topic into its parts.

    Args:
        topic: An MQTT topic such as ``$aws/things/T/shadow/update`` or
            ``$aws/things/T/shadow/name/S/get``.

    Returns:
        ``(thing, shadow, op)`` with ``shadow`` None for the classic shadow, or
        None when the topic is not a get/update/delete request or a name is not
        a valid AWS thing or shadow name.
    """
    if not topic.startswith(SHADOW_TOPIC_PREFIX):
        return None
    parts = topic[len(SHADOW_TOPIC_PREFIX) :].split("/")
    if len(parts) == 3 and parts[1] == "shadow":
        thing, shadow, op = parts[0], None, parts[2]
    elif len(parts) == 5 and parts[1] == "shadow" and parts[2] == "name":
        thing, shadow, op = parts[0], parts[3], parts[4]
    else:
        return None
    if op not in OPERATIONS or not valid_names(thing, shadow):
        return None
    return thing, shadow, op


def valid_names(thing: str, shadow: str | None) -> bool:
    """Tell whether a thing name and optional shadow name are valid AWS names.

    Args:
        thing: Thing name, ``[a-zA-Z0-9:_-]``, 1 to 128 characters.
        shadow: Shadow name, ``[a-zA-Z0-9:_-]``, 1 to 64 characters, or None.

    Returns:
        True when both names are acceptable.
    """
    if not THING_NAME_RE.fullmatch(thing):
        return False
    return shadow is None or SHADOW_NAME_RE.fullmatch(shadow) is not None


def reply_topic(thing: str, shadow: str | None, suffix: str) -> str:
    """Build the topic a reply is published on.

    Args:
        thing: Thing name.
        shadow: Shadow name, or None for the classic shadow.
        suffix: Reply suffix such as ``update/accepted`` or ``get/rejected``.

    Returns:
        The full topic, e.g. ``$aws/things/T/shadow/name/S/update/delta``.
    """
    prefix = f"{SHADOW_TOPIC_PREFIX}{thing}/shadow"
    if shadow is not None:
        prefix = f"{prefix}/name/{shadow}"
    return f"{prefix}/{suffix}"


def not_found_message(thing: str, shadow: str | None) -> str:
    """The 404 message AWS sends for a missing shadow.

    Args:
        thing: Thing name.
        shadow: Shadow name, or None for the classic shadow.

    Returns:
        ``No shadow exists with name: 'T'`` for a classic shadow and
        ``No shadow exists with name: 'T~S'`` for a named one.
    """
    name = thing if shadow is None else f"{thing}~{shadow}"
    return f"No shadow exists with name: '{name}'"


class Rejected(Exception):
    """A request the Device Shadow service answers on ``.../rejected``."""

    def __init__(self, code: int, message: str, client_token: str | None = None) -> None:
        """Keep the error code, message and the request's client token."""
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.client_token = client_token


@dataclasses.dataclass
class _Record:
    """One stored shadow; a deleted one is kept to continue its version."""

    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    version: int = 0
    deleted: bool = False

    def snapshot(self) -> dict[str, Any]:
        """The ``{state, metadata, version}`` part of ``update/documents``."""
        return {"state": self.state, "metadata": self.metadata, "version": self.version}


def _with_token(doc: dict[str, Any], token: str | None) -> dict[str, Any]:
    """Add ``clientToken`` to a reply when the request carried one."""
    if token is not None:
        doc["clientToken"] = token
    return doc


def _check_token(value: Any) -> str | None:
    """Validate a request's ``clientToken`` (a string of at most 64 bytes)."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value.encode("utf-8")) > MAX_CLIENT_TOKEN_BYTES:
        raise Rejected(400, "Invalid clientToken")
    return value


def _reject_constant(name: str) -> Any:
    """Refuse NaN and Infinity, which are not JSON."""
    raise ValueError(f"not JSON: {name}")


def _parse_json(payload: bytes) -> Any:
    """Decode a payload as UTF-8 JSON, raising :class:`Rejected` (415/400)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(
            415, "Unsupported documented encoding; supported encoding is UTF-8"
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise Rejected(400, "Invalid JSON") from None


def _optional_token(payload: bytes) -> str | None:
    """Read the client token of a get or delete request; the body is optional."""
    try:
        request = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return _check_token(request.get("clientToken")) if isinstance(request, dict) else None


def _check_version(request: dict[str, Any], token: str | None) -> int | None:
    """Return the request's ``version`` (None when absent), checking its type."""
    version = request.get("version")
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise Rejected(400, "Invalid version", token)
    return version


def _check_state(request: dict[str, Any], token: str | None) -> dict[str, Any] | None:
    """Validate the ``state`` node of an update; None means ``"state": null``."""
    if "state" not in request:
        raise Rejected(400, "Missing required node: state", token)
    state = request["state"]
    if state is None:
        return None
    if not isinstance(state, dict):
        raise Rejected(400, "State node must be an object", token)
    problem = shadow_doc.state_problem(state)
    if problem is not None:
        raise Rejected(400, problem, token)
    return state


def _apply_state(old: _Record | None, patch: dict[str, Any] | None, now: int) -> _Record:
    """Merge an update's state into a new record with the next version."""
    live = old is not None and not old.deleted
    state, metadata = shadow_doc.apply_state(
        old.state if live else {}, old.metadata if live else {}, patch, now
    )
    return _Record(state, metadata, (old.version if old else 0) + 1)


class ShadowStore:
    """One JSON file per shadow in a directory, written atomically."""

    def __init__(self, directory: pathlib.Path) -> None:
        """Use (and create) ``directory``."""
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, key: ShadowKey) -> pathlib.Path:
        """File of a shadow: ``T.json`` or ``T~S.json``, ``:`` escaped."""
        thing, shadow = key
        name = urllib.parse.quote(thing, safe="_-")
        if shadow is not None:
            name = f"{name}~{urllib.parse.quote(shadow, safe='_-')}"
        return self.directory / f"{name}.json"

    def save(self, key: ShadowKey, record: _Record) -> None:
        """Write one record (temp file, fsync, ``os.replace``); raises OSError."""
        data = {
            "format": STORE_FORMAT,
            "thing": key[0],
            "shadow": key[1],
            **dataclasses.asdict(record),
        }
        target = self.path(key)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, separators=(",", ":"), ensure_ascii=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise

    def load(self) -> dict[ShadowKey, _Record]:
        """Read every stored shadow; a corrupt file is logged and skipped."""
        records: dict[ShadowKey, _Record] = {}
        for path in sorted(self.directory.glob("*.json")):
            try:
                key, record = self._read(path)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("shadow store: ignoring unreadable %s (%s)", path, exc)
                continue
            records[key] = record
        return records

    def _read(self, path: pathlib.Path) -> tuple[ShadowKey, _Record]:
        """Parse and check one file; raises ValueError when it does not fit."""
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
            raise ValueError("not a shadow record")
        key = (data["thing"], data["shadow"])
        record = _Record(data["state"], data["metadata"], data["version"], data["deleted"])
        fields = [
            (key[0], str),
            (record.state, dict),
            (record.metadata, dict),
            (record.deleted, bool),
        ]
        if not all(isinstance(value, kind) for value, kind in fields) or not (
            type(record.version) is int and (key[1] is None or isinstance(key[1], str))
        ):
            raise TypeError("a field has the wrong type")
        if not valid_names(*key) or self.path(key) != path:
            raise ValueError("names do not match the file name")
        return key, record


class ShadowEngine:
    """The Device Shadow service's request handling, as pure logic.

    Thread-safe: every public method holds one lock, so paho's network thread
    and a rules thread can call it concurrently.
    """

    def __init__(
        self,
        store_dir: pathlib.Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create an engine.

        Args:
            store_dir: Directory keeping one JSON file per shadow; existing
                files are loaded. None keeps shadows in memory only.
            clock: Time source in epoch seconds; timestamps are its integer part.
        """
        self._clock = clock
        self._lock = threading.RLock()
        self._store = ShadowStore(store_dir) if store_dir is not None else None
        self._records: dict[ShadowKey, _Record] = self._store.load() if self._store else {}

    def handle(self, thing: str, shadow: str | None, op: str, payload: bytes) -> list[Reply]:
        """Process one request and return the replies in AWS's publish order.

        Args:
            thing: Thing name.
            shadow: Shadow name, or None for the classic shadow.
            op: ``get``, ``update`` or ``delete``.
            payload: The raw MQTT payload of the request.

        Returns:
            ``(suffix, document)`` pairs, e.g. ``[("update/accepted", {...}),
            ("update/delta", {...}), ("update/documents", {...})]`` or
            ``[("update/rejected", {"code": 409, ...})]``.

        Raises:
            ValueError: On an unknown operation or an invalid name.
        """
        if op not in OPERATIONS:
            raise ValueError(f"unknown shadow operation {op!r}")
        if not valid_names(thing, shadow):
            raise ValueError(f"invalid thing or shadow name: {thing!r}, {shadow!r}")
        handler = {"get": self._get, "update": self._update, "delete": self._delete}[op]
        with self._lock:
            now = int(self._clock())
            try:
                replies = handler((thing, shadow), payload, now)
            except Rejected as exc:
                error = {"code": exc.code, "message": exc.message, "timestamp": now}
                replies = [(f"{op}/rejected", _with_token(error, exc.client_token))]
            return copy.deepcopy(replies)

    def document(self, thing: str, shadow: str | None = None) -> dict[str, Any] | None:
        """The current document as ``get/accepted`` would return it.

        Args:
            thing: Thing name.
            shadow: Shadow name, or None for the classic shadow.

        Returns:
            ``{state, metadata, version, timestamp}`` (``state.delta`` when
            desired and reported differ), or None when there is no shadow.
        """
        with self._lock:
            record = self._live((thing, shadow))
            if record is None:
                return None
            return copy.deepcopy(self._full_document(record, int(self._clock())))

    def things(self) -> list[ShadowKey]:
        """Every existing ``(thing, shadow)``, classic shadows first per thing."""
        with self._lock:
            keys = [key for key, record in self._records.items() if not record.deleted]
        return sorted(keys, key=lambda key: (key[0], key[1] is not None, key[1] or ""))

    def _live(self, key: ShadowKey) -> _Record | None:
        """The stored record unless missing or deleted."""
        record = self._records.get(key)
        return None if record is None or record.deleted else record

    @staticmethod
    def _full_document(record: _Record, now: int) -> dict[str, Any]:
        """Build a ``get/accepted`` body (without client token)."""
        state = dict(record.state)
        delta = shadow_doc.compute_delta(state.get("desired"), state.get("reported"))
        if delta:
            state["delta"] = delta
        return {
            "state": state,
            "metadata": record.metadata,
            "version": record.version,
            "timestamp": now,
        }

    def _get(self, key: ShadowKey, payload: bytes, now: int) -> list[Reply]:
        """Answer a get request."""
        token = _optional_token(payload)
        record = self._live(key)
        if record is None:
            raise Rejected(404, not_found_message(*key), token)
        return [("get/accepted", _with_token(self._full_document(record, now), token))]

    def _delete(self, key: ShadowKey, payload: bytes, now: int) -> list[Reply]:
        """Answer a delete request; the version sequence survives the delete."""
        token = _optional_token(payload)
        record = self._live(key)
        if record is None:
            raise Rejected(404, not_found_message(*key), token)
        self._commit(key, _Record(version=record.version, deleted=True), token)
        return [
            ("delete/accepted", _with_token({"version": record.version, "timestamp": now}, token))
        ]

    def _update(self, key: ShadowKey, payload: bytes, now: int) -> list[Reply]:
        """Answer an update request: accepted, then delta if any, then documents."""
        request = _parse_json(payload)
        if not isinstance(request, dict):
            raise Rejected(400, "Invalid JSON")
        token = _check_token(request.get("clientToken"))
        version = _check_version(request, token)
        patch = _check_state(request, token)
        old = self._records.get(key)
        if version is not None and version != (old.version if old else 0):
            raise Rejected(409, "Version conflict", token)
        new = _apply_state(old, patch, now)
        if shadow_doc.state_size(new.state) > MAX_STATE_BYTES:
            raise Rejected(413, "The payload exceeds the maximum size allowed", token)
        previous = self._live(key)
        self._commit(key, new, token)
        return self._update_replies(request["state"], previous, new, now, token)

    def _commit(self, key: ShadowKey, record: _Record, token: str | None) -> None:
        """Persist then keep a record; a failed write is a 500, not a crash."""
        if self._store is not None:
            try:
                self._store.save(key, record)
            except OSError:
                log.exception("shadow store: cannot write %s", self._store.path(key))
                raise Rejected(500, "Internal service failure", token) from None
        self._records[key] = record

    @staticmethod
    def _update_replies(
        request_state: dict[str, Any] | None,
        previous: _Record | None,
        new: _Record,
        now: int,
        token: str | None,
    ) -> list[Reply]:
        """Build update/accepted, update/delta (when needed) and update/documents."""
        meta = shadow_doc.metadata_for(request_state, now) if request_state is not None else {}
        accepted = {
            "state": request_state,
            "metadata": meta,
            "version": new.version,
            "timestamp": now,
        }
        replies: list[Reply] = [("update/accepted", _with_token(accepted, token))]
        delta = shadow_doc.compute_delta(new.state.get("desired"), new.state.get("reported"))
        if delta:
            delta_meta = shadow_doc.delta_metadata(delta, new.metadata.get("desired", {}))
            body = {
                "version": new.version,
                "timestamp": now,
                "state": delta,
                "metadata": delta_meta,
            }
            replies.append(("update/delta", _with_token(body, token)))
        documents: dict[str, Any] = {}
        if previous is not None:
            documents["previous"] = previous.snapshot()
        documents.update(current=new.snapshot(), timestamp=now)
        replies.append(("update/documents", _with_token(documents, token)))
        return replies
