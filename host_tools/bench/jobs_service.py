"""Serve the emulated AWS IoT Jobs service over MQTT, and the bench operator's jobs API.

Devices use the Jobs MQTT API (``$aws/things/{thing}/jobs/...``); replies and
notifications are published at QoS 1 as AWS does. The operator side (what the AWS
control plane does over HTTPS) reaches the service process over the bench broker on
``bench/jobs/request`` (replies on ``bench/jobs/reply/<client>``), topics only the bench
identities may use (a thing's ACL has nothing outside its own subtrees); :class:`JobsOperator`
is its client::

    with JobsOperator(bench) as ops:
        ops.create_job("ota-1", {"operation": "thingkit.ota"}, ["kit-1", "group:canary"])
        ops.list_job_executions("ota-1")

Targets are thing names, group names (``groups.json`` in the bench root, see
:func:`set_group`), or AWS ARNs (``...:thing/NAME``, ``...:thinggroup/NAME``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from typing import Any, Self

import paho.mqtt.client as mqtt

from host_tools.bench import clients
from host_tools.bench.jobs_engine import JobsEngine, OperatorError, Publication
from host_tools.bench.layout import OPERATOR_CN, BenchLayout
from host_tools.errors import UserError

REQUEST_SUBSCRIPTIONS = [
    "$aws/things/+/jobs/get",
    "$aws/things/+/jobs/start-next",
    "$aws/things/+/jobs/+/get",
    "$aws/things/+/jobs/+/update",
]
CONTROL_REQUEST = "bench/jobs/request"
CONTROL_REPLY = "bench/jobs/reply/"
REPLY_QOS = 1
TICK_S = 0.5
OPERATIONS = (
    "create_job",
    "cancel_job",
    "cancel_job_execution",
    "describe_job",
    "describe_job_execution",
    "list_job_executions",
    "list_thing_executions",
    "list_jobs",
)

_log = logging.getLogger(__name__)


# -- thing groups -------------------------------------------------------------------
def read_groups(layout: BenchLayout) -> dict[str, list[str]]:
    """The bench's static thing groups: name -> member things."""
    try:
        return dict(json.loads(layout.groups.read_text())["groups"])
    except (FileNotFoundError, ValueError, KeyError):
        return {}


def set_group(layout: BenchLayout, name: str, things: list[str]) -> None:
    """Create or replace a static thing group (an empty list deletes it)."""
    groups = read_groups(layout)
    if things:
        groups[name] = sorted(set(things))
    else:
        groups.pop(name, None)
    tmp = layout.groups.with_suffix(".tmp")
    tmp.write_text(json.dumps({"groups": groups}, indent=1))
    os.replace(tmp, layout.groups)


def registered_things(layout: BenchLayout) -> set[str]:
    try:
        return set(json.loads(layout.registry.read_text())["things"])
    except (FileNotFoundError, ValueError, KeyError):
        return set()


def resolve_target(layout: BenchLayout, target: str) -> list[str]:
    """Things named by a target: ``thing``, ``group:G``, a group name, or an ARN.

    Raises:
        OperatorError: Unknown thing or group, or a member that is not registered.
    """
    things, groups = registered_things(layout), read_groups(layout)
    kind, name = "", target
    if target.startswith("arn:"):
        res = target.split(":", 5)[-1]
        kind, _, name = res.partition("/")
        kind = {"thing": "thing", "thinggroup": "group"}.get(kind, "?")
    elif target.startswith(("group:", "thing:")):
        kind, _, name = target.partition(":")
    if kind in ("", "thing") and name in things:
        return [name]
    if kind in ("", "group") and name in groups:
        missing = [t for t in groups[name] if t not in things]
        if missing:
            raise OperatorError(f"group {name}: {', '.join(missing)} not registered on the bench")
        return list(groups[name])
    raise OperatorError(f"no registered thing or group named {target!r}")


# -- the service --------------------------------------------------------------------
def parse_request_topic(topic: str) -> tuple[str, str | None, str] | None:
    """``$aws/things/T/jobs/J/update`` -> ``(T, "J", "update")``; None if not a request."""
    parts = topic.split("/")
    if parts[:2] != ["$aws", "things"] or len(parts) not in (5, 6) or parts[3] != "jobs":
        return None
    if len(parts) == 5 and parts[4] in ("get", "start-next"):
        return parts[2], None, parts[4]
    if len(parts) == 6 and parts[5] in ("get", "update"):
        return parts[2], parts[4], parts[5]
    return None


def publish(client: mqtt.Client, pubs: list[Publication], logger: logging.Logger = _log) -> None:
    """Publish engine output on ``$aws/things/{thing}/jobs/{suffix}`` at QoS 1."""
    for thing, suffix, doc in pubs:
        topic = f"$aws/things/{thing}/jobs/{suffix}"
        client.publish(topic, json.dumps(doc, separators=(",", ":")).encode(), qos=REPLY_QOS)
        if suffix.endswith("/rejected"):
            logger.info("jobs %s: %s %s", topic, doc.get("code"), doc.get("message"))


def attach(
    client: mqtt.Client,
    engine: JobsEngine,
    log: logging.Logger | None = None,
    stop: threading.Event | None = None,
) -> threading.Thread:
    """Serve device requests and operator calls on ``client``; run the timeout ticker.

    Returns:
        The ticker thread (a daemon; it ends when ``stop`` is set).
    """
    logger = log or _log
    previous = client.on_connect
    subs = [(t, REPLY_QOS) for t in REQUEST_SUBSCRIPTIONS] + [(CONTROL_REQUEST, 1)]

    def on_connect(cl: mqtt.Client, userdata: Any, *args: Any) -> None:
        if previous is not None:
            previous(cl, userdata, *args)
        reason = args[1] if len(args) > 1 else 0
        if not getattr(reason, "is_failure", reason != 0):
            cl.subscribe(subs)

    def on_request(cl: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            parsed = parse_request_topic(message.topic)
            if parsed is not None:
                publish(cl, engine.handle(*parsed, message.payload), logger)
        except Exception:
            logger.exception("jobs: failed to serve %s", message.topic)

    def on_control(cl: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            req = json.loads(message.payload)
            reply_to = CONTROL_REPLY + str(req["replyTo"])
        except (ValueError, KeyError, TypeError):
            logger.warning("jobs control: ignoring a malformed request")
            return
        answer: dict[str, Any] = {"token": req.get("token")}
        try:
            op = req.get("op")
            if op not in OPERATIONS:
                raise OperatorError(f"unknown operation {op!r}")
            result = getattr(engine, op)(**req.get("args", {}))
            if op in ("create_job", "cancel_job", "cancel_job_execution"):
                publish(cl, result, logger)
                result = None
            answer.update(ok=True, result=result)
            logger.info("jobs control: %s %s", op, req.get("args", {}).get("job_id", ""))
        except (OperatorError, TypeError) as exc:
            answer.update(ok=False, error=str(exc))
        except Exception as exc:
            logger.exception("jobs control failed")
            answer.update(ok=False, error=f"internal error: {exc}")
        cl.publish(reply_to, json.dumps(answer).encode(), qos=1)

    halt = stop or threading.Event()

    def ticker() -> None:
        while not halt.wait(TICK_S):
            try:
                publish(client, engine.tick(), logger)
            except Exception:
                logger.exception("jobs: timeout ticker failed")

    client.on_connect = on_connect
    for topic_filter in REQUEST_SUBSCRIPTIONS:
        client.message_callback_add(topic_filter, on_request)
    client.message_callback_add(CONTROL_REQUEST, on_control)
    if client.is_connected():
        client.subscribe(subs)
    thread = threading.Thread(target=ticker, name="jobs-ticker", daemon=True)
    thread.start()
    return thread


def make_engine(layout: BenchLayout) -> JobsEngine:
    """The engine the bench service process runs: jobs kept in ``layout.jobs``.

    ``THINGKIT_BENCH_MINUTE_S`` (environment) shortens the "minute" of job timeouts
    so tests can see TIMED_OUT without waiting minutes.
    """
    minute = float(os.environ.get("THINGKIT_BENCH_MINUTE_S", "60"))
    return JobsEngine(layout.jobs, resolve=lambda t: resolve_target(layout, t), minute_s=minute)


# -- the operator's client ----------------------------------------------------------
class JobsOperator:
    """The operator's jobs API on a running bench (calls go to its service process)."""

    def __init__(self, bench: Any, timeout: float = 10.0) -> None:
        """Args: bench: a :class:`host_tools.bench.bench.Bench` that is up."""
        self.bench = bench
        self.timeout = timeout
        self._id = f"ops-{uuid.uuid4().hex[:10]}"
        self._cond = threading.Condition()
        self._answers: dict[str, dict] = {}
        self.client = clients.make_client(bench.layout, OPERATOR_CN, self._id)
        self.client.on_message = self._on_message

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        topics = [(CONTROL_REPLY + self._id, 1)]
        if not clients.connect_subscribed(self.client, self.bench.port, topics, self.timeout):
            raise UserError("the bench broker did not confirm a subscription", "", "bench logs")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            answer = json.loads(msg.payload)
        except ValueError:
            return
        with self._cond:
            self._answers[str(answer.get("token"))] = answer
            self._cond.notify_all()

    def call(self, op: str, **args: Any) -> Any:
        """Run one engine operation in the service process; return its result.

        Raises:
            UserError: The service refused the call or did not answer.
        """
        token = uuid.uuid4().hex
        body = {"op": op, "args": args, "token": token, "replyTo": self._id}
        self.client.publish(CONTROL_REQUEST, json.dumps(body).encode(), qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: token in self._answers, self.timeout):
                raise UserError(
                    f"the bench jobs service did not answer {op}",
                    "is the bench up?",
                    str(self.bench.layout.services_log),
                )
            answer = self._answers.pop(token)
        if not answer.get("ok"):
            raise UserError(f"jobs {op} refused", str(answer.get("error")))
        return answer.get("result")

    def create_job(
        self,
        job_id: str,
        document: dict[str, Any],
        targets: list[str],
        description: str = "",
        abort_config: dict[str, Any] | None = None,
        timeout_config: dict[str, Any] | None = None,
    ) -> None:
        """Create a job on the bench (see :meth:`JobsEngine.create_job`)."""
        self.call(
            "create_job",
            job_id=job_id,
            document=document,
            targets=targets,
            description=description,
            abort_config=abort_config,
            timeout_config=timeout_config,
        )

    def cancel_job(self, job_id: str, force: bool = False, comment: str = "") -> None:
        self.call("cancel_job", job_id=job_id, force=force, comment=comment)

    def cancel_job_execution(self, job_id: str, thing: str, force: bool = False) -> None:
        self.call("cancel_job_execution", job_id=job_id, thing=thing, force=force)

    def describe_job(self, job_id: str) -> dict[str, Any]:
        return self.call("describe_job", job_id=job_id)

    def describe_job_execution(self, job_id: str, thing: str) -> dict[str, Any]:
        return self.call("describe_job_execution", job_id=job_id, thing=thing)

    def list_job_executions(self, job_id: str) -> list[dict[str, Any]]:
        return self.call("list_job_executions", job_id=job_id)

    def list_thing_executions(self, thing: str) -> list[dict[str, Any]]:
        return self.call("list_thing_executions", thing=thing)

    def list_jobs(self) -> list[dict[str, Any]]:
        return self.call("list_jobs")


# -- a device-side client (tests, fake fleets) ----------------------------------------
class DeviceSession:
    """A paho client with a thing's identity that speaks the Jobs and streams APIs.

    For tests and simulated fleets (the firmware has its own agent)::

        dev = DeviceSession.create(bench, "kit-1", tmp_path)   # identity + registration
        status, doc = dev.jobs("start-next", statusDetails={"step": "download"})
        dev.close()
    """

    def __init__(self, bench: Any, thing: str, cert_der: bytes, key_der: bytes, workdir: Any):
        self.bench, self.thing = bench, thing
        self.messages: list[tuple[float, str, bytes]] = []
        self._cond = threading.Condition()
        self.client = clients.device_client(bench.layout, cert_der, key_der, thing, workdir)
        self.client.on_message = self._on_message

    @classmethod
    def create(cls, bench: Any, thing: str, workdir: Any, register: bool = True) -> DeviceSession:
        """Issue an identity from the bench's fleet CA, register the thing, connect."""
        from provisioning.ca import Usage

        kp = bench.fleet_ca().issue(thing, Usage.CLIENT)
        if register:
            bench.register(thing, kp.fingerprint)
        dev = cls(bench, thing, kp.cert_der, kp.key_der, workdir)
        dev.connect()
        return dev

    def connect(self, topics: list[str] | None = None) -> None:
        """Connect and subscribe to this thing's jobs and streams replies."""
        base = f"$aws/things/{self.thing}"
        topics = topics or [
            f"{base}/jobs/notify",
            f"{base}/jobs/notify-next",
            f"{base}/jobs/+/accepted",
            f"{base}/jobs/+/rejected",
            f"{base}/jobs/+/+/accepted",
            f"{base}/jobs/+/+/rejected",
            f"{base}/streams/+/data/json",
            f"{base}/streams/+/description/json",
            f"{base}/streams/+/rejected/json",
        ]
        if not clients.connect_subscribed(
            self.client, self.bench.port, [(t, 1) for t in topics], 10
        ):
            raise TimeoutError(f"{self.thing}: no SUBACK")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((time.time(), msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def wait(self, pred: Any, timeout: float = 10.0, since: float = 0.0) -> tuple[str, dict] | None:
        """The first (topic, JSON document) received at or after ``since`` matching ``pred``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, topic, payload in self.messages:
                    if t < since:
                        continue
                    try:
                        doc = json.loads(payload)
                    except ValueError:
                        continue
                    if pred(topic, doc):
                        return topic, doc
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def publish(self, topic: str, body: dict | bytes) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.client.publish(topic, data, qos=1).wait_for_publish(5)

    def jobs(
        self, op: str, job_id: str | None = None, timeout: float = 10.0, **body: Any
    ) -> tuple[str, dict]:
        """Send a Jobs request (``get``, ``start-next``; ``get``/``update`` with a job id).

        Returns:
            ``("accepted" | "rejected", reply document)``.
        """
        token = body.setdefault("clientToken", uuid.uuid4().hex[:16])
        topic = f"$aws/things/{self.thing}/jobs/" + (f"{job_id}/{op}" if job_id else op)
        self.publish(topic, body)
        got = self.wait(
            lambda t, d: t.startswith(topic + "/") and d.get("clientToken") == token, timeout
        )
        if got is None:
            raise TimeoutError(f"{self.thing}: no reply to {topic}")
        return got[0].rsplit("/", 1)[1], got[1]

    def stream_get(
        self, stream_id: str, expect: int, timeout: float = 10.0, **body: Any
    ) -> list[dict]:
        """Send a GetStream request; return the ``expect`` data blocks, or [rejected doc]."""
        token = body.setdefault("c", uuid.uuid4().hex[:16])
        base = f"$aws/things/{self.thing}/streams/{stream_id}/"
        since = time.time()
        self.publish(base + "get/json", body)

        def mine(t: str, d: dict) -> bool:
            return t in (base + "data/json", base + "rejected/json") and d.get("c") == token

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = []
                for t, topic, payload in self.messages:
                    if t >= since - 0.5 and topic.startswith(base):
                        d = json.loads(payload)
                        if mine(topic, d):
                            if topic.endswith("rejected/json"):
                                return [d]
                            found.append(d)
                if len(found) >= expect:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return found
                self._cond.wait(left)
