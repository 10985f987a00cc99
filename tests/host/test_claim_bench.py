"""Fleet provisioning by claim on the real bench, with virtual kits running the firmware.

A kit flashed with only the batch's claim certificate and its serial makes its own key
and CSR, gets a certificate through the bench's provisioning service, registers its
thing and comes online under its own certificate; its private key never leaves its
flash. The claim identity reaches nothing but the provisioning topics; a serial not on
the allow-list, a second kit with a provisioned serial and a burst are refused and
recorded; a malformed reply or a certificate for another key leaves the kit working.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from host_tools.bench import clients
from host_tools.bench import fleet_provisioning as fp
from host_tools.bench.bench import Bench
from host_tools.bench.observer import Observer
from host_tools.kit.provision import create_claim_kit
from host_tools.kit.sim import SimKit

MOSQUITTO = Path("/usr/sbin/mosquitto")
pytestmark = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed")
BATCH = "batch-a"
ALLOW = {f"SN{i:04d}": f"kit-SN{i:04d}" for i in range(1, 30)}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    b = Bench(tmp_path_factory.mktemp("claimbench") / "bench")
    b.up()
    yield b
    b.down()


@pytest.fixture(scope="module")
def claim_dir(bench: Bench, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("claim")
    fp.add_batch(bench, BATCH, ALLOW, d)
    return d


@pytest.fixture
def kits(tmp_path: Path):
    made: list[SimKit] = []
    yield made
    for k in made:
        k.power_off()


def _kit(bench, claim_dir, tmp_path, kits, serial, thing=None) -> SimKit:
    k = create_claim_kit(
        bench, tmp_path / "kits", thing or ALLOW[serial], serial, BATCH, claim_dir,
        backoff_base_ms=500, backoff_cap_ms=2000,
    )  # fmt: skip
    kits.append(k)
    return k


def _key_secret(kit: SimKit) -> bytes:
    """The 32-byte private scalar of the kit's own key (SEC 1 DER, bytes 7..39)."""
    st = json.loads((kit.flash / "certs/identity.json").read_text())
    der = (kit.flash / st["key"]).read_bytes()
    assert der[:7] == b"\x30\x77\x02\x01\x01\x04\x20"
    return der[7:39]


def test_claim_kit_comes_online_as_its_own_thing(bench, claim_dir, tmp_path, kits) -> None:
    with Observer(bench) as obs:
        kit = _kit(bench, claim_dir, tmp_path, kits, "SN0001")
        kit.power_on()
        m = kit.wait_for(r"key and CSR made on the kit in (\d+) ms", 60)
        print(f"key+CSR on the virtual kit (64-bit unix port): {m.group(1)} ms")
        kit.wait_for(r"identity: own certificate proven", 90, since_boot=False)
        online = obs.wait(lambda m: m.topic == "thingkit/kit-SN0001/status", timeout=30)
        assert online is not None
        st = json.loads((kit.flash / "certs/identity.json").read_text())
        assert st["state"] == "own"
        cert = x509.load_der_x509_certificate((kit.flash / st["cert"]).read_bytes())
        assert cert.subject.rfc4514_string() == "CN=kit-SN0001"
        assert bench.fleet_ca().issuer_of(cert) is not None
        fpr = cert.fingerprint(hashes.SHA256()).hex()
        assert bench.things()["kit-SN0001"]["fingerprint"] == fpr
        # The shadow says how it got its identity.
        doc = obs.shadow_get("kit-SN0001")
        ident = doc["state"]["reported"]["boot"]["identity"]
        assert ident["via"] == "claim" and ident["state"] == "own"
        # The private key never left the kit: not on the console, not on the broker,
        # not in the bench's records.
        secret = _key_secret(kit)
        assert secret.hex() not in kit.console(since_boot=False).lower()
        for msg in obs.messages:
            assert secret not in msg.payload and secret.hex().encode() not in msg.payload
        for f in bench.layout.root.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                assert secret not in data and secret.hex().encode() not in data, f
    ev = [e for e in fp.events(bench.layout) if e.get("serial") == "SN0001"]
    assert ev and ev[-1]["result"] == "accepted" and ev[-1]["thing"] == "kit-SN0001"


def _claim_client(bench: Bench, claim_dir: Path, tmp: Path, cid: str):
    cert_p, key_p = fp.claim_files(claim_dir)
    c = clients.device_client(bench.layout, cert_p.read_bytes(), key_p.read_bytes(), cid, tmp)
    got: list = []
    c.on_message = lambda cl, u, m: got.append((m.topic, m.payload))
    ok = threading.Event()
    c.on_connect = lambda *a: ok.set()
    c.connect("127.0.0.1", bench.port)
    c.loop_start()
    assert ok.wait(10)
    return c, got


def test_claim_identity_reaches_only_provisioning(bench, claim_dir, tmp_path) -> None:
    c, got = _claim_client(bench, claim_dir, tmp_path, "intruder")
    try:
        with Observer(bench) as obs:
            # Subscriptions to anything else receive nothing; publishes go nowhere.
            c.subscribe([("thingkit/#", 1), ("$aws/things/+/shadow/#", 1), ("$aws/#", 1)])
            time.sleep(0.5)
            obs.publish("thingkit/kit-SN0001/ping", {"id": "x"})
            obs.publish("$aws/things/kit-SN0001/shadow/update/accepted", {"x": 1})
            c.publish("thingkit/kit-SN0001/status", b"forged", qos=1)
            c.publish("$aws/things/kit-SN0001/shadow/update", b'{"state":{}}', qos=1)
            time.sleep(1.0)
            assert not any(m.payload == b"forged" for m in obs.messages)
            assert not any(m.topic.endswith("shadow/update") and m.payload == b'{"state":{}}'
                           for m in obs.messages)  # fmt: skip
            assert got == []
            # The provisioning topics work: a request is answered (here: refused).
            c.subscribe(fp.CSR_TOPIC + "/rejected", 1)
            time.sleep(0.3)
            c.publish(fp.CSR_TOPIC, b'{"certificateSigningRequest": "nope"}', qos=1)
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                time.sleep(0.05)
            assert got and got[0][0] == fp.CSR_TOPIC + "/rejected"
            assert json.loads(got[0][1])["statusCode"] == 400
    finally:
        c.disconnect()
        c.loop_stop()


def test_serial_not_on_allow_list_is_refused(bench, claim_dir, tmp_path, kits) -> None:
    kit = _kit(bench, claim_dir, tmp_path, kits, "SN9999", thing="kit-SN9999")
    kit.power_on()
    kit.wait_for(r"E claim: rejected: 403 NotAllowListed", 60)
    kit.wait_for(r"claim: next try", 10)
    assert "kit-SN9999" not in bench.things()
    ev = [e for e in fp.events(bench.layout) if e.get("cn") == "kit-SN9999"]
    assert ev and ev[0]["code"] == "NotAllowListed"
    # An allow-listed name with a serial that is not on the list: refused at RegisterThing.
    kit = _kit(bench, claim_dir, tmp_path / "b", kits, "SN9998", thing="kit-SN0028")
    kit.power_on()
    kit.wait_for(r"E claim: rejected: 403 NotAllowListed: serial SN9998", 60)
    assert "kit-SN0028" not in bench.things()
    ev = [e for e in fp.events(bench.layout) if e.get("serial") == "SN9998"]
    assert ev and ev[0]["code"] == "NotAllowListed"


def test_second_kit_with_same_serial_is_refused(bench, claim_dir, tmp_path, kits) -> None:
    a = _kit(bench, claim_dir, tmp_path / "a", kits, "SN0002")
    a.power_on()
    a.wait_for(r"identity: own certificate proven", 90, since_boot=False)
    first = bench.things()["kit-SN0002"]["fingerprint"]
    b = _kit(bench, claim_dir, tmp_path / "b", kits, "SN0002")
    b.power_on()
    b.wait_for(r"E claim: rejected: 403 AlreadyProvisioned", 60)
    assert bench.things()["kit-SN0002"]["fingerprint"] == first
    ev = [e for e in fp.events(bench.layout) if e.get("code") == "AlreadyProvisioned"]
    assert ev and ev[-1]["cn"] == "kit-SN0002"


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("malformed", r"E claim: malformed reply"),
        ("wrong_key", r"E claim: the certificate received is not for this kit's key"),
        ("rejected", r"E claim: rejected: 500 InternalFailure"),
    ],
)
def test_bad_reply_keeps_the_kit_working(bench, claim_dir, tmp_path, kits, fault, said) -> None:
    serial = {"malformed": "SN0003", "wrong_key": "SN0004", "rejected": "SN0005"}[fault]
    fp.ClaimRegistry(bench.layout.claims).inject(BATCH, fault)
    kit = _kit(bench, claim_dir, tmp_path, kits, serial)
    kit.power_on()
    kit.wait_for(said + r".*keeping the claim identity", 60)
    # The next try (no fault injected any more) provisions the kit.
    kit.wait_for(r"identity: own certificate proven", 90, since_boot=False)
    with Observer(bench) as obs:
        doc = obs.shadow_get(ALLOW[serial])
    ident = doc["state"]["reported"]["boot"]["identity"]
    assert ident["state"] == "own"
    assert said.removeprefix("E claim: ").replace("\\", "") in ident["why"]
    if fault == "wrong_key":
        # The certificate for the other key was never activated: revoked once the kit's
        # own one was (the broker restarts to load the CRL); the kit's own stays valid.
        from provisioning.revocation import RevocationList

        def revoked() -> list:
            return RevocationList(bench.fleet_ca().directory).entries

        deadline = time.monotonic() + 30
        while not any(e.thing == ALLOW[serial] for e in revoked()):
            assert time.monotonic() < deadline, "the stray certificate was not revoked"
            time.sleep(0.2)
        own = bench.things()[ALLOW[serial]]["fingerprint"]
        assert own not in {e.fingerprint for e in revoked()}
        # ... and the kit answers on its own certificate after that.
        with Observer(bench) as obs:
            thing = ALLOW[serial]
            deadline = time.monotonic() + 60
            while True:
                obs.publish(f"thingkit/{thing}/ping", {"id": "after-crl"})
                if obs.wait(lambda m: m.topic == f"thingkit/{thing}/pong", timeout=3):
                    break
                assert time.monotonic() < deadline, "the kit did not answer after the CRL"


def test_burst_is_throttled_and_recorded(bench, claim_dir, tmp_path) -> None:
    c, got = _claim_client(bench, claim_dir, tmp_path, "burst")
    try:
        c.subscribe([(fp.CSR_TOPIC + "/rejected", 1), (fp.CSR_TOPIC + "/accepted", 1)])
        time.sleep(0.3)
        for _ in range(30):
            c.publish(fp.CSR_TOPIC, b'{"certificateSigningRequest": "x"}', qos=1)
        deadline = time.monotonic() + 15
        while len(got) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        codes = [json.loads(p).get("statusCode") for _t, p in got]
        assert 429 in codes and 400 in codes
    finally:
        c.disconnect()
        c.loop_stop()
    assert any(e.get("code") == "Throttled" for e in fp.events(bench.layout))
    time.sleep(10)  # the window passes: later tests are not throttled


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    import argparse
    import sys

    from host_tools.errors import UserError
    from host_tools.identity import cli as provision_cli

    p = argparse.ArgumentParser(prog="thingkit")
    provision_cli.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(list(argv))
    try:
        rc = args.func(args)
    except UserError as exc:
        print(f"thingkit: {exc.line()}", file=sys.stderr)
        rc = 1
    return (rc, *capsys.readouterr())


def test_cli_claim_batch_kit_and_revoke(bench, tmp_path, capsys) -> None:
    root = ["--bench-root", str(bench.layout.root)]
    fleet, kits = tmp_path / "fleet", tmp_path / "kits"
    rc, out, err = _cli(
        capsys, "provision", "--claim", "--batch", "cli-batch", "--count", "1",
        "--model", "cli", "--fleet", str(fleet), "--sim-kits", "--kits", str(kits),
        "--json", *root,
    )  # fmt: skip
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["serials"] == 1 and doc["kits"] == [str(kits / "cli-SN00000001")]
    kit = SimKit(kits / "cli-SN00000001")
    try:
        kit.power_on()
        kit.wait_for(r"identity: own certificate proven", 90, since_boot=False)
    finally:
        kit.power_off()
    assert "cli-SN00000001" in bench.things()
    rc, out, err = _cli(capsys, "revoke", "--claim", "cli-batch", *root)
    assert rc == 0, err
    assert "disabled" in out
    assert bench.claims()["cli-batch"]["disabled"] is True
    rc, _out, err = _cli(capsys, "revoke", "--claim", "nope", *root)
    assert rc == 1 and "no claim batch" in err


def _identity_consistent(kit: SimKit) -> str:
    """The kit's committed identity is usable: its files exist and match. Returns it."""
    from cryptography.hazmat.primitives import serialization

    p = kit.flash / "certs/identity.json"
    if not p.exists():
        return "claim"
    st = json.loads(p.read_text())
    if st.get("state") not in ("trial", "own"):
        return "claim"
    cert = x509.load_der_x509_certificate((kit.flash / st["cert"]).read_bytes())
    key = serialization.load_der_private_key((kit.flash / st["key"]).read_bytes(), None)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    return st["state"]


def test_power_cuts_during_provisioning_leave_a_working_identity(
    bench, claim_dir, tmp_path, kits
) -> None:
    """12 kits, each cut once at a random point of its provisioning run (key, CSR,
    certificate, RegisterThing, commit): each keeps a usable identity and, powered on
    again, comes online as its own thing."""
    import random

    rnd = random.Random(1606)
    where = []
    for i in range(12):
        serial = f"SN{10 + i:04d}"
        kit = _kit(bench, claim_dir, tmp_path, kits, serial)
        kit.power_on()
        kit.wait_for(r"I claim: provisioning ", 60)
        time.sleep(rnd.uniform(0.0, 0.4))
        kit.power_off()
        lines = [x for x in kit.console().splitlines() if " claim: " in x]
        where.append(lines[-1].split(" claim: ", 1)[1][:40])
        _identity_consistent(kit)
        kit.power_on()
        kit.wait_for(r"identity: own certificate proven", 90, since_boot=False)
        assert _identity_consistent(kit) == "own"
        st = json.loads((kit.flash / "certs/identity.json").read_text())
        cert = x509.load_der_x509_certificate((kit.flash / st["cert"]).read_bytes())
        fpr = cert.fingerprint(hashes.SHA256()).hex()
        assert bench.things()[ALLOW[serial]]["fingerprint"] == fpr
        kit.power_off()
    print("last step before each cut:", where)


def test_new_certificate_that_cannot_connect_falls_back_to_claim(
    bench, claim_dir, tmp_path, kits
) -> None:
    """RegisterThing accepted but the thing not registered: the new certificate reaches
    nothing. After three failed sessions the kit goes back to its claim identity and
    says why; it is never left with an identity that does not work."""
    fp.ClaimRegistry(bench.layout.claims).inject(BATCH, "skip_register")
    kit = _kit(bench, claim_dir, tmp_path, kits, "SN0007")
    kit.power_on()
    kit.wait_for(r"identity: trial", 60, since_boot=False)
    m = kit.wait_for(r"E claim: identity: (new certificate never connected[^\n]*)", 90,
                     since_boot=False)  # fmt: skip
    # Back on the claim, it provisions again (generation 2), this time registered.
    kit.wait_for(r"identity: own certificate proven \(certs/id2", 90, since_boot=False)
    st = json.loads((kit.flash / "certs/identity.json").read_text())
    assert st["state"] == "own" and st["gen"] == 2
    with Observer(bench) as obs:
        ident = obs.shadow_get("kit-SN0007")["state"]["reported"]["boot"]["identity"]
    assert "never connected (3 tries)" in ident["why"]
    print(m.group(1))


# Last: it disables the module's batch.
def test_revoke_claim_disables_it(bench, claim_dir, tmp_path) -> None:
    assert fp.disable_batch(bench, BATCH, "test: misuse")
    cert_p, key_p = fp.claim_files(claim_dir)
    c = clients.device_client(
        bench.layout, cert_p.read_bytes(), key_p.read_bytes(), "after", tmp_path
    )
    ok = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: ok.set() if not rc.is_failure else None
    try:
        c.connect("127.0.0.1", bench.port)
        c.loop_start()
        assert not ok.wait(3)
    except (ssl.SSLError, OSError):
        pass
    finally:
        c.loop_stop()
    # The claim identity has no topic left in the ACL (and its certificate is on the CRL).
    acl = bench.layout.acl.read_text()
    assert "user claim.batch-a\n\n" in acl and "/provisioning-templates/" not in acl
    assert any(e.get("op") == "disable-claim" for e in fp.events(bench.layout))
