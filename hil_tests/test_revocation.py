"""Certificate lifecycle on the bench (IoT Lens BP 6.1, ``lens.cert_lifecycle``): a
revoked kit is refused by the broker, a rotated kit keeps working with its new
certificate while the old one is refused, and one certificate on two live connections is
reported (``hw.unique_cert``)."""

from __future__ import annotations

import re
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from hil_tests.helpers import RETRY_RX, wait_connected
from host_tools.bench import clients
from host_tools.bench.observer import Observer
from host_tools.bench.registry import crl_path, reuse_report, revoke_on_bench
from provisioning.lifecycle import KitDelivery, rotate_identity

pytestmark = pytest.mark.slow

FAST = {"backoff_base_ms": 200, "backoff_cap_ms": 800}


def _cert(kit) -> x509.Certificate:
    return x509.load_der_x509_certificate(kit.read_file("certs/device.crt.der"))


def _client(bench, cert_der: bytes, key_der: bytes, client_id: str, tmp: Path):
    """A paho client presenting a kit's identity; returns (client, connected?, error)."""
    c = clients.device_client(bench.layout, cert_der, key_der, client_id, tmp)
    ok = threading.Event()
    c.on_connect = lambda *a: ok.set()
    try:
        c.connect("127.0.0.1", bench.port)
    except (ssl.SSLError, OSError) as exc:
        return c, False, str(exc)
    c.loop_start()
    return c, ok.wait(5), ""


def _retries(kit) -> int:
    return len(RETRY_RX.findall(kit.console(since_boot=True)))


def _sessions(kit) -> int:
    """MQTT sessions the kit opened since power-on (its console says so on each)."""
    return kit.console(since_boot=True).count("I device: mqtt connected")


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


@pytest.mark.checklist("lens.cert_lifecycle")
@pytest.mark.hil_timeout(180)
def test_revoked_kit_cannot_connect(own_bench, make_kit, tmp_path):
    bench = own_bench
    good = make_kit(bench, **FAST)
    bad = make_kit(bench, **FAST)
    with Observer(bench) as obs:
        t0 = time.time()
        good.power_on()
        bad.power_on()
        assert wait_connected(obs, good.thing, True, 40, since=t0), "positive control offline"
        assert wait_connected(obs, bad.thing, True, 40, since=t0), "kit never came online"
    retries_before, bad_sessions, good_sessions = _retries(bad), _sessions(bad), _sessions(good)

    entry, new = revoke_on_bench(bench, _cert(bad), bad.thing, "key_compromise")
    assert new and entry.thing == bad.thing
    assert crl_path(bench).exists()
    assert f"crlfile {crl_path(bench)}" in bench.layout.mosquitto_conf.read_text()

    # The broker restarted with the CRL: the kit tries again, and again, and is refused.
    assert _wait(lambda: _retries(bad) >= retries_before + 3, 60), bad.console()[-2000:]
    assert _sessions(bad) == bad_sessions, "the revoked kit opened an MQTT session"
    # Positive control: the unrevoked kit reconnects after the restart.
    assert _wait(lambda: _sessions(good) > good_sessions, 40), good.console()[-2000:]
    log = bench.broker_log()
    assert re.search(r"certificate revoked|certificate verify failed", log), log[-2000:]
    assert not re.search(
        rf"New client connected from \S+ as {bad.thing} ", log.split("mosquitto version")[-1]
    ), "the broker accepted the revoked kit after the restart"

    # The same certificate from another client is refused at the handshake too.
    c, ok, err = _client(
        bench,
        bad.read_file("certs/device.crt.der"),
        bad.read_file("certs/device.key.der"),
        bad.thing,
        tmp_path,
    )
    c.loop_stop()
    assert not ok, "a client with the revoked certificate connected"
    assert "revoked" in err.lower() or not err, err


@pytest.mark.checklist("lens.cert_lifecycle")
@pytest.mark.hil_timeout(180)
def test_rotation_keeps_kit_online_and_revokes_old(own_bench, make_kit, tmp_path):
    bench = own_bench
    kit = make_kit(bench, **FAST)
    old_cert_der = kit.read_file("certs/device.crt.der")
    old_key_der = kit.read_file("certs/device.key.der")
    with Observer(bench) as obs:
        t0 = time.time()
        kit.power_on()
        assert wait_connected(obs, kit.thing, True, 40, since=t0)
        ca = bench.fleet_ca()

        def revoke(cert) -> None:
            revoke_on_bench(bench, cert, kit.thing, "superseded")

        result = rotate_identity(
            ca,
            kit.thing,
            x509.load_der_x509_certificate(old_cert_der),
            KitDelivery(kit, obs),
            revoke,
            timeout=60,
        )
        assert result.confirmed and result.old_revoked, result
        assert kit.read_file("certs/device.crt.der") != old_cert_der
    # Since the delivery reset: one session to confirm, one more after the broker restart
    # that published the CRL (the kit holds only the new certificate).
    assert _wait(lambda: _sessions(kit) >= 2, 40), kit.console()[-2000:]
    # The old certificate is refused; the kit's new one is in use.
    c, ok, _err = _client(bench, old_cert_der, old_key_der, f"{kit.thing}-old", tmp_path)
    c.loop_stop()
    assert not ok, "the superseded certificate still connects"


@pytest.mark.checklist("hw.unique_cert")
@pytest.mark.hil_timeout(120)
def test_reused_certificate_is_reported(bench, make_kit, tmp_path):
    kit = make_kit(bench)
    cert, key = kit.read_file("certs/device.crt.der"), kit.read_file("certs/device.key.der")
    assert not [r for r in reuse_report(bench) if r.identity == kit.thing]
    a, ok_a, _ = _client(bench, cert, key, f"{kit.thing}-a", tmp_path)
    b, ok_b, _ = _client(bench, cert, key, f"{kit.thing}-b", tmp_path)
    try:
        assert ok_a and ok_b
        time.sleep(0.5)
        found = [r for r in reuse_report(bench) if r.identity == kit.thing]
        assert len(found) == 1 and len(found[0].connections) == 2, found
        assert f"CN={kit.thing}" in found[0].line()
    finally:
        for c in (a, b):
            c.disconnect()
            c.loop_stop()
    time.sleep(0.5)
    assert not [r for r in reuse_report(bench) if r.identity == kit.thing]
