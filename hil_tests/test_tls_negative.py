"""TLS negatives: every bad server or bad identity ends with no MQTT session and a
logged reason, on every target.

Server side: the device is pointed (through its config.json, as a person would) at a
stand-in endpoint whose certificate comes from an unknown CA, names another host, has
expired, or which speaks only TLS 1.0/1.1. The device must refuse the handshake, say why
on its console, retry with backoff, and never send an MQTT CONNECT. A positive control
with a valid certificate shows the same harness does see a CONNECT over TLS 1.2.

Client side: the device presents a key that does not match its certificate, or a
certificate from a CA the broker does not trust: the bench broker refuses the handshake
(its log says why) and no session or shadow appears. A device cannot be configured
without a client certificate at all, and the broker refuses clients that present none.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import ssl
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from hil_tests.plugin.tls_server import TlsServer, server_cert
from host_tools.bench.layout import OPERATOR_CN
from host_tools.validate.tls_probe import handshake
from provisioning.ca import CertificateAuthority, Usage, new_key

pytestmark = pytest.mark.slow

RETRY = {"backoff_base_ms": 200, "backoff_cap_ms": 800}
TWO_ATTEMPTS = r"reconnect in \d+ ms \(attempt 2,"


@dataclass(frozen=True)
class ServerCase:
    id: str
    device_says: str  # what the device's "session ended" line must contain (regex)
    alert: str  # the alert the server must have received from the device
    ca: str = "bench"  # "bench" (trusted by the device) or "other"
    wrong_name: bool = False
    expired: bool = False
    old_tls_only: bool = False


SERVER_CASES = [
    ServerCase("unknown-ca", r"not correctly signed by the trusted CA", "UNKNOWN_CA", ca="other"),
    ServerCase(
        "wrong-host", r"Common Name \(CN\) does not match", "BAD_CERTIFICATE", wrong_name=True
    ),
    ServerCase("expired", r"certificate validity has expired", "CERTIFICATE_EXPIRED", expired=True),
    ServerCase("tls10-11-only", r"BAD_PROTOCOL_VERSION", "PROTOCOL_VERSION", old_tls_only=True),
]


# ssl.TLSVersion.TLSv1 and TLSv1_1 are deprecated names; their values are stable.
OLD_TLS = (ssl.TLSVersion(0x0301), ssl.TLSVersion(0x0302))
OLD_TLS_PROBES = [
    (OLD_TLS[0], "TLSv1"),
    (OLD_TLS[1], "TLSv1.1"),
    (ssl.TLSVersion.TLSv1_2, None),
]


def _bench_server_ca(bench) -> CertificateAuthority:
    return CertificateAuthority.load(bench.layout.server_ca)


def _server_for(case: ServerCase, bench, endpoint, tmp_path: Path) -> TlsServer:
    if case.ca == "other":
        ca = CertificateAuthority.create(tmp_path / "other-ca", "not the cloud's")
    else:
        ca = _bench_server_ca(bench)
    names = ["not-the-endpoint.example"] if case.wrong_name else [endpoint.name]
    now = dt.datetime.now(dt.UTC)
    window = (
        (now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if case.expired else (None, None)
    )
    pair = server_cert(ca, names, *window)
    versions = OLD_TLS if case.old_tls_only else None
    return TlsServer(
        (endpoint.listen, 0),
        pair,
        ca.issuing.cert_pem,
        versions=versions,
        client_ca=bench.layout.client_cafile,
    )


def _point_at(kit, endpoint, port: int) -> None:
    kit.edit_config(lambda c: c["mqtt"].update(endpoint=endpoint.name, port=port))


def _client_handshake(bench, endpoint, port: int, version: ssl.TLSVersion) -> str | None:
    """A host client (the bench operator) pinned to ``version``: the version, or None."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(bench.layout.server_ca_pem))
    cert, key = bench.layout.identity(OPERATOR_CN)
    ctx.load_cert_chain(str(cert), str(key))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 on purpose
        ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        with (
            socket.create_connection((endpoint.listen, port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=endpoint.name) as s,
        ):
            return s.version()
    except (ssl.SSLError, OSError):
        return None


@pytest.mark.checklist("hw.tls12")
@pytest.mark.parametrize("case", SERVER_CASES, ids=[c.id for c in SERVER_CASES])
def test_device_refuses_bad_server(case, bench, make_kit, hil_target, tmp_path):
    endpoint = hil_target.device_endpoint()
    kit = make_kit(bench, **RETRY)
    with _server_for(case, bench, endpoint, tmp_path) as srv:
        _point_at(kit, endpoint, srv.port)
        kit.power_on()
        kit.wait_for(TWO_ATTEMPTS, 30)
        assert srv.wait(lambda s: s.attempts >= 2, 5), "the server saw no handshake attempts"
        from_device = list(srv.failures)
        if case.old_tls_only:
            # The stand-in really speaks TLS 1.0 and 1.1 (and nothing newer).
            for version, expect in OLD_TLS_PROBES:
                got = _client_handshake(bench, endpoint, srv.port, version)
                assert got == expect, (version, got)
            srv.handshakes.clear()

    con = kit.console()
    ended = re.findall(r"^\d+ W device: session ended: (.*)$", con, re.MULTILINE)
    assert len(ended) >= 2, con
    assert all(re.search(case.device_says, e) for e in ended), ended
    assert "mqtt connected" not in con, "the device went on with a bad server"
    assert srv.connects == [], "the server received an MQTT CONNECT"
    assert srv.handshakes == [], f"a handshake completed: {srv.handshakes}"
    assert from_device and all(case.alert in f for f in from_device), from_device
    assert kit.is_running(), "a TLS failure must not stop the device"


@pytest.mark.checklist("hw.tls12", "hw.cert_auth")
def test_control_valid_server_gets_mqtt_connect_over_tls12(bench, make_kit, hil_target):
    """The harness of the negatives, with a good certificate: the device completes a
    TLS 1.2 handshake, presents its own certificate and sends CONNECT."""
    endpoint = hil_target.device_endpoint()
    ca = _bench_server_ca(bench)
    kit = make_kit(bench, **RETRY)
    with TlsServer(
        (endpoint.listen, 0),
        server_cert(ca, [endpoint.name]),
        ca.issuing.cert_pem,
        client_ca=bench.layout.client_cafile,
    ) as srv:
        _point_at(kit, endpoint, srv.port)
        kit.power_on()
        assert srv.wait(lambda s: s.connects, 30), kit.console()
    assert srv.handshakes[0] == "TLSv1.2"
    assert srv.peer_certs[0] == kit.thing, "the device must present its own certificate"
    assert srv.failures == []


def _broker_slice(bench, mark: int) -> str:
    return bench.broker_log()[mark:]


def _der_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


CLIENT_CASES = {
    # case: (what the broker logs, what the device may say)
    "wrong-key": ("bad signature", r"MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE|OSError"),
    "unknown-client-ca": ("certificate verify failed", r"OSError"),
}


@pytest.mark.checklist("hw.cert_auth")
@pytest.mark.parametrize("case", sorted(CLIENT_CASES))
def test_broker_refuses_bad_device_identity(case, bench, make_kit, observer, tmp_path):
    kit = make_kit(bench, **RETRY)
    if case == "wrong-key":
        # The right certificate with another key: the CertificateVerify signature fails.
        kit.write_file("certs/device.key.der", _der_key(new_key()))
    else:
        # A certificate with the right name from a CA the cloud does not trust.
        other = CertificateAuthority.create(tmp_path / "rogue-ca", "rogue fleet")
        pair = other.issue(kit.thing, Usage.CLIENT)
        kit.write_file("certs/device.crt.der", pair.cert_der)
        kit.write_file("certs/device.key.der", pair.key_der)
    broker_says, device_says = CLIENT_CASES[case]
    mark = len(bench.broker_log())
    kit.power_on()
    kit.wait_for(TWO_ATTEMPTS, 30)
    time.sleep(0.2)  # mosquitto writes its log line after the alert
    log = _broker_slice(bench, mark)
    assert log.count(broker_says) >= 2, log
    assert f" as {kit.thing} " not in log, "the broker accepted an MQTT CONNECT"
    con = kit.console()
    ended = re.findall(r"^\d+ W device: session ended: (.*)$", con, re.MULTILINE)
    assert len(ended) >= 2 and all(re.search(device_says, e) for e in ended), con
    assert "mqtt connected" not in con
    assert observer.shadow_get(kit.thing) is None, "a shadow appeared without a session"


@pytest.mark.checklist("hw.cert_auth", "hw.cert_only_credentials")
def test_no_client_certificate_no_session(bench, make_kit):
    """A device cannot be configured without a client certificate (it says so and never
    opens a connection), and the broker refuses any client that presents none."""
    kit = make_kit(bench)
    kit.edit_config(lambda c: c["tls"].pop("cert"))
    mark = len(bench.broker_log())
    kit.power_on()
    kit.wait_for(r"E main: config: missing field 'tls\.cert'", 15)
    assert kit.is_running()
    assert "connecting to" not in kit.console()
    assert "New connection from" not in _broker_slice(bench, mark)

    # The same endpoint, a client without a certificate: refused in the handshake.
    assert handshake(bench.port, bench.layout.server_ca_pem, ssl.TLSVersion.TLSv1_2, None) is None
    time.sleep(0.2)
    log = _broker_slice(bench, mark)
    assert "peer did not return a certificate" in log, log
    assert "New client connected" not in log
