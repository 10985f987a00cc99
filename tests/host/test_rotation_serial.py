"""Certificate rotation over the air through the HIL serial target: a kit on a fake board
(hil_tests/targets/fake_board.py: the MicroPython unix port behind a real raw REPL on
``socket://``), deployed and provisioned as the serial target does (mpremote), reached by
the host only through the bench and MQTT. The rotation code is the one virtual kits use
(host_tools.bench.cert_rotation); nothing of the kit's files is read by it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from hil_tests.targets import TargetOptions, make_target
from hil_tests.targets.fake_board import FakeBoard, write_env
from host_tools.bench import cert_rotation
from host_tools.bench.bench import Bench
from provisioning.revocation import RevocationList

MOSQUITTO = Path("/usr/sbin/mosquitto")
pytestmark = [
    pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed"),
    pytest.mark.slow,
]


def _fp(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()).hex()


def test_rotate_a_kit_on_the_serial_target(tmp_path: Path) -> None:
    bench = Bench(tmp_path / "bench")
    bench.up()
    thing = "rot-serial-1"
    try:
        with FakeBoard(tmp_path / "board") as board:
            env = write_env(tmp_path / "fake.toml", [board])
            target = make_target(TargetOptions(env_file=env))
            dut, steps = target.steps(
                tmp_path / "duts", bench, thing, {"backoff_base_ms": 500, "backoff_cap_ms": 2000}
            )
            try:
                for step in steps:
                    print(f"{step.reaches}: {step.run(dut)}")
                dut.power_on()
                dut.wait_for(r"shadow synced", 90)
                old = bench.things()[thing]["fingerprint"]
                rep = cert_rotation.rotate_over_the_air(bench, thing, timeout=90, progress=print)
                print(rep.line())
                assert rep.confirmed and rep.old_revoked, rep.steps
                assert rep.old == old and rep.new != old
                dut.wait_for(r"rotation \w+: new certificate \(generation 1\) stored", 5,
                             since_boot=False)  # fmt: skip
                m = dut.wait_for(r"rotation \w+: key and CSR made on the kit in (\d+) ms", 5,
                                 since_boot=False)  # fmt: skip
                print(f"key + CSR on the fake board (64-bit unix port): {m.group(1)} ms")
                assert cert_rotation._answers(bench, thing, 30)
                # The files on the board (read back through mpremote, firmware stopped).
                with dut.halted() as dev:
                    st = json.loads(dev.read("certs/identity.json"))
                    in_use = _fp(dev.read(st["cert"]))
                    key = dev.read(st["key"])
            finally:
                target.close()
                dut.close()
        assert st["state"] == "own" and st["gen"] == 1  # proven by its first session
        assert in_use == rep.new == bench.things()[thing]["fingerprint"]
        revoked = {e.fingerprint for e in RevocationList(bench.fleet_ca().directory).entries}
        assert old in revoked and rep.new not in revoked
        # The new private key stayed on the board: not on the bench, not in the console.
        secret = key[7:39]
        assert secret.hex() not in board.output.decode(errors="replace")
        for f in bench.layout.root.rglob("*"):
            if f.is_file():
                assert secret not in f.read_bytes(), f
        ev = [json.loads(x) for x in (bench.layout.fleet_provisioning / "events.jsonl").open()]
        assert [e["result"] for e in ev if e.get("op") == "rotate-result"] == ["confirmed"]
    finally:
        bench.down()
