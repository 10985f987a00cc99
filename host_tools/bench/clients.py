"""paho-mqtt clients for the bench's own identities (services, operator)."""

from __future__ import annotations

import ssl
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from host_tools.bench.layout import BenchLayout
from host_tools.errors import UserError


def make_client(
    layout: BenchLayout, cn: str, client_id: str | None = None, persistent: bool = False
) -> mqtt.Client:
    """A paho client with the bench identity ``cn``, TLS 1.2, server checked by name.

    ``persistent`` asks for a persistent session (clean_session=0): the broker keeps its
    subscriptions and queues QoS 1 messages while it is disconnected.
    """
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id or cn,
        protocol=mqtt.MQTTv311,
        clean_session=not persistent,
    )
    cert, key = layout.identity(cn)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(layout.server_ca_pem))
    ctx.load_cert_chain(str(cert), str(key))
    c.tls_set_context(ctx)
    return c


def connect(client: mqtt.Client, port: int, timeout: float = 10.0, keepalive: int = 30) -> None:
    """Connect to the bench broker and start the network thread; wait for CONNACK."""
    ready = threading.Event()
    result: dict = {}

    def on_connect(c, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        ready.set()

    prev = client.on_connect
    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=keepalive)
    client.loop_start()
    if not ready.wait(timeout):
        client.loop_stop()
        raise UserError("no CONNACK from the bench broker", f"port {port}", "thingkit bench status")
    client.on_connect = prev
    if result["rc"].is_failure:
        client.loop_stop()
        raise UserError("the bench broker refused the connection", str(result["rc"]))
    if prev is not None:
        prev(client, None, None, result["rc"], None)


def connect_subscribed(
    client: mqtt.Client,
    port: int,
    topics: list[tuple[str, int]],
    timeout: float,
    every_connect: bool = False,
) -> bool:
    """Connect (see :func:`connect`), subscribe to ``topics``; True once the SUBACK came.

    ``every_connect`` subscribes again on every reconnect (after a broker restart).
    """
    done = threading.Event()
    client.on_subscribe = lambda *a: done.set()
    if every_connect:
        client.on_connect = lambda c, *a: c.subscribe(topics)
        connect(client, port)
    else:
        connect(client, port)
        client.subscribe(topics)
    return done.wait(timeout)


def device_client(
    layout: BenchLayout,
    cert_der: bytes,
    key_der: bytes,
    client_id: str,
    workdir: Path,
    **client_kw: object,
) -> mqtt.Client:
    """A paho client (not yet connected) presenting a device's identity, the DER
    certificate and key of its bundle, to the bench broker over TLS 1.2.

    ``ssl`` loads certificates from files, so PEM copies are written to ``workdir``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    stem = workdir / f"{client_id}-{uuid.uuid4().hex[:6]}"
    cp, kp = stem.with_suffix(".crt"), stem.with_suffix(".key")
    cp.write_bytes(
        x509.load_der_x509_certificate(cert_der).public_bytes(serialization.Encoding.PEM)
    )
    kp.write_bytes(
        serialization.load_der_private_key(key_der, None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, **client_kw
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(layout.server_ca_pem))
    ctx.load_cert_chain(str(cp), str(kp))
    c.tls_set_context(ctx)
    return c
