"""Serve AWS IoT's device provisioning MQTT API (fleet provisioning by claim) on the bench.

:func:`attach` subscribes the services process's client to the request topics
(``$aws/certificates/create-from-csr/json``, ``$aws/certificates/create/json``,
``$aws/provisioning-templates/+/provision/json``), hands each request to a
:class:`provisioning.claim.ProvisioningEngine` and publishes its replies at QoS 1 on
``.../accepted`` or ``.../rejected``. Certificates come from the bench's fleet CA; an
accepted ``RegisterThing`` registers the thing with the normal least-privilege policy
(``Bench.register``: things.json, ACL, SIGHUP), exactly as ``thingkit register`` does.

Differences from AWS IoT Core (docs/claim.rst):

- AWS returns results "through the same MQTT connection used to publish the API
  request"; mosquitto cannot address one connection, so a reply reaches every connection
  subscribed to the reply topic (every kit of the batch provisioning at that moment).
  The device matches replies to its request (its own public key, its own thing name);
  ``create/json`` (a private key made by the service) is served, but its reply would
  reach the other claim holders too: thingkit devices use ``create-from-csr`` only;
- JSON payloads only (no ``cbor`` topics);
- a certificate's CN is the thing's broker identity, so the CSR's CN must be the thing
  name the allow-list gives the serial.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from host_tools.bench.layout import BenchLayout
from provisioning.bundle import atomic_write, check_thing_name
from provisioning.ca import KeyPair, Usage
from provisioning.claim import (
    CREATE_TOPIC,
    CSR_TOPIC,
    ClaimRegistry,
    ProvisioningEngine,
    claim_cn,
    record_event,
)

if TYPE_CHECKING:
    from host_tools.bench.bench import Bench

REQUEST_SUBSCRIPTIONS = [
    CSR_TOPIC,
    CREATE_TOPIC,
    "$aws/provisioning-templates/+/provision/json",
]
REPLY_QOS = 1

_log = logging.getLogger(__name__)


def make_engine(layout: BenchLayout) -> ProvisioningEngine:
    """The engine over the bench's files: claims.json, its fleet CA, its records."""
    from host_tools.bench.bench import Bench

    bench = Bench(layout.root)

    def register(thing: str, fingerprint: str) -> None:
        did = bench.register(thing, fingerprint)
        _log.info("fleet provisioning: registered %s (broker %s)", thing, did)

    lock = threading.Lock()

    def revoke(certs: list[x509.Certificate]) -> None:
        # The CRL makes the broker restart, which waits for this process to reconnect:
        # never from the MQTT callback that asked for it.
        def work() -> None:
            from host_tools.bench.registry import publish_crl
            from provisioning.revocation import RevocationList

            with lock:
                try:
                    rl = RevocationList(bench.fleet_ca().directory)
                    for c in certs:
                        cn = c.subject.rfc4514_string().removeprefix("CN=")
                        rl.revoke(c, cn, "superseded")
                    publish_crl(bench, restart=False)
                    _restart_broker(bench)
                    _log.info(
                        "fleet provisioning: revoked %d unactivated certificate(s)", len(certs)
                    )
                except Exception:  # noqa: BLE001  (a thread: log, never die silently)
                    _log.exception("fleet provisioning: revoking unactivated certificates failed")

        threading.Thread(target=work, name="fp-revoke", daemon=True).start()

    return ProvisioningEngine(
        ClaimRegistry(layout.claims),
        bench.fleet_ca(),
        events_path(layout),
        register,
        tokens=layout.fleet_provisioning / "tokens.json",
        revoke=revoke,
    )


def _gone(pid: int) -> bool:
    """The process ended (a zombie counts: its parent, not this process, reaps it)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() == b""
    except OSError:
        return True


def _restart_broker(bench: Bench, timeout: float = 15.0) -> None:
    """Restart mosquitto so that it loads the new CRL (it reads the CRL only at start).

    From the services process the broker is not a child of ours: ``procs.stop`` would
    wait for a zombie only its parent can reap, so the stop is done here; ``start``
    then sees the broker stopped and starts it, waiting for this process's client to
    reconnect (it runs on its own thread meanwhile)."""
    import os
    import signal
    import time

    pid = bench.state.get("broker_pid")
    if pid and not _gone(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while not _gone(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
    bench.start(timeout=timeout)


def attach(
    client: mqtt.Client, engine: ProvisioningEngine, log: logging.Logger | None = None
) -> None:
    """Serve provisioning requests arriving on ``client`` (subscribes on every connect;
    an earlier ``on_connect`` keeps being called). Callbacks never raise."""
    logger = log or _log
    previous = client.on_connect

    def on_connect(cl: mqtt.Client, userdata: Any, *args: Any) -> None:
        if previous is not None:
            try:
                previous(cl, userdata, *args)
            except Exception:
                logger.exception("fleet provisioning: the earlier on_connect failed")
        reason = args[1] if len(args) > 1 else 0
        if getattr(reason, "is_failure", reason != 0):
            return
        cl.subscribe([(t, REPLY_QOS) for t in REQUEST_SUBSCRIPTIONS])

    def on_request(cl: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            for topic, doc in engine.handle(message.topic, message.payload):
                body = json.dumps(doc, separators=(",", ":")).encode()
                cl.publish(topic, body, qos=REPLY_QOS, retain=False)
                if topic.endswith("/rejected"):
                    logger.info("fleet provisioning %s: %s", topic, doc.get("errorMessage"))
        except Exception:
            logger.exception("fleet provisioning: failed to serve %s", message.topic)

    client.on_connect = on_connect
    for topic_filter in REQUEST_SUBSCRIPTIONS:
        client.message_callback_add(topic_filter, on_request)
    if client.is_connected():
        client.subscribe([(t, REPLY_QOS) for t in REQUEST_SUBSCRIPTIONS])


# -- operator side (thingkit provision --claim, revoke --claim) -----------------------------
CLAIM_CERT = "claim.crt.der"
CLAIM_KEY = "claim.key.der"


def claim_files(out_dir: Path) -> tuple[Path, Path]:
    """(certificate DER, key DER) of a batch's claim identity in ``out_dir``."""
    return out_dir / CLAIM_CERT, out_dir / CLAIM_KEY


def add_batch(
    bench: Bench,
    batch: str,
    allow: dict[str, str],
    out_dir: Path,
    burst: int = 20,
    window_s: float = 10.0,
) -> KeyPair:
    """Make (or keep) a batch's claim identity and put its allow-list on the bench.

    The claim certificate (CN ``claim.<batch>``) is issued once from the bench's fleet
    CA and kept in ``out_dir`` (the key is the batch's secret, written 0600, flashed into
    each kit of the batch); the claim identity is given the provisioning topics only.

    Args:
        bench: The bench (its broker reloads the ACL if it runs).
        batch: Batch name, also the provisioning template's name.
        allow: The manufacturer's allow-list: serial -> thing name.
        out_dir: Where the claim certificate and key are kept.
        burst: Requests of one kind allowed per ``window_s`` before 429.
        window_s: The throttling window.
    """
    for thing in allow.values():
        check_thing_name(thing)
    cert_p, key_p = claim_files(out_dir)
    if cert_p.exists() and key_p.exists():
        key = serialization.load_der_private_key(key_p.read_bytes(), None)
        pair = KeyPair(key, x509.load_der_x509_certificate(cert_p.read_bytes()))  # type: ignore[arg-type]
    else:
        pair = bench.fleet_ca().issue(claim_cn(batch), Usage.CLIENT)
        atomic_write(key_p, pair.key_der, private=True)
        atomic_write(cert_p, pair.cert_der)
    ClaimRegistry(bench.layout.claims).add_batch(
        batch, pair.fingerprint, allow, burst, window_s, pair.cert_pem.decode()
    )
    bench.apply_config()
    return pair


def disable_batch(bench: Bench, batch: str, reason: str = "claim disabled") -> bool:
    """Disable a batch's claim: no ACL for it, its certificate revoked (CRL). Things it
    provisioned keep working. Returns False if it was disabled already.

    Raises:
        KeyError: no such batch on this bench.
    """
    from host_tools.bench.registry import revoke_on_bench

    reg = ClaimRegistry(bench.layout.claims)
    b = reg.batches()[batch]
    new = reg.disable(batch, reason)
    bench.apply_config()  # the claim identity loses its topics at once (SIGHUP)
    cert = x509.load_pem_x509_certificate(b["claim_cert"].encode())
    revoke_on_bench(bench, cert, b["claim_cn"], "cessation_of_operation")
    record_event(events_path(bench.layout), op="disable-claim", template=batch, reason=reason)
    return new


def events_path(layout: BenchLayout) -> Path:
    """The provisioning service's record of requests and refusals (JSON lines)."""
    return layout.fleet_provisioning / "events.jsonl"


def events(layout: BenchLayout) -> list[dict]:
    """Every recorded provisioning event, oldest first."""
    try:
        lines = events_path(layout).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(x) for x in lines if x.strip()]
