"""Where the live view's data comes from: a running bench, seen as its operator.

- at start: the registry (``things.json``), the revocation list and the stored shadows;
- live: an MQTT subscription with the bench's operator identity (``bench.operator``, the
  identity ``thingkit validate`` and the tests observe with) to the thingkit topics
  (status with its Last Will, telemetry, diag), the shadow service's ``update/documents``
  and ``delete/accepted`` replies, and the jobs notifications;
- the AWS IoT lifecycle events (``$aws/events/presence/...``) for how each link ended
  (clean disconnect, connection lost, keep-alive timeout, duplicate client id), and the
  broker log, read as it grows, for the connections it refused;
- jobs through the bench's jobs API (:class:`~host_tools.bench.jobs_service.JobsOperator`),
  read again shortly after a jobs notification;
- for virtual kits, their console log and their certificate (the public part only:
  ``flash/certs/device.crt.der``; the key file beside it is never opened).

The paho network thread hands each message to the asyncio loop, which owns the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import paho.mqtt.client as mqtt

from host_tools.bench import clients
from host_tools.bench.bench import Bench
from host_tools.bench.layout import OPERATOR_CN
from host_tools.bench.shadow_engine import ShadowStore
from host_tools.errors import UserError
from host_tools.view.model import Change, FleetModel, Thing, disconnect_reason

log = logging.getLogger("thingkit")
LOG_TAIL_S = 0.2  # how often the broker log and the consoles are read
LOG_BACKLOG = 512 * 1024  # bytes of broker log read at start, for past disconnects
JOBS_DEBOUNCE_S = 0.5
DRAIN_S = 0.05  # how often the loop takes the messages the MQTT thread queued
CERT_FILE = "flash/certs/device.crt.der"


def revoked_fingerprints(bench: Bench) -> set[str]:
    """Fingerprints the bench's fleet CA has revoked (read only; no CA is created)."""
    from provisioning.revocation import RevocationList

    if not bench.layout.fleet_ca.exists():
        return set()
    try:
        return {e.fingerprint.lower() for e in RevocationList(bench.layout.fleet_ca).entries}
    except Exception:  # noqa: BLE001  (an unreadable list: shown as not revoked)
        return set()


def subscriptions(prefix: str) -> list[tuple[str, int]]:
    """What the view subscribes to: state changes at QoS 1, the periodic streams
    (telemetry, diag, named shadows: the next one replaces a lost one) at QoS 0, which
    spares an acknowledgement per message. Named shadows other than ``diag`` are
    followed only for the things a kit page shows (:meth:`BenchSource.watch`)."""
    s = "$aws/things/+/shadow"
    return [
        (f"{prefix}/+/status", 1),
        (f"{prefix}/+/telemetry", 0),
        (f"{prefix}/+/diag", 0),
        (f"{s}/update/documents", 1),
        (f"{s}/delete/accepted", 1),
        (f"{s}/name/diag/update/documents", 0),
        (f"{s}/name/+/delete/accepted", 1),
        ("$aws/events/presence/+/+", 1),
        ("$aws/things/+/jobs/notify", 1),
        ("$aws/things/+/jobs/notify-next", 1),
    ]


def read_lines(path: Path, pos: int, skip_partial: bool = False) -> tuple[int, list[str]]:
    """Whole lines of a growing file from byte ``pos``: (new position, lines). A file
    shorter than ``pos`` was replaced and is read from its start; ``skip_partial`` drops
    the first line (``pos`` fell mid-line)."""
    try:
        size = path.stat().st_size
        if size < pos:
            pos, skip_partial = 0, False
        if size == pos:
            return pos, []
        with open(path, "rb") as f:
            f.seek(pos)
            data = f.read(size - pos)
    except FileNotFoundError:
        return pos, []
    end = data.rfind(b"\n") + 1  # the rest is read once its line is complete
    lines = data[:end].decode(errors="replace").splitlines()
    return pos + end, lines[1:] if skip_partial else lines


def read_named_shadows(directory: Path, thing: str) -> dict[str, dict[str, Any]]:
    """The named shadows of ``thing`` in the shadow service's store (one file each)."""
    from urllib.parse import quote

    out = {}
    for path in directory.glob(f"{quote(thing, safe='_-')}~*.json"):
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (
            isinstance(d, dict)
            and d.get("thing") == thing
            and d.get("shadow")
            and not d.get("deleted")
        ):
            out[d["shadow"]] = {k: d.get(k) for k in ("state", "metadata", "version")}
    return out


class BenchSource:
    """Feeds a :class:`FleetModel` from a running bench; calls ``on_change`` per change.

    Every method except :meth:`start`'s MQTT callbacks runs on the asyncio loop.
    :class:`host_tools.view.remote.RemoteSource` offers the same methods from MQTT only.
    """

    remote = False
    unavailable: ClassVar[dict[str, str]] = {}  # nothing: the bench has it all

    def __init__(
        self,
        bench: Bench,
        kits_dirs: list[Path],
        on_change: Callable[[Change], None],
        on_rollouts: Callable[[], None] = lambda: None,
    ) -> None:
        self.bench = bench
        self.kits_dirs = kits_dirs
        self.model = FleetModel(bench.topic_prefix)
        self.on_change = on_change
        self.on_rollouts = on_rollouts
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: mqtt.Client | None = None
        self.connected = threading.Event()
        self._tasks: list[asyncio.Task] = []
        self._jobs_pending = False
        self._lock = threading.Lock()
        self._inbox: list[tuple[str, bytes, float, bool]] = []
        self._watched: dict[str, int] = {}

    def describe(self) -> str:
        return str(self.bench.layout.root)

    # -- start / stop ------------------------------------------------------------------
    async def start(self) -> None:
        """Load the saved state, subscribe, start the log reader; raise UserError if the
        bench broker cannot be reached."""
        self.loop = asyncio.get_running_loop()
        self.bench.require_up()
        self._load()
        c = clients.make_client(self.bench.layout, OPERATOR_CN, f"view-{uuid.uuid4().hex[:8]}")
        c.on_message = self._on_message
        # paho's hints say int; it takes seconds as a float (Observer does the same).
        c.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]
        self.client = c
        topics = subscriptions(self.model.prefix)
        ok = await self.loop.run_in_executor(
            None, lambda: clients.connect_subscribed(c, self.bench.port, topics, 10, True)
        )
        if not ok:
            raise UserError("the bench broker did not confirm the view's subscriptions")

        def on_connect(cl: mqtt.Client, *a: object) -> None:  # again after a broker restart
            named = [(f"$aws/things/{t}/shadow/name/+/update/documents", 0) for t in self._watched]
            cl.subscribe(topics + named)

        c.on_connect = on_connect
        self._tasks.append(asyncio.create_task(self._drain_loop()))
        self._tasks.append(asyncio.create_task(self._tail_broker_log()))
        self._tasks.append(asyncio.create_task(self._refresh_jobs()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    def _load(self) -> None:
        m = self.model
        m.load_registry(self.bench.things(), revoked_fingerprints(self.bench))
        if self.bench.layout.shadows.exists():
            for (thing, shadow), rec in ShadowStore(self.bench.layout.shadows).load().items():
                if not rec.deleted and shadow in (None, "diag"):  # the rest: see watch()
                    m.load_shadow(
                        thing,
                        shadow,
                        {"state": rec.state, "metadata": rec.metadata, "version": rec.version},
                    )

    # -- MQTT (paho thread) -----------------------------------------------------------
    def _on_message(self, c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        # Queued here and taken by the loop in batches (_drain_loop): waking the loop
        # for each message would cost more than handling it.
        item = (msg.topic, bytes(msg.payload), time.time(), bool(msg.retain))
        with self._lock:
            self._inbox.append(item)

    async def _drain_loop(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_S)
            if self._inbox:
                self._drain()

    def _drain(self) -> None:
        with self._lock:
            batch, self._inbox = self._inbox, []
        for topic, payload, t, retained in batch:
            ch = self.model.ingest(topic, payload, t, retained)
            if ch is None:
                continue
            if "jobs_hint" in ch.kinds:
                self.schedule_jobs()
                continue
            self.on_change(ch)

    # -- one kit's named shadows, while a page shows it ----------------------------------
    def watch(self, thing: str) -> None:
        """Follow every named shadow of ``thing`` (a kit page opened): read them from
        the shadow store, then subscribe to their updates."""
        n = self._watched.get(thing, 0)
        self._watched[thing] = n + 1
        if n:
            return
        for shadow, doc in read_named_shadows(self.bench.layout.shadows, thing).items():
            self.model.load_shadow(thing, shadow, doc)
        if self.client is not None:
            self.client.subscribe(f"$aws/things/{thing}/shadow/name/+/update/documents", 0)

    def unwatch(self, thing: str) -> None:
        n = self._watched.get(thing, 0) - 1
        if n > 0:
            self._watched[thing] = n
            return
        self._watched.pop(thing, None)
        if self.client is not None:
            self.client.unsubscribe(f"$aws/things/{thing}/shadow/name/+/update/documents")

    # -- jobs ----------------------------------------------------------------------
    def schedule_jobs(self) -> None:
        """Read the jobs again soon (many notifications make one read)."""
        if not self._jobs_pending:
            self._jobs_pending = True
            self._tasks.append(asyncio.create_task(self._refresh_jobs(JOBS_DEBOUNCE_S)))

    async def _refresh_jobs(self, delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        self._jobs_pending = False
        assert self.loop is not None
        try:
            jobs = await self.loop.run_in_executor(None, self._read_jobs)
        except UserError as e:
            log.warning("view: jobs not read: %s", e)
            return
        for name in self.model.set_jobs(jobs):
            self.on_change(Change(name, {"row", "jobs"}))
        self.on_rollouts()

    def _read_jobs(self) -> list[dict[str, Any]]:
        """Every job with its executions, through the bench's jobs API (a fresh client:
        the broker may have restarted since the last read)."""
        from host_tools.bench.jobs_service import JobsOperator

        with JobsOperator(self.bench) as ops:
            out = []
            for j in ops.list_jobs():
                doc = ops.describe_job(j["jobId"])
                doc["executions"] = ops.list_job_executions(j["jobId"])
                out.append(doc)
            return out

    # -- broker log ------------------------------------------------------------------
    async def _tail_broker_log(self) -> None:
        path = self.bench.layout.broker_log
        try:
            pos = max(0, path.stat().st_size - LOG_BACKLOG)
        except FileNotFoundError:
            pos = 0
        first = True
        while True:
            pos, lines = read_lines(path, pos, skip_partial=first and pos > 0)
            first = False
            for line in lines:
                got = disconnect_reason(line)
                if got:
                    ch = self.model.note_disconnect(got[0], got[1], time.time())
                    if ch:
                        self.on_change(ch)
            await asyncio.sleep(LOG_TAIL_S)

    # -- virtual kits ---------------------------------------------------------------
    def kit_dir(self, thing: str) -> Path | None:
        """The virtual kit directory of ``thing`` if there is one."""
        for d in self.kits_dirs:
            p = d / thing
            if (p / "flash").is_dir() or (p / "console.log").exists():
                return p
        return None

    def certificate(self, thing: str) -> dict[str, Any]:
        """The thing's certificate: expiry, fingerprint, serial, revoked. Public data
        only; the private key is never read."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        th = self.model.things.get(thing) or Thing(thing)
        revoked = revoked_fingerprints(self.bench)
        out: dict[str, Any] = {"fingerprint": th.fingerprint or None, "source": "registry"}
        d = self.kit_dir(thing)
        if d is not None and (d / CERT_FILE).is_file():
            cert = x509.load_der_x509_certificate((d / CERT_FILE).read_bytes())
            out = {
                "source": str(d / CERT_FILE),
                "subject": cert.subject.rfc4514_string(),
                "issuer": cert.issuer.rfc4514_string(),
                "serial": f"{cert.serial_number:x}",
                "fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
                "not_before": cert.not_valid_before_utc.timestamp(),
                "not_after": cert.not_valid_after_utc.timestamp(),
            }
        fp = (out.get("fingerprint") or "").lower()
        out["revoked"] = bool(fp) and fp in revoked
        out["registered_fingerprint"] = th.fingerprint or None
        out["matches_registry"] = bool(fp) and fp == (th.fingerprint or "").lower()
        th.revoked = out["revoked"]
        return out

    # -- safe actions (run in an executor thread) ---------------------------------------
    def set_desired(self, thing: str, desired: dict[str, Any], timeout: float = 10.0) -> dict:
        """Write ``desired`` into the thing's classic shadow as the operator; return the
        shadow service's answer (``{"accepted": bool, ...}``)."""
        token = uuid.uuid4().hex[:16]
        base = f"$aws/things/{thing}/shadow/update"
        got: dict[str, Any] = {}
        done = threading.Event()
        c = clients.make_client(self.bench.layout, OPERATOR_CN, f"view-act-{token[:8]}")

        def on_message(cl: mqtt.Client, ud: object, msg: mqtt.MQTTMessage) -> None:
            try:
                doc = json.loads(msg.payload)
            except ValueError:
                return
            if isinstance(doc, dict) and doc.get("clientToken") == token:
                got.update(doc, accepted=msg.topic.endswith("/accepted"))
                done.set()

        c.on_message = on_message
        topics = [(base + "/accepted", 1), (base + "/rejected", 1)]
        try:
            if not clients.connect_subscribed(c, self.bench.port, topics, timeout):
                raise UserError("the bench broker did not confirm a subscription")
            body = {"state": {"desired": desired}, "clientToken": token}
            c.publish(base, json.dumps(body).encode(), qos=1).wait_for_publish(timeout)
            if not done.wait(timeout):
                raise UserError(f"no answer from the shadow service for {thing}")
        finally:
            c.disconnect()
            c.loop_stop()
        return got

    def cancel_job(self, job_id: str, force: bool = False) -> None:
        from host_tools.bench.jobs_service import JobsOperator

        with JobsOperator(self.bench) as ops:
            ops.cancel_job(job_id, force=force, comment="cancelled in thingkit view")

    def revoke(self, thing: str, reason: str = "unspecified") -> dict[str, Any]:
        """Revoke the thing's certificate on the bench (CRL published, broker restarted)."""
        from cryptography import x509

        from host_tools.bench.registry import revoke_on_bench

        d = self.kit_dir(thing)
        if d is None or not (d / CERT_FILE).is_file():
            raise UserError(
                f"no certificate of {thing} found",
                "the view revokes certificates of the virtual kits it can see",
                "thingkit provision revoke --cert FILE",
            )
        cert = x509.load_der_x509_certificate((d / CERT_FILE).read_bytes())
        entry, new = revoke_on_bench(self.bench, cert, thing, reason)
        return {"serial": entry.serial, "fingerprint": entry.fingerprint, "new": new}
