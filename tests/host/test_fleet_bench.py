"""Fleet on the real bench: bulk registration (ACL), CRL and revocation, reuse report;
the CLI end to end (provision, register, revoke, rotate, teardown) with --target bench."""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import sys
import threading
from pathlib import Path

import pytest

from host_tools.bench import clients
from host_tools.bench.bench import Bench
from host_tools.bench.registry import (
    crl_path,
    register_things,
    reuse_report,
    unregister_things,
)
from host_tools.errors import UserError
from host_tools.identity import cli as provision_cli
from provisioning.store import FleetStore

MOSQUITTO = Path("/usr/sbin/mosquitto")
pytestmark = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    b = Bench(tmp_path_factory.mktemp("fleetbench") / "bench")
    b.up()
    yield b
    b.down()


def _run(capsys, *argv: str):
    p = argparse.ArgumentParser(prog="thingkit")
    provision_cli.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(list(argv))
    try:
        rc = args.func(args)
    except UserError as exc:
        print(f"thingkit: {exc.line()}", file=sys.stderr)
        rc = 1
    return (rc, *capsys.readouterr())


def _connect(bench: Bench, cert_der: bytes, key_der: bytes, cid: str, tmp: Path):
    c = clients.device_client(bench.layout, cert_der, key_der, cid, tmp)
    ok = threading.Event()
    c.on_connect = lambda *a: ok.set()
    try:
        c.connect("127.0.0.1", bench.port)
    except (ssl.SSLError, OSError) as exc:
        return False, str(exc)
    c.loop_start()
    got = ok.wait(5)
    c.disconnect()
    c.loop_stop()
    return got, ""


def test_register_things_in_bulk_writes_acl_once(bench: Bench) -> None:
    things = {f"bulk-{i:04d}": f"{i:064x}" for i in range(300)}
    assert register_things(bench, things) == 300
    assert register_things(bench, things) == 0  # nothing changed, no reload
    acl = bench.layout.acl.read_text()
    assert "user bulk-0299" in acl and "topic readwrite thingkit/bulk-0299/#" in acl
    assert set(things) <= set(bench.things())
    assert unregister_things(bench, list(things)) == 300
    assert "bulk-0001" not in bench.layout.acl.read_text()


def test_cli_bench_fleet_lifecycle(bench: Bench, tmp_path: Path, capsys) -> None:
    fleet = tmp_path / "fleet"
    root = ["--bench-root", str(bench.layout.root)]
    rc, out, err = _run(
        capsys,
        "provision",
        "--count",
        "3",
        "--target",
        "bench",
        "--fleet",
        str(fleet),
        "--board",
        "sim",
        "--yes",
        *root,
    )
    assert rc == 0, err
    store = FleetStore(fleet)
    assert len(store.devices) == 3 and (fleet / "devices").is_dir()
    spec = store.read_spec()
    assert (spec["endpoint"], spec["port"]) == ("localhost", bench.port)

    rc, out, err = _run(
        capsys, "register", "--fleet", str(fleet), "--target", "bench", "--dry-run", *root
    )
    assert rc == 0 and "would register 3 things" in out
    rc, out, err = _run(
        capsys, "register", "--fleet", str(fleet), "--target", "bench", "--yes", *root
    )
    assert rc == 0, err
    assert "3 things registered" in out and crl_path(bench).exists()
    e0, e1 = (store.devices[t] for t in sorted(store.devices)[:2])
    for e in (e0, e1):
        ok, _ = _connect(
            bench, base64.b64decode(e.cert), base64.b64decode(e.key), e.thing_name, tmp_path
        )
        assert ok, f"{e.thing_name} could not connect"

    rc, out, err = _run(
        capsys,
        "revoke",
        e0.thing_name,
        "--fleet",
        str(fleet),
        "--target",
        "bench",
        "--reason",
        "key_compromise",
        "--yes",
        *root,
    )
    assert rc == 0, err
    assert "revoked 1 certificate(s); bench CRL published; broker restarted" in out
    ok, why = _connect(
        bench, base64.b64decode(e0.cert), base64.b64decode(e0.key), e0.thing_name, tmp_path
    )
    assert not ok and "revoked" in why.lower()
    ok, _ = _connect(
        bench, base64.b64decode(e1.cert), base64.b64decode(e1.key), e1.thing_name, tmp_path
    )
    assert ok, "an unrevoked device was refused"
    assert FleetStore(fleet).devices[e0.thing_name].status == "revoked"

    # Rotation without a kit to deliver to: issued, image rebuilt, old one kept until confirmed.
    rc, out, err = _run(
        capsys,
        "rotate",
        e1.thing_name,
        "--fleet",
        str(fleet),
        "--target",
        "bench",
        "--kits",
        str(tmp_path / "nokits"),
        "--yes",
        *root,
    )
    assert rc == 0, err
    assert "wait for delivery" in out
    s2 = FleetStore(fleet)
    new = s2.devices[e1.thing_name]
    assert new.previous == [e1.fingerprint] and new.fingerprint != e1.fingerprint
    ok, _ = _connect(bench, base64.b64decode(e1.cert), base64.b64decode(e1.key), "old", tmp_path)
    assert ok, "the old certificate must work until the device confirms"
    ok, _ = _connect(bench, base64.b64decode(new.cert), base64.b64decode(new.key), "new", tmp_path)
    assert ok, "the new certificate does not work"
    rc, out, err = _run(
        capsys,
        "rotate",
        e1.thing_name,
        "--fleet",
        str(fleet),
        "--target",
        "bench",
        "--confirm",
        "--yes",
        *root,
    )
    assert rc == 0, err
    ok, _ = _connect(bench, base64.b64decode(e1.cert), base64.b64decode(e1.key), "old2", tmp_path)
    assert not ok, "the superseded certificate still connects after confirmation"
    ok, _ = _connect(bench, base64.b64decode(new.cert), base64.b64decode(new.key), "new2", tmp_path)
    assert ok

    rc, out, err = _run(
        capsys, "teardown", "--fleet", str(fleet), "--target", "bench", "--yes", *root
    )
    assert rc == 0 and "3 things removed" in out
    assert not set(store.devices) & set(bench.things())


def test_bench_target_refuses_a_foreign_ca(
    bench: Bench, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("THINGKIT_CA_PASSPHRASE", "pw")
    ca = tmp_path / "ca"
    assert _run(capsys, "ca", "init", "--dir", str(ca), "--yes")[0] == 0
    fleet = tmp_path / "fleet"
    rc, _o, err = _run(
        capsys,
        "provision",
        "--count",
        "1",
        "--fleet",
        str(fleet),
        "--ca",
        str(ca),
        "--endpoint",
        "x",
        "--no-images",
        "--yes",
    )
    assert rc == 0, err
    rc, _o, err = _run(
        capsys,
        "register",
        "--fleet",
        str(fleet),
        "--target",
        "bench",
        "--yes",
        "--bench-root",
        str(bench.layout.root),
    )
    assert rc == 1 and "not the bench's fleet CA" in err


LOG = """\
2026-11-22T10:00:00: mosquitto version 2.0.11 running
2026-11-22T10:00:01: New client connected from 127.0.0.1:5000 as bench.services (p2, c0, k30, u'bench.services').
2026-11-22T10:00:02: New client connected from 127.0.0.1:5001 as kit-a (p2, c1, k30, u'kit-a').
2026-11-22T10:00:03: New client connected from 127.0.0.1:5002 as clone-of-a (p2, c1, k30, u'kit-a').
2026-11-22T10:00:04: New client connected from 127.0.0.1:5003 as kit-b (p2, c1, k30, u'kit-b').
2026-11-22T10:00:05: New client connected from 127.0.0.1:5004 as kit-c (p2, c1, k30, u'kit-c').
2026-11-22T10:00:06: Client kit-c disconnected.
2026-11-22T10:00:07: New client connected from 127.0.0.1:5005 as kit-c2 (p2, c1, k30, u'kit-c').
"""


def test_reuse_report_from_broker_log(bench: Bench) -> None:
    found = reuse_report(bench, LOG)
    assert [r.identity for r in found] == ["kit-a"]
    assert [c["client_id"] for c in found[0].connections] == ["kit-a", "clone-of-a"]
    assert "certificate CN=kit-a is presented by 2 live connections" in found[0].line()
    flap = LOG + "".join(
        f"2026-11-22T10:01:0{i}: Client kit-b already connected, closing old connection.\n"
        f"2026-11-22T10:01:0{i}: New client connected from 127.0.0.1:60{i}0 as kit-b "
        "(p2, c1, k30, u'kit-b').\n"
        for i in range(4)
    )
    found = {r.identity: r for r in reuse_report(bench, flap)}
    assert found["kit-b"].takeovers == 4
    restarted = LOG + "2026-11-22T10:02:00: mosquitto version 2.0.11 terminating\n"
    assert reuse_report(bench, restarted) == []
    assert json.dumps([r.__dict__ for r in found.values()])  # --json friendly
