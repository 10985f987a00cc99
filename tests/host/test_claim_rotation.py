"""Certificate rotation over the air on the real bench, with virtual kits: the kit makes
the new key and CSR, switches, proves the new certificate by reconnecting after the old
one is revoked; a kit that cannot use the new certificate keeps the old one; power cuts
at random points of a rotation leave every kit with a working identity."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from host_tools.bench import cert_rotation
from host_tools.bench.bench import Bench
from host_tools.bench.observer import Observer
from host_tools.kit.provision import create_sim_kit
from host_tools.kit.sim import SimKit
from provisioning.revocation import RevocationList

MOSQUITTO = Path("/usr/sbin/mosquitto")
pytestmark = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    b = Bench(tmp_path_factory.mktemp("rotbench") / "bench")
    b.up()
    yield b
    b.down()


@pytest.fixture
def kit(bench: Bench, tmp_path: Path, request: pytest.FixtureRequest):
    name = "rot-" + request.node.name.split("[")[0][-20:].replace("_", "-").strip("-")
    k = create_sim_kit(bench, tmp_path / "kits", name, backoff_base_ms=500, backoff_cap_ms=2000)
    k.power_on()
    k.wait_for(r"shadow synced", 60)
    yield k
    k.power_off()


def _revoked(bench: Bench) -> set[str]:
    return {e.fingerprint for e in RevocationList(bench.fleet_ca().directory).entries}


def _cert_in_use(kit: SimKit) -> x509.Certificate:
    p = kit.flash / "certs/identity.json"
    rel = json.loads(p.read_text())["cert"] if p.exists() else "certs/device.crt.der"
    return x509.load_der_x509_certificate((kit.flash / rel).read_bytes())


def test_rotate_running_kit(bench: Bench, kit: SimKit) -> None:
    thing = kit.root.name
    old = bench.things()[thing]["fingerprint"]
    with Observer(bench) as obs:
        rep = cert_rotation.rotate_over_the_air(bench, thing, timeout=60)
        print(rep.line())
        assert rep.confirmed and rep.old_revoked, rep.steps
        assert rep.old == old and rep.new != old
        assert bench.things()[thing]["fingerprint"] == rep.new
        assert old in _revoked(bench) and rep.new not in _revoked(bench)
        cert = _cert_in_use(kit)
        assert cert.fingerprint(hashes.SHA256()).hex() == rep.new
        assert cert.subject.rfc4514_string() == f"CN={thing}"
        m = kit.wait_for(r"rotation \w+: key and CSR made on the kit in (\d+) ms", 5,
                         since_boot=False)  # fmt: skip
        print(f"rotation key+CSR on the virtual kit (64-bit unix port): {m.group(1)} ms")
        # The new key never left the kit.
        st = json.loads((kit.flash / "certs/identity.json").read_text())
        secret = (kit.flash / st["key"]).read_bytes()[7:39]
        assert secret.hex() not in kit.console(since_boot=False)
        for msg in obs.messages:
            assert secret not in msg.payload and secret.hex().encode() not in msg.payload
    for f in bench.layout.root.rglob("*"):
        if f.is_file():
            assert secret not in f.read_bytes(), f
    # A second rotation goes from generation 1 to 2 and removes generation 1's files.
    rep2 = cert_rotation.rotate_over_the_air(bench, thing, timeout=60)
    assert rep2.confirmed, rep2.steps
    assert not (kit.flash / "certs/id1.key.der").exists()
    ev = [json.loads(x) for x in (bench.layout.fleet_provisioning / "events.jsonl").open()]
    assert [e["result"] for e in ev if e.get("op") == "rotate-result"] == ["confirmed"] * 2


def test_kit_that_cannot_use_the_new_certificate_keeps_the_old(bench: Bench, kit: SimKit) -> None:
    thing = kit.root.name
    old = bench.things()[thing]["fingerprint"]
    rep = cert_rotation.rotate_over_the_air(bench, thing, timeout=45, inject="untrusted")
    print(rep.line())
    assert not rep.confirmed and not rep.old_revoked
    kit.wait_for(r"new certificate never connected \(3 tries\)[^\n]*previous certificate", 60,
                 since_boot=False)  # fmt: skip
    assert cert_rotation._answers(bench, thing, 60)  # online again, on the old one
    assert _cert_in_use(kit).fingerprint(hashes.SHA256()).hex() == old
    assert old not in _revoked(bench) and bench.things()[thing]["fingerprint"] == old
    with Observer(bench) as obs:
        ident = obs.shadow_get(thing)["state"]["reported"]["boot"]["identity"]
    assert "never connected" in ident["why"]


def test_power_cuts_during_rotation(bench: Bench, kit: SimKit) -> None:
    """20 rotations, each cut by a power loss at a random point (before the request
    reaches the kit, during key and CSR, after the certificate, after the commit, while
    switching); the kit is powered on again each time. Every time it ends online, on a
    certificate the broker accepts, never revoked while in use."""
    thing = kit.root.name
    rnd = random.Random(16)
    results = []
    for i in range(20):
        out: dict = {}
        t = threading.Thread(
            target=lambda out=out: out.update(r=cert_rotation.rotate_over_the_air(bench, thing, 30))
        )
        t.start()
        if i % 2:  # inside the kit's part: CSR exchange, storing, commit
            try:
                kit.wait_for(r"rotation \w+: key and CSR", 10)
            except TimeoutError:
                pass
            time.sleep(rnd.uniform(0.0, 0.15))
        else:  # anywhere, from the request to the new certificate's first session
            time.sleep(rnd.uniform(0.0, 1.5))
        kit.power_off()
        time.sleep(rnd.uniform(0.0, 0.3))
        kit.power_on()
        t.join(90)
        assert not t.is_alive()
        rep = out["r"]
        results.append(rep.confirmed)
        assert cert_rotation._answers(bench, thing, 60), f"cut {i}: the kit is not online"
        in_use = _cert_in_use(kit).fingerprint(hashes.SHA256()).hex()
        assert in_use not in _revoked(bench), f"cut {i}: the certificate in use is revoked"
        assert bench.things()[thing]["fingerprint"] == in_use or not rep.confirmed
    print(f"rotations confirmed despite the cut: {sum(results)}/20")


def test_cli_rotate_over_the_air(bench: Bench, kit: SimKit, capsys) -> None:
    import argparse

    from host_tools.identity import cli as provision_cli

    p = argparse.ArgumentParser(prog="thingkit")
    provision_cli.register(p.add_subparsers(dest="command", required=True))
    thing = kit.root.name
    argv = ["rotate", "--over-the-air", thing, "--bench-root", str(bench.layout.root), "--json"]
    args = p.parse_args(argv)
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    (r,) = doc["rotated"]
    assert r["thing"] == thing and r["confirmed"] and r["old_revoked"]
    assert bench.things()[thing]["fingerprint"] == r["new"]
