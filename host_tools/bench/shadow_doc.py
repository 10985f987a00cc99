"""Pure JSON operations behind the Device Shadow emulation.

Everything here works on plain ``dict``/``list``/scalar trees as produced by
:func:`json.loads`, returns new trees, and never mutates its arguments. The
rules follow the AWS IoT Device Shadow developer guide ("Device Shadow service
documents": delta state, empty properties, arrays):

* ``null`` in an update deletes the key; an object left empty by deletions is
  removed, and a section (``desired``/``reported``) that ends up empty is
  removed from the document.
* Arrays are values: an update replaces the whole array, and the delta carries
  the whole desired array when it differs from the reported one.
* The delta holds every desired field that differs from, or is absent from,
  ``reported``; nested differences keep their full path from the root.
* Metadata mirrors the state: each leaf gets ``{"timestamp": epoch_s}``, an
  array gets a list with one metadata entry per element.
"""

from __future__ import annotations

import json
from typing import Any

SECTIONS = ("desired", "reported")
MAX_SECTION_DEPTH = 6


def json_equal(left: Any, right: Any) -> bool:
    """Compare two JSON values the way JSON sees them.

    Unlike ``==`` this keeps booleans apart from numbers (``True != 1``) while
    treating ``1`` and ``1.0`` as the same number.

    Args:
        left: A JSON value.
        right: Another JSON value.

    Returns:
        True when both values denote the same JSON value.
    """
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(json_equal, left, right))
    return type(left) is type(right) and left == right


def _strip_nulls(node: dict[str, Any]) -> dict[str, Any]:
    """Copy a new subtree, dropping ``null`` keys and objects left empty."""
    result: dict[str, Any] = {}
    for key, value in node.items():
        if value is None:
            continue
        if isinstance(value, dict):
            value = _strip_nulls(value)
            if not value:
                continue
        result[key] = value
    return result


def merge_section(current: dict[str, Any] | None, patch: dict[str, Any]) -> dict[str, Any]:
    """Apply one update section (``desired`` or ``reported``) to the stored one.

    Args:
        current: The stored section, or None when it does not exist.
        patch: The section from the update request (an object).

    Returns:
        The merged section; empty when nothing is left (the caller drops it).
    """
    result = dict(current or {})
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            existing = result.get(key)
            merged = (
                merge_section(existing, value)
                if isinstance(existing, dict)
                else _strip_nulls(value)
            )
            if merged:
                result[key] = merged
            else:
                result.pop(key, None)
        else:
            result[key] = value
    return result


def apply_state(
    state: dict[str, Any],
    metadata: dict[str, Any],
    patch: dict[str, Any] | None,
    timestamp: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply an update's ``state`` node to a stored state and its metadata.

    Args:
        state: The stored ``{"desired"?, "reported"?}``.
        metadata: The metadata stored for ``state``.
        patch: The request's validated ``state`` node; None (``"state": null``)
            clears everything.
        timestamp: Epoch seconds of this update.

    Returns:
        The new state and metadata; empty sections are left out.
    """
    new_state: dict[str, Any] = {}
    new_meta: dict[str, Any] = {}
    if patch is None:
        return new_state, new_meta
    for name in SECTIONS:
        old = state.get(name)
        if name not in patch:
            if old:
                new_state[name], new_meta[name] = old, metadata.get(name, {})
            continue
        if patch[name] is None:
            continue
        merged = merge_section(old, patch[name])
        if merged:
            new_state[name] = merged
            new_meta[name] = merge_metadata(merged, old, metadata.get(name), patch[name], timestamp)
    return new_state, new_meta


def state_size(state: dict[str, Any]) -> int:
    """Bytes counted against the shadow size limit: desired plus reported.

    Metadata, version and the ``state`` wrapper do not count.

    Args:
        state: A stored ``{"desired"?, "reported"?}``.

    Returns:
        The compact UTF-8 JSON size of desired plus that of reported.
    """
    return sum(encoded_size(state.get(name)) for name in SECTIONS)


def compute_delta(
    desired: dict[str, Any] | None, reported: dict[str, Any] | None
) -> dict[str, Any]:
    """Compute the delta between the desired and reported sections.

    Args:
        desired: The stored desired section, or None.
        reported: The stored reported section, or None.

    Returns:
        Every desired field that differs from or is missing in ``reported``,
        with nested differences under their full path; empty when in sync.
    """
    if not desired:
        return {}
    reported = reported or {}
    delta: dict[str, Any] = {}
    for key, want in desired.items():
        if key not in reported:
            delta[key] = want
        elif isinstance(want, dict) and isinstance(reported[key], dict):
            nested = compute_delta(want, reported[key])
            if nested:
                delta[key] = nested
        elif not json_equal(want, reported[key]):
            delta[key] = want
    return delta


def metadata_for(value: Any, timestamp: int) -> Any:
    """Build the metadata tree mirroring a request value.

    Args:
        value: Any JSON value from a request (``null`` included).
        timestamp: Epoch seconds to stamp on every leaf.

    Returns:
        ``{"timestamp": t}`` for a leaf, a list for an array, a dict for an
        object.
    """
    if isinstance(value, dict):
        return {key: metadata_for(item, timestamp) for key, item in value.items()}
    if isinstance(value, list):
        return [metadata_for(item, timestamp) for item in value]
    return {"timestamp": timestamp}


def merge_metadata(
    state: dict[str, Any],
    old_state: Any,
    old_meta: Any,
    patch: dict[str, Any],
    timestamp: int,
) -> dict[str, Any]:
    """Compute the stored metadata of a section after an update.

    The walk follows the new state, so the metadata always has exactly the
    shape of the state: untouched fields keep their timestamps, fields named
    in the patch get fresh ones, deleted fields lose theirs.

    Args:
        state: The section after the merge (an object).
        old_state: The section before the merge (any value, or None).
        old_meta: The metadata stored for ``old_state``.
        patch: The section from the update request.
        timestamp: Epoch seconds of this update.

    Returns:
        Metadata for ``state``.
    """
    keep = isinstance(old_state, dict) and isinstance(old_meta, dict)
    old_state_map: dict[str, Any] = old_state if keep else {}
    old_meta_map: dict[str, Any] = old_meta if keep else {}
    result: dict[str, Any] = {}
    for key, value in state.items():
        if key in patch:
            sub_patch = patch[key]
            if isinstance(sub_patch, dict) and isinstance(value, dict):
                result[key] = merge_metadata(
                    value, old_state_map.get(key), old_meta_map.get(key), sub_patch, timestamp
                )
            else:
                result[key] = metadata_for(value, timestamp)
        elif key in old_meta_map:
            result[key] = old_meta_map[key]
        else:
            result[key] = metadata_for(value, timestamp)
    return result


def delta_metadata(delta: dict[str, Any], desired_meta: dict[str, Any]) -> dict[str, Any]:
    """Pick the desired metadata that matches the delta's shape.

    Args:
        delta: The delta state.
        desired_meta: The metadata stored for the desired section.

    Returns:
        Metadata for the delta; its values equal the desired metadata.
    """
    result: dict[str, Any] = {}
    for key, value in delta.items():
        meta = desired_meta.get(key, {})
        if isinstance(value, dict) and isinstance(meta, dict):
            result[key] = delta_metadata(value, meta)
        else:
            result[key] = meta
    return result


def nesting_depth(value: Any) -> int:
    """Count nested objects and arrays, the value itself included.

    A scalar is depth 0, ``{"a": 1}`` is 1, ``{"a": {"b": [1]}}`` is 3.

    Args:
        value: Any JSON value.

    Returns:
        The nesting depth.
    """
    if isinstance(value, dict):
        return 1 + max((nesting_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((nesting_depth(item) for item in value), default=0)
    return 0


def has_null_in_array(value: Any, in_array: bool = False) -> bool:
    """Tell whether any array inside ``value`` holds a ``null``.

    Args:
        value: Any JSON value.
        in_array: Whether ``value`` is itself an array element.

    Returns:
        True when an array element (at any depth) is ``null``.
    """
    if value is None:
        return in_array
    if isinstance(value, dict):
        return any(has_null_in_array(item) for item in value.values())
    if isinstance(value, list):
        return any(has_null_in_array(item, in_array=True) for item in value)
    return False


def state_problem(state: dict[str, Any]) -> str | None:
    """Check an update's ``state`` node the way the Device Shadow service does.

    Args:
        state: The request's ``state`` object.

    Returns:
        The AWS error message (HTTP 400) for the first problem found, or None.
    """
    for name in state:
        if name not in SECTIONS:
            return f"State contains an invalid node: '{name}'"
    for name in SECTIONS:
        section = state.get(name)
        if section is not None and not isinstance(section, dict):
            return f"{name.capitalize()} node must be an object"
        if nesting_depth(section) > MAX_SECTION_DEPTH:
            return f"JSON contains too many levels of nesting; maximum is {MAX_SECTION_DEPTH}"
        if has_null_in_array(section):
            return "State contains an invalid node"
    return None


def encoded_size(value: Any) -> int:
    """Size in bytes of a value serialised as compact UTF-8 JSON.

    Args:
        value: Any JSON value.

    Returns:
        The byte count; 0 for None (an absent section).
    """
    if value is None:
        return 0
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
