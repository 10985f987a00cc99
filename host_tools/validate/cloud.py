"""Where ``thingkit validate`` watches the kit from: the local bench, or a remote cloud.

- :class:`BenchCloud` (``--cloud bench``, the default): starts a bench of its own and
  provisions kits on it. Besides what any cloud shows, it has the broker's log and
  internals (``broker_log``), can stop its broker (``broker_control``), runs jobs
  (``jobs``) and an NTP server whose log it reads (``ntp_log``).
- :class:`RemoteCloud` (``--cloud remote --endpoint HOST``): an MQTT broker over TLS 1.2
  reached with an operator identity (certificate and key) that may read the kit's
  topics, its shadow and the lifecycle events (``$aws/events/presence/...``): AWS IoT
  Core, or a bench started elsewhere. The kit comes with a device bundle made for that
  cloud (``thingkit provision``). Items that need broker internals use the lifecycle
  events instead, or say "not shown on this cloud".

Both give the engine an :class:`~host_tools.bench.observer.Observer` (every message on the
kit's topics, and shadow requests as the operator) and the same few methods.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from host_tools.bench.bench import Bench
from host_tools.bench.layout import OPERATOR_CN
from host_tools.bench.observer import Observer
from host_tools.errors import UserError
from host_tools.validate.tls_probe import handshake

LIFECYCLE = "$aws/events/presence"


@dataclass
class Connection:
    """How the kit's session reached the cloud: its client id, the identity the cloud
    saw (certificate CN on the bench, certificate id in a lifecycle event) and the
    evidence line."""

    client_id: str
    identity: str
    evidence: str


class Cloud:
    """What the engine asks of a cloud (see the module doc for the two kinds)."""

    name = "?"
    capabilities: frozenset[str] = frozenset()
    topic_prefix = "thingkit"

    def describe(self) -> str:
        raise NotImplementedError

    def start(self, target: Any) -> None:
        """Be ready before kits are made (the bench: start it)."""

    def stop(self) -> None:
        """Release what :meth:`start` took."""

    def observer(self, thing: str) -> Observer:
        raise NotImplementedError

    def device(self, target: Any, root: Path, thing: str, config: dict) -> tuple[Any, list]:
        """A new device of ``target`` (powered off) and the steps that make it flashed
        and provisioned for this cloud (see hil_tests.targets.base.Target.steps)."""
        raise NotImplementedError

    def probe(self, version: ssl.TLSVersion, with_cert: bool) -> str | None:
        """One TLS handshake with the broker pinned to ``version`` (with the operator's
        certificate or none); the version negotiated, or None if refused."""
        raise NotImplementedError

    def connection(self, obs: Observer, thing: str, since: float) -> Connection | None:
        """The kit's first session since ``since``, as the cloud saw it."""
        return lifecycle_connection(obs, thing, since)

    def endpoint_text(self) -> str:
        raise NotImplementedError


def lifecycle_connection(obs: Observer, thing: str, since: float) -> Connection | None:
    """The kit's session from its ``connected`` lifecycle event (what AWS offers)."""
    m = obs.find(lambda m: m.topic == f"{LIFECYCLE}/connected/{thing}", since=since)
    if m is None:
        return None
    d = m.json()
    if not isinstance(d, dict):
        return None
    return Connection(
        str(d.get("clientId")),
        str(d.get("principalIdentifier")),
        f"lifecycle event {m.topic}: {m.excerpt(240)}",
    )


# -- the local bench ---------------------------------------------------------------------
class BenchCloud(Cloud):
    name = "bench"
    capabilities = frozenset({"broker_log", "broker_control", "jobs", "ntp_log", "lifecycle"})

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.bench = Bench(self.root)

    @classmethod
    def of(cls, bench: Bench) -> BenchCloud:
        """A bench already running (the HIL suite's): the engine's checks run on it."""
        c = cls(bench.layout.root)
        c.bench = bench
        return c

    @property
    def topic_prefix(self) -> str:  # type: ignore[override]
        return self.bench.topic_prefix

    def describe(self) -> str:
        return f"local bench (mosquitto on 127.0.0.1:{self.bench.port}, state {self.root})"

    def endpoint_text(self) -> str:
        return f"localhost:{self.bench.port}"

    def start(self, target: Any) -> None:
        target.prepare_bench(self.root)
        self.bench.up()

    def stop(self) -> None:
        self.bench.down()

    def observer(self, thing: str) -> Observer:
        return Observer(self.bench)

    def device(self, target: Any, root: Path, thing: str, config: dict) -> tuple[Any, list]:
        return target.steps(root, self.bench, thing, config)

    def probe(self, version: ssl.TLSVersion, with_cert: bool) -> str | None:
        lay = self.bench.layout
        cert = lay.identity(OPERATOR_CN) if with_cert else None
        return handshake(self.bench.port, lay.server_ca_pem, version, cert)

    def connection(self, obs: Observer, thing: str, since: float) -> Connection | None:
        """From the broker log: the client id and the certificate CN it was given."""
        rx = re.compile(
            r"^(\S+): New client connected from (\S+):(\d+) as (\S+) "
            r"\(p\d, c\d, k(\d+), u'([^']*)'\)",
            re.MULTILINE,
        )
        for m in rx.finditer(self.bench.broker_log()):
            if m.group(4) == thing:
                return Connection(m.group(4), m.group(6), f"broker log: {m.group(0)}")
        return None

    def broker_connect_offset(self, thing: str) -> int | None:
        """Where the kit's first connection line starts in the broker log."""
        rx = re.compile(
            rf"^\S+: New client connected from \S+ as {re.escape(thing)} ", re.MULTILINE
        )
        m = rx.search(self.bench.broker_log())
        return m.start() if m else None


# -- a remote cloud (AWS IoT Core, or a bench reached only over the network) --------------
class RemoteObserver(Observer):
    """The operator's view over a remote broker: the kit's own topics, its shadows and
    its lifecycle events (what a least-privilege operator policy allows)."""

    def __init__(self, cloud: RemoteCloud, thing: str) -> None:
        self.bench = None  # type: ignore[assignment]
        self.messages = []
        self._cond = threading.Condition()
        self.cloud, self.thing = cloud, thing
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{cloud.client_prefix}{thing}",
            protocol=mqtt.MQTTv311,
        )
        self.client.tls_set_context(cloud.context(with_cert=True))
        self.client.on_message = self._on_message

    def topics(self) -> list[tuple[str, int]]:
        """Named topics, no MQTT wildcard: what the operator policy of
        :mod:`host_tools.validate.aws_operator` allows, and no more."""
        from host_tools.validate.aws_operator import observer_topics

        return [(t, 1) for t in observer_topics(self.thing, self.cloud.topic_prefix)["receive"]]

    def start(self) -> None:
        topics = self.topics()
        done = threading.Event()
        ready = threading.Event()
        result: dict = {}

        def on_connect(c, userdata, flags, rc, props):
            result["rc"] = rc
            if not rc.is_failure:
                c.subscribe(topics)
            ready.set()

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *a: done.set()
        self.client.reconnect_delay_set(1, 2)
        try:
            self.client.connect(self.cloud.endpoint, self.cloud.port, keepalive=30)
        except OSError as exc:
            raise UserError(
                f"cannot reach {self.cloud.endpoint}:{self.cloud.port}", str(exc)
            ) from exc
        self.client.loop_start()
        if not ready.wait(15) or result["rc"].is_failure:
            self.client.loop_stop()
            raise UserError(
                f"the broker at {self.cloud.endpoint}:{self.cloud.port} did not accept the "
                "operator identity",
                str(result.get("rc", "no CONNACK within 15 s")),
            )
        if not done.wait(10):
            raise UserError("the remote broker did not confirm the operator's subscriptions")


class RemoteCloud(Cloud):
    name = "remote"
    capabilities = frozenset({"lifecycle"})

    def __init__(
        self,
        endpoint: str,
        port: int,
        operator_cert: Path,
        operator_key: Path,
        ca: Path | None,
        bundle: Path,
        client_prefix: str = "thingkit-validate-",  # + the thing: the policy's client id
    ) -> None:
        self.endpoint, self.port = endpoint, port
        self.cert, self.key, self.ca = Path(operator_cert), Path(operator_key), ca
        self.bundle = Path(bundle)
        self.client_prefix = client_prefix
        for what, p in (("operator certificate", self.cert), ("operator key", self.key)):
            if not p.is_file():
                raise UserError(f"no {what} at {p}")
        if ca is not None and not Path(ca).is_file():
            raise UserError(f"no CA file at {ca}")
        cfg_path = self.bundle / "config.json"
        try:
            self.config = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(
                f"no device bundle at {self.bundle}",
                "give --bundle DIR: config.json and certs/ from thingkit provision",
            ) from exc
        self.thing = self.config.get("thing_name", "")
        mqtt_cfg = self.config.get("mqtt", {})
        self.topic_prefix = mqtt_cfg.get("topic_prefix", "thingkit")  # type: ignore[misc]
        if mqtt_cfg.get("endpoint") != endpoint:
            raise UserError(
                f"the bundle's endpoint is {mqtt_cfg.get('endpoint')!r}, not {endpoint!r}",
                "the kit must reach the cloud being validated",
            )

    def describe(self) -> str:
        return f"remote broker {self.endpoint}:{self.port} (operator {self.cert.name})"

    def endpoint_text(self) -> str:
        return f"{self.endpoint}:{self.port}"

    def context(self, with_cert: bool, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.ca is not None:
            ctx.load_verify_locations(cafile=str(self.ca))
        else:
            ctx.load_default_certs()
        ctx.minimum_version = version or ssl.TLSVersion.TLSv1_2
        if version is not None:
            ctx.maximum_version = version
        if with_cert:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx

    def observer(self, thing: str) -> Observer:
        return RemoteObserver(self, thing)

    def device(self, target: Any, root: Path, thing: str, config: dict) -> tuple[Any, list]:
        return target.bundle_steps(root, self.bundle, thing, config)

    def probe(self, version: ssl.TLSVersion, with_cert: bool) -> str | None:
        cert = (self.cert, self.key) if with_cert else None
        ca = self.ca
        return handshake(
            self.port, ca, version, cert, host=self.endpoint, server_hostname=self.endpoint
        )
