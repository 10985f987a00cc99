"""The live view of a remote cloud, from MQTT only: AWS IoT Core, or a bench reached as one.

:class:`RemoteSource` feeds the same :class:`~host_tools.view.model.FleetModel` as
:class:`~host_tools.view.source.BenchSource`, but reads no bench file: it connects to
an endpoint over TLS 1.2 with an operator identity (certificate, key, CA: the identity
``thingkit validate --cloud remote`` observes with) and subscribes, per named thing, to
named topics only, never a wildcard, since an AWS IoT policy grants topic filters one
by one (:func:`view_topics` lists them, for the policy too):

- ``<prefix>/<thing>/status`` (the online message and the Last Will), ``telemetry``, ``diag``;
- the classic shadow and the named shadows (``app2``, ``diag``): ``update/documents``,
  ``update/accepted|rejected`` (the answer to a desired value set from the page),
  ``get/accepted`` (asked once connected) and ``delete/accepted``;
- ``$aws/things/<thing>/jobs/notify`` and ``jobs/get/accepted`` (asked once connected):
  the thing's pending jobs, without their documents;
- ``$aws/events/presence/connected|disconnected/<thing>``: how each link ended.

What only the bench's files or the AWS control plane hold is "not available from this
cloud" (:data:`UNAVAILABLE`): certificates (expiry, revocation), consoles, the broker
log's refused connections, job documents and rollouts, cancelling a job, revoking.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from host_tools.errors import UserError
from host_tools.view.model import Change, FleetModel

log = logging.getLogger("thingkit")
DRAIN_S = 0.05
NOT_HERE = "not available from this cloud"
LIFECYCLE = "$aws/events/presence"
# What the page cannot know over MQTT, and why (shown in place of the value).
UNAVAILABLE = {
    "cert": "certificates live in the cloud's registry (AWS: DescribeCertificate), not on MQTT",
    "revoke": "revoking changes the cloud's registry (AWS: UpdateCertificate), not MQTT",
    "console": "a kit's console is on the machine that runs it",
    "refused": "connections the broker refused are in its log, which a remote cloud "
    "does not publish",
    "cancel": "jobs are cancelled through the control plane (AWS: CancelJob), not MQTT",
    "rollouts": "job documents and rollouts are read through the control plane "
    "(AWS: DescribeJob, ListJobExecutionsForJob), not MQTT",
}


def named_shadows() -> tuple[str, ...]:
    """The named shadows the firmware keeps (the device policy's list)."""
    from provisioning.aws.policy import NAMED_SHADOWS

    return tuple(NAMED_SHADOWS)


def view_topics(thing: str, prefix: str = "thingkit") -> dict[str, list[str]]:
    """What the view subscribes to and publishes for ``thing``: named topics, no
    wildcard (an operator policy for the view allows exactly these)."""
    own = f"{prefix}/{thing}"
    receive = [f"{own}/status", f"{own}/telemetry", f"{own}/diag"]
    publish = []
    bases = [f"$aws/things/{thing}/shadow"]
    bases += [f"$aws/things/{thing}/shadow/name/{n}" for n in named_shadows()]
    for base in bases:
        receive += [f"{base}/update/documents", f"{base}/get/accepted", f"{base}/delete/accepted"]
        receive += [f"{base}/update/accepted", f"{base}/update/rejected"]
        publish += [f"{base}/get", f"{base}/update"]
    jobs = f"$aws/things/{thing}/jobs"
    receive += [f"{jobs}/notify", f"{jobs}/get/accepted"]
    publish += [f"{jobs}/get"]
    receive += [f"{LIFECYCLE}/connected/{thing}", f"{LIFECYCLE}/disconnected/{thing}"]
    return {"receive": receive, "publish": publish}


def _qos(topic: str) -> int:
    """State changes at QoS 1; periodic streams and replies to every report at QoS 0."""
    tail = topic.rsplit("/", 1)[-1]
    if tail in ("telemetry", "diag") or topic.endswith("/update/accepted"):
        return 0
    return 1


def split_endpoint(endpoint: str, port: int) -> tuple[str, int]:
    """``HOST`` or ``HOST:PORT`` (as ``thingkit validate --endpoint`` takes it)."""
    if ":" in endpoint and not endpoint.endswith("]"):
        host, _, p = endpoint.rpartition(":")
        try:
            return host.strip("[]"), int(p)
        except ValueError:
            raise UserError(f"bad --endpoint {endpoint!r}", "give HOST or HOST:PORT") from None
    return endpoint.strip("[]"), port


@dataclass
class RemoteSpec:
    """Where and as whom the view connects, and which things it follows."""

    endpoint: str
    port: int
    operator_cert: Path
    operator_key: Path
    ca: Path | None
    things: list[str]
    prefix: str = "thingkit"
    client_id: str = field(default_factory=lambda: f"thingkit-view-{uuid.uuid4().hex[:8]}")

    def check(self) -> None:
        """Raise UserError (one line) for a missing file or no thing to follow."""
        for what, p in (
            ("operator certificate", self.operator_cert),
            ("operator key", self.operator_key),
        ):
            if not Path(p).is_file():
                raise UserError(f"no {what} at {p}")
        if self.ca is not None and not Path(self.ca).is_file():
            raise UserError(f"no CA file at {self.ca}")
        if not self.things:
            raise UserError(
                "--cloud remote needs the things to follow",
                "give --things a,b,c or --bundle DIR (a device bundle names its thing): "
                "a remote cloud is observed per thing, with no wildcard",
            )

    def context(self) -> ssl.SSLContext:
        """TLS 1.2 or later, the broker checked against ``ca`` (else the system's CAs),
        the operator's certificate presented."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.ca is not None:
            try:
                ctx.load_verify_locations(cafile=str(self.ca))
            except ssl.SSLError as exc:
                raise UserError(f"the CA file {self.ca} does not load", str(exc)) from exc
        else:
            ctx.load_default_certs()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(self.operator_cert), str(self.operator_key))
        except (ssl.SSLError, ValueError) as exc:
            raise UserError(
                "the operator certificate and key do not load",
                f"{self.operator_cert}, {self.operator_key}: PEM files of one key pair ({exc})",
            ) from exc
        return ctx

    def describe(self) -> str:
        return f"{self.endpoint}:{self.port} as {Path(self.operator_cert).name}"


def things_of_bundle(bundle: Path) -> tuple[str, str, str]:
    """(thing name, topic prefix, endpoint) of a device bundle (``thingkit provision``)."""
    try:
        cfg = json.loads((Path(bundle) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(
            f"no device bundle at {bundle}", "a bundle holds config.json and certs/"
        ) from exc
    m = cfg.get("mqtt") or {}
    return (
        str(cfg.get("thing_name", "")),
        str(m.get("topic_prefix", "thingkit")),
        str(m.get("endpoint", "")),
    )


class RemoteSource:
    """Feeds a :class:`FleetModel` from a remote broker over MQTT only."""

    remote = True
    unavailable: ClassVar[dict[str, str]] = {k: f"{NOT_HERE}: {v}" for k, v in UNAVAILABLE.items()}

    def __init__(
        self,
        spec: RemoteSpec,
        on_change: Callable[[Change], None],
        on_rollouts: Callable[[], None] = lambda: None,
    ) -> None:
        self.spec = spec
        self.model = FleetModel(spec.prefix)
        for t in spec.things:
            self.model.thing(t)  # a row each, "unknown" until the broker says
        self.on_change = on_change
        self.on_rollouts = on_rollouts
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: mqtt.Client | None = None
        self._tasks: list[asyncio.Task] = []
        self._lock = threading.Lock()
        self._inbox: list[tuple[str, bytes, float, bool]] = []
        self._waiting: dict[str, tuple[threading.Event, dict[str, Any]]] = {}

    def describe(self) -> str:
        return f"remote cloud {self.spec.describe()}"

    # -- start / stop ------------------------------------------------------------------
    def topics(self) -> list[tuple[str, int]]:
        out = []
        for t in self.spec.things:
            out += [(tp, _qos(tp)) for tp in view_topics(t, self.spec.prefix)["receive"]]
        return out

    async def start(self) -> None:
        """Connect, subscribe, ask every shadow and the pending jobs; UserError if the
        endpoint refuses the operator identity."""
        self.loop = asyncio.get_running_loop()
        await self.loop.run_in_executor(None, self._connect)
        self._tasks.append(asyncio.create_task(self._drain_loop()))

    def _connect(self, timeout: float = 15.0) -> None:
        spec = self.spec
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=spec.client_id,
            protocol=mqtt.MQTTv311,
        )
        c.tls_set_context(spec.context())
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 5)
        topics = self.topics()
        ready, subscribed = threading.Event(), threading.Event()
        result: dict[str, Any] = {}
        pending: set[int] = set()

        def on_connect(cl: mqtt.Client, ud: object, flags: object, rc: Any, props: object) -> None:
            result["rc"] = rc
            if not rc.is_failure:
                # AWS IoT takes at most 8 topic filters per SUBSCRIBE.
                for i in range(0, len(topics), 8):
                    _r, mid = cl.subscribe(topics[i : i + 8])
                    pending.add(mid)
            ready.set()

        def on_subscribe(cl: mqtt.Client, ud: object, mid: int, codes: list, props: object) -> None:
            if any(getattr(rc, "is_failure", False) for rc in codes):
                result["refused"] = True
            pending.discard(mid)
            if not pending:
                subscribed.set()
                self._ask_all(cl)  # again after each reconnect: what changed meanwhile

        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        try:
            c.connect(spec.endpoint, spec.port, keepalive=30)
        except ssl.SSLError as exc:
            raise UserError(
                f"the TLS handshake with {spec.endpoint}:{spec.port} failed",
                f"{exc} (is --ca the CA of the endpoint's certificate?)",
            ) from exc
        except OSError as exc:
            raise UserError(f"cannot reach {spec.endpoint}:{spec.port}", str(exc)) from exc
        c.loop_start()
        if not ready.wait(timeout) or result["rc"].is_failure:
            c.loop_stop()
            raise UserError(
                f"the broker at {spec.endpoint}:{spec.port} did not accept the operator identity",
                str(result.get("rc", f"no CONNACK within {timeout:.0f} s")),
            )
        if not subscribed.wait(timeout) or result.get("refused"):
            c.disconnect()
            c.loop_stop()
            raise UserError(
                "the remote broker refused some of the view's subscriptions",
                "the operator policy must allow each topic of host_tools.view.remote.view_topics",
            )
        self.client = c

    def _ask_all(self, c: mqtt.Client) -> None:
        for t in self.spec.things:
            base = f"$aws/things/{t}/shadow"
            for b in [base] + [f"{base}/name/{n}" for n in named_shadows()]:
                c.publish(f"{b}/get", b"{}", qos=1)
            c.publish(f"$aws/things/{t}/jobs/get", b"{}", qos=1)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    # -- MQTT (paho thread) -----------------------------------------------------------
    def _on_message(self, c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        if msg.topic.endswith(("/update/accepted", "/update/rejected")):
            self._answer(msg.topic, payload)
            return
        with self._lock:
            self._inbox.append((msg.topic, payload, time.time(), bool(msg.retain)))

    def _answer(self, topic: str, payload: bytes) -> None:
        """The shadow service's answer to a desired value this view set, if it is one."""
        if b"clientToken" not in payload:
            return
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        waiting = self._waiting.get(str(doc.get("clientToken"))) if isinstance(doc, dict) else None
        if waiting is not None:
            waiting[1].update(doc, accepted=topic.endswith("/accepted"))
            waiting[0].set()

    async def _drain_loop(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_S)
            if self._inbox:
                self._drain()

    def _drain(self) -> None:
        with self._lock:
            batch, self._inbox = self._inbox, []
        for topic, payload, t, retained in batch:
            parts = topic.split("/")
            if parts[:2] == ["$aws", "things"] and parts[3:4] == ["jobs"]:
                ch = self.model.set_pending_jobs(parts[2], payload)
            else:
                ch = self.model.ingest(topic, payload, t, retained)
            if ch is not None:
                self.on_change(ch)

    # -- what the server asks of a source ---------------------------------------------
    def watch(self, thing: str) -> None:
        """Every named shadow is followed from the start: nothing more to subscribe."""

    def unwatch(self, thing: str) -> None:
        pass

    def schedule_jobs(self) -> None:
        """Pending jobs come with each jobs notification: nothing to read again."""

    def kit_dir(self, thing: str) -> Path | None:
        return None  # no kit of a remote cloud is on this machine

    def certificate(self, thing: str) -> dict[str, Any]:
        return {"unavailable": self.unavailable["cert"]}

    def set_desired(self, thing: str, desired: dict[str, Any], timeout: float = 10.0) -> dict:
        """Write ``desired`` into the thing's classic shadow over the view's own
        connection; the shadow service's answer (``{"accepted": bool, ...}``)."""
        if thing not in self.spec.things or self.client is None:
            raise UserError(f"{thing} is not one of the things this view follows")
        token = uuid.uuid4().hex[:16]
        done: tuple[threading.Event, dict[str, Any]] = (threading.Event(), {})
        self._waiting[token] = done
        try:
            body = {"state": {"desired": desired}, "clientToken": token}
            info = self.client.publish(
                f"$aws/things/{thing}/shadow/update", json.dumps(body).encode(), qos=1
            )
            info.wait_for_publish(timeout)
            if not done[0].wait(timeout):
                raise UserError(
                    f"no answer from the shadow service for {thing}",
                    "the operator policy may not allow publishing its shadow/update",
                )
        finally:
            self._waiting.pop(token, None)
        return done[1]

    def cancel_job(self, job_id: str, force: bool = False) -> None:
        raise UserError(self.unavailable["cancel"])

    def revoke(self, thing: str, reason: str = "unspecified") -> dict[str, Any]:
        raise UserError(self.unavailable["revoke"])
