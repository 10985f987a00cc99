"""What the live view knows about the fleet, built from what the bench broker carries.

Pure data, no I/O: :class:`FleetModel` is fed MQTT messages (:meth:`FleetModel.ingest`),
shadow documents read at start, broker-log disconnect lines and job listings, and
answers with what changed, so the server can push only that to the browsers::

    model = FleetModel("thingkit")
    change = model.ingest("thingkit/kit-1/status", b'{"state":"online"}', time.time(), False)
    change.thing, change.kinds   # ("kit-1", {"row"})
    model.things["kit-1"].row()  # the fleet-table row of kit-1

Nothing of a private key ever enters the model: it holds shadow documents, device
messages, job documents and certificate metadata (expiry, fingerprint, serial).
"""

from __future__ import annotations

import json
import re
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from host_tools.bench.shadow_doc import compute_delta

HISTORY_S = 3600.0  # telemetry kept per kit: the last hour
MAX_POINTS = 720  # and at most this many points per series (5 s interval for an hour)
CONSOLE_LINES = 200
OTA_OPERATION = "thingkit.ota"
_LIVE_JOB = {"QUEUED", "IN_PROGRESS", "SUCCEEDED"}
_FAILED = {"FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED"}

# AWS IoT lifecycle events ($aws/events/presence/disconnected/<clientId>): how a link
# ended. The bench publishes them from its broker log, as AWS IoT Core does itself.
PRESENCE_REASONS = {
    "CLIENT_INITIATED_DISCONNECT": "clean disconnect",
    "CONNECTION_LOST": "connection lost (no DISCONNECT)",
    "MQTT_KEEP_ALIVE_TIMEOUT": "keep-alive timeout",
    "DUPLICATE_CLIENTID": "taken over (duplicate client id)",
    "CLIENT_ERROR": "client error",
    "AUTH_ERROR": "refused (authentication)",
    "FORBIDDEN_ACCESS": "refused (not authorised)",
    "SERVER_INITIATED_DISCONNECT": "disconnected by the server",
    "THROTTLED": "throttled",
}
# What lifecycle events cannot say (the client never had a session): mosquitto's log
# line for a connection it refused. The client id is the thing name.
_LOG_REASONS = [
    (re.compile(r"Client (\S+) disconnected, not authori[sz]ed"), "refused (not authorised)"),
]


def disconnect_reason(line: str) -> tuple[str, str] | None:
    """(client id, reason) of a mosquitto log line about a refused client, else None."""
    for rx, reason in _LOG_REASONS:
        m = rx.search(line.rstrip())
        if m:
            return m.group(1), reason
    return None


class Series:
    """One telemetry reading over time: two packed arrays, trimmed to the history."""

    __slots__ = ("t", "v")

    def __init__(self) -> None:
        self.t = array("d")
        self.v = array("d")

    def add(self, t: float, v: float) -> None:
        self.t.append(t)
        self.v.append(v)
        cut = 0
        while cut < len(self.t) and (self.t[cut] < t - HISTORY_S or len(self.t) - cut > MAX_POINTS):
            cut += 1
        if cut:
            del self.t[:cut]
            del self.v[:cut]

    def points(self) -> list[list[float]]:
        return [[round(t, 3), v] for t, v in zip(self.t, self.v, strict=True)]


@dataclass
class Thing:
    """One thing as the view shows it."""

    name: str
    registered: float | None = None
    fingerprint: str = ""
    online: bool | None = None
    since: float | None = None
    status_reason: str = ""  # from the status message: Last Will or a clean shutdown
    log_reason: str = ""  # from lifecycle events (or the broker log): how the link ended
    log_reason_t: float | None = None
    fw: str = ""
    target: str = ""
    board: str = ""
    vitals: dict[str, Any] = field(default_factory=dict)
    degraded: str = ""
    last_seen: float | None = None
    revoked: bool = False
    telemetry_at: float | None = None
    shadows: dict[str, dict[str, Any]] = field(default_factory=dict)  # "" = classic
    series: dict[str, Series] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)

    def set_online(self, online: bool, t: float | None) -> bool:
        """Record online/offline; ``since`` moves only when the value changes."""
        if self.online is online:
            if self.since is None and t is not None:
                self.since = t
                return True
            return False
        self.online, self.since = online, t
        return True

    def reason(self) -> str:
        """The last disconnect, as one phrase: the Last Will and the broker's account
        (its lifecycle event)."""
        parts = [p for p in (self.status_reason, self.log_reason) if p]
        return " · ".join(parts)

    def row(self) -> dict[str, Any]:
        """The fleet-table row."""
        v = self.vitals
        outbox = v.get("outbox") if isinstance(v.get("outbox"), dict) else {}
        return {
            "name": self.name,
            "online": self.online,
            "since": self.since,
            "reason": self.reason(),
            "fw": self.fw,
            "target": self.target,
            "drift": bool(self.target and self.fw and self.target != self.fw),
            "board": self.board,
            "heap_free": v.get("heap_free"),
            "heap_min_free": v.get("heap_min_free"),
            "rssi": v.get("rssi"),
            "reconnects": v.get("reconnects"),
            "outbox": outbox.get("queued") if outbox else None,
            "degraded": self.degraded,
            "last_seen": self.last_seen,
            "revoked": self.revoked,
            "registered": self.registered is not None,
        }

    def shadow_view(self) -> dict[str, Any]:
        """Every shadow with its delta (desired minus reported), classic first."""
        out = {}
        for name in sorted(self.shadows, key=lambda n: (n != "", n)):
            doc = self.shadows[name]
            if "raw" in doc:
                cur = (_json(doc["raw"]) or {}).get("current")
                doc = self.shadows[name] = cur if isinstance(cur, dict) else {}
            state = doc.get("state") or {}
            delta = compute_delta(state.get("desired"), state.get("reported"))
            out[name or "classic"] = {
                "desired": state.get("desired"),
                "reported": state.get("reported"),
                "delta": delta or None,
                "version": doc.get("version"),
                "metadata": doc.get("metadata"),
            }
        return out

    def telemetry_view(self) -> dict[str, dict[str, list[list[float]]]]:
        """Series per component: ``{component: {reading: [[t, v], ...]}}``."""
        out: dict[str, dict[str, list[list[float]]]] = {}
        for key, s in sorted(self.series.items()):
            comp, _, reading = key.partition(".")
            out.setdefault(comp, {})[reading] = s.points()
        return out


@dataclass
class Change:
    """What one input changed: the thing, which parts, and data for an open kit page."""

    thing: str
    kinds: set[str]
    data: dict[str, Any] = field(default_factory=dict)


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class FleetModel:
    """Every thing of the bench and what the broker said about it."""

    def __init__(self, prefix: str = "thingkit") -> None:
        self.prefix = prefix
        self.things: dict[str, Thing] = {}
        self.jobs: list[dict[str, Any]] = []  # describe_job docs with "executions"
        self.messages = 0

    def thing(self, name: str) -> Thing:
        t = self.things.get(name)
        if t is None:
            t = self.things[name] = Thing(name)
        return t

    # -- start-up state --------------------------------------------------------------
    def load_registry(self, things: dict[str, dict[str, Any]], revoked: set[str]) -> None:
        """Things registered on the bench (``things.json``) and revoked fingerprints."""
        for name, info in things.items():
            t = self.thing(name)
            t.registered = info.get("registered")
            t.fingerprint = info.get("fingerprint", "")
            t.revoked = bool(t.fingerprint) and t.fingerprint.lower() in revoked

    def load_shadow(self, thing: str, shadow: str | None, doc: dict[str, Any]) -> None:
        """A stored shadow (state, metadata, version) read when the view starts."""
        self._set_shadow(self.thing(thing), shadow or "", doc, None)

    # -- live input ----------------------------------------------------------------
    def ingest(self, topic: str, payload: bytes, t: float, retained: bool) -> Change | None:
        """One message seen on the broker; what it changed, or None."""
        self.messages += 1
        parts = topic.split("/")
        if parts[0] == "$aws" and len(parts) == 5 and parts[1:3] == ["events", "presence"]:
            return self._presence(parts[3], parts[4], payload, t)
        if parts[0] == "$aws" and len(parts) >= 5 and parts[1] == "things":
            if parts[3] == "shadow":
                return self._shadow_msg(parts[2], parts[4:], payload, t)
            if parts[3] == "jobs":
                return Change(parts[2], {"jobs_hint"})
            return None
        if len(parts) != 3 or parts[0] != self.prefix:
            return None
        name, kind = parts[1], parts[2]
        doc = _json(payload)
        if not isinstance(doc, dict):
            return None
        if kind == "status":
            return self._status(name, doc, t, retained)
        if kind == "telemetry" and not retained:
            return self._telemetry(name, doc, t)  # no fleet-table column changes
        if kind == "diag" and not retained:
            th = self.thing(name)
            th.vitals = doc
            th.last_seen = t
            return Change(name, {"row", "vitals"}, {"vitals": doc})
        return None

    def _status(self, name: str, doc: dict[str, Any], t: float, retained: bool) -> Change:
        th = self.thing(name)
        state = doc.get("state")
        if retained:
            ts = doc.get("ts")
            when: float | None = None
            if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts > 1e12:
                when = ts / 1000  # the device's clock in ms, once it was set
        else:
            when = t
            th.last_seen = t
        if doc.get("fw"):
            th.fw = th.fw or str(doc["fw"])
        if state == "online":
            th.set_online(True, when)
        elif state == "offline":
            reason = doc.get("reason")
            th.status_reason = {
                "connection_lost": "Last Will (connection lost)",
                "shutdown": "clean shutdown",
            }.get(str(reason), str(reason or "offline"))
            th.set_online(False, when)
        return Change(name, {"row"})

    def _presence(self, event: str, client_id: str, payload: bytes, t: float) -> Change | None:
        th = self.things.get(client_id)  # bench and operator clients have no row
        doc = _json(payload)
        if th is None or event != "disconnected" or not isinstance(doc, dict):
            return None
        code = str(doc.get("disconnectReason") or "")
        th.log_reason = PRESENCE_REASONS.get(code, code.lower().replace("_", " "))
        th.log_reason_t = t
        return Change(client_id, {"row"})

    def _telemetry(self, name: str, doc: dict[str, Any], t: float) -> Change:
        th = self.thing(name)
        th.last_seen = th.telemetry_at = t
        readings = doc.get("readings")
        point: dict[str, dict[str, float]] = {}
        if isinstance(readings, dict):
            for comp, values in readings.items():
                if not isinstance(values, dict):
                    continue
                for key, v in values.items():
                    if _number(v):
                        s = th.series.get(f"{comp}.{key}")
                        if s is None:
                            s = th.series[f"{comp}.{key}"] = Series()
                        s.add(t, float(v))
                        point.setdefault(comp, {})[key] = float(v)
        return Change(name, {"telemetry"}, {"t": round(t, 3), "readings": point})

    def _shadow_msg(self, name: str, rest: list[str], payload: bytes, t: float) -> Change | None:
        shadow = ""
        if rest[0] == "name" and len(rest) >= 3:
            shadow, rest = rest[1], rest[2:]
        op = "/".join(rest)
        if op not in ("update/documents", "delete/accepted", "get/accepted"):
            return None
        th = self.thing(name)
        if op == "get/accepted":  # the answer to a shadow get: the document itself
            doc = _json(payload)
            if not isinstance(doc, dict) or not isinstance(doc.get("state"), dict):
                return None
            known = th.shadows.get(shadow) or {}
            if "raw" in known:
                known = (_json(known["raw"]) or {}).get("current") or {}
            if _number(known.get("version")) and known["version"] >= (doc.get("version") or 0):
                return None  # an update seen since is newer
            self._set_shadow(th, shadow, doc, None)
            return Change(name, {"row", "shadow"})
        if op == "delete/accepted":
            th.shadows.pop(shadow, None)
            return Change(name, {"row", "shadow"})
        if shadow not in ("", "diag"):
            # Other named shadows (App #2 values...) are shown on the kit page only:
            # kept as received, parsed when a page asks.
            th.shadows[shadow] = {"raw": payload}
            return Change(name, {"shadow"})
        doc = _json(payload)
        if not isinstance(doc, dict) or not isinstance(doc.get("current"), dict):
            return None
        self._set_shadow(th, shadow, doc["current"], t)
        return Change(name, {"row", "shadow"})

    def _set_shadow(self, th: Thing, shadow: str, doc: dict[str, Any], t: float | None) -> None:
        th.shadows[shadow] = {
            "state": doc.get("state") or {},
            "metadata": doc.get("metadata") or {},
            "version": doc.get("version"),
        }
        rep = (doc.get("state") or {}).get("reported") or {}
        if not isinstance(rep, dict):
            return
        if shadow == "diag":
            th.vitals = {**rep, **th.vitals} if th.vitals else dict(rep)
            return
        if shadow:
            return
        if rep.get("fw"):
            th.fw = str(rep["fw"])
        if rep.get("board"):
            th.board = str(rep["board"])
        boot = rep.get("boot")
        th.degraded = str(boot.get("degraded", "")) if isinstance(boot, dict) else ""
        if isinstance(rep.get("connected"), bool):
            when = t
            if when is None:  # at start: when the shadow last said so
                meta = ((doc.get("metadata") or {}).get("reported") or {}).get("connected")
                when = meta.get("timestamp") if isinstance(meta, dict) else None
            th.set_online(rep["connected"], when)

    def note_disconnect(self, client_id: str, reason: str, t: float) -> Change | None:
        """A broker-log line about a client going away (client id = thing name)."""
        th = self.things.get(client_id)
        if th is None:
            return None
        th.log_reason, th.log_reason_t = reason, t
        return Change(client_id, {"row"})

    # -- jobs and rollouts -----------------------------------------------------------
    def set_pending_jobs(self, thing: str, payload: bytes) -> Change | None:
        """A thing's pending jobs from the jobs device API (``jobs/notify``, or the
        answer of ``jobs/get``): ids and states without the job documents, which only
        the control plane gives (a remote cloud's view)."""
        doc = _json(payload)
        if not isinstance(doc, dict):
            return None
        if isinstance(doc.get("jobs"), dict):  # notify: {"jobs": {"QUEUED": [...], ...}}
            groups = doc["jobs"]
        elif "queuedJobs" in doc or "inProgressJobs" in doc:  # get/accepted
            groups = {"QUEUED": doc.get("queuedJobs"), "IN_PROGRESS": doc.get("inProgressJobs")}
        else:
            return None
        mine = []
        for status, entries in groups.items():
            for e in entries if isinstance(entries, list) else []:
                if isinstance(e, dict) and e.get("jobId"):
                    mine.append(
                        {
                            "jobId": str(e["jobId"]),
                            "status": status,
                            "jobStatus": "",
                            "operation": "",
                            "version": "",
                            "queuedAt": e.get("queuedAt"),
                            "lastUpdatedAt": e.get("lastUpdatedAt"),
                            "statusDetails": {},
                        }
                    )
        mine.sort(key=lambda e: e.get("queuedAt") or 0)
        th = self.thing(thing)
        if mine == th.jobs:
            return None
        th.jobs = mine
        return Change(thing, {"jobs"})

    def set_jobs(self, jobs: list[dict[str, Any]]) -> list[str]:
        """Replace the job listing (describe_job docs, each with ``executions``); return
        the things whose jobs or target version changed."""
        self.jobs = jobs
        per: dict[str, list[dict[str, Any]]] = {}
        for job in jobs:
            doc = job.get("document") or {}
            for ex in job.get("executions", []):
                per.setdefault(ex["thingName"], []).append(
                    {
                        "jobId": job["jobId"],
                        "status": ex.get("status"),
                        "jobStatus": job.get("status"),
                        "operation": doc.get("operation", ""),
                        "version": doc.get("version", ""),
                        "queuedAt": ex.get("queuedAt"),
                        "lastUpdatedAt": ex.get("lastUpdatedAt"),
                        "statusDetails": ex.get("statusDetails") or {},
                    }
                )
        changed = []
        for name in set(per) | {n for n, t in self.things.items() if t.jobs}:
            th = self.thing(name)
            mine = sorted(per.get(name, []), key=lambda e: e.get("queuedAt") or 0)
            target = ""
            for e in mine:
                if e["operation"] == OTA_OPERATION and e["status"] in _LIVE_JOB and e["version"]:
                    target = str(e["version"])
            if mine != th.jobs or target != th.target:
                th.jobs, th.target = mine, target
                changed.append(name)
        return changed

    def rollouts(self) -> list[dict[str, Any]]:
        """OTA rollouts: canary job ``<id>-canary`` and the rest ``<id>``, with progress."""
        by_id: dict[str, dict[str, Any]] = {}
        for job in self.jobs:
            doc = job.get("document") or {}
            if doc.get("operation") != OTA_OPERATION:
                continue
            jid = job["jobId"]
            canary = jid.endswith("-canary")
            rid = jid[: -len("-canary")] if canary else jid
            r = by_id.setdefault(
                rid, {"id": rid, "version": doc.get("version", ""), "stages": {}, "t": 0}
            )
            r["t"] = max(r["t"], job.get("createdAt") or 0)
            r["stages"]["canary" if canary else "rest"] = _stage(job)
        out = sorted(by_id.values(), key=lambda r: -r["t"])
        for r in out:
            st = r["stages"]
            if "canary" in st and st["canary"]["status"] == "CANCELED" and "rest" not in st:
                r["state"] = "aborted"
            elif any(s["status"] == "IN_PROGRESS" for s in st.values()):
                r["state"] = "in progress"
            elif "rest" not in st:
                r["state"] = "canary done, rest not created"
            else:
                r["state"] = str(st["rest"]["status"]).lower()
        return out


def _stage(job: dict[str, Any]) -> dict[str, Any]:
    exs = job.get("executions", [])
    counts: dict[str, int] = {}
    for ex in exs:
        counts[ex.get("status", "?")] = counts.get(ex.get("status", "?"), 0) + 1
    ended = sum(n for s, n in counts.items() if s in _FAILED or s == "SUCCEEDED")
    failed = sum(n for s, n in counts.items() if s in _FAILED)
    threshold = None
    for c in (job.get("abortConfig") or {}).get("criteriaList", []):
        if "thresholdPercentage" in c:
            threshold = float(c["thresholdPercentage"])
    return {
        "jobId": job["jobId"],
        "status": job.get("status"),
        "total": len(exs),
        "counts": counts,
        "ended": ended,
        "failure_rate": round(100.0 * failed / ended, 1) if ended else 0.0,
        "abort_threshold": threshold,
        "executions": [
            {"thing": ex["thingName"], "status": ex.get("status")}
            for ex in sorted(exs, key=lambda e: e["thingName"])
        ],
    }


def now() -> float:
    return time.time()
