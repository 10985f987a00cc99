"""Certificate rotation on AWS IoT via ``CreateCertificateFromCsr``
(host_tools.identity.rotation.rotate_on_aws), against moto's IoT model at the boto3 level:
the CSR is made by the firmware's own code (tk.identity on the MicroPython unix port), the
calls are made in order, the old certificate is revoked only after the device confirmed
the new one, a refused CSR or an unconfirmed certificate leaves the old one ACTIVE.

moto issues the certificate with a key of its own, not the CSR's (real AWS IoT signs the
CSR's public key): the device's check that the certificate holds its key is not exercised
here; it is in tests/host/test_claim_rotation.py against the bench.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from moto import mock_aws

from host_tools.identity.rotation import rotate_on_aws
from host_tools.kit.sim import micropython_binary

REGION = "eu-west-1"
THING = "kit-aws-rot-1"
POLICY = "thingkit-device"
BEGIN, END = "-----BEGIN CERTIFICATE REQUEST-----", "-----END CERTIFICATE REQUEST-----"
ROOT = Path(__file__).resolve().parents[2]


def device_csr(tmp_path: Path, thing: str) -> str:
    """A CSR made as the kit makes it: tk.identity on the MicroPython unix port."""
    path = os.pathsep.join(
        str(ROOT / p) for p in ("firmware", "host_tools/kit/image/frozen", "host_tools/kit/image")
    )
    done = subprocess.run(
        [
            micropython_binary(),
            "-c",
            (
                "from tk import identity; k = identity.make_key('k.der', replace=True); "
                f"print(identity.pem(identity.csr(k, {thing!r}), 'CERTIFICATE REQUEST'))"
            ),
        ],
        cwd=tmp_path,
        env={"MICROPYPATH": path, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip() + "\n"


@pytest.fixture
def iot():
    with mock_aws():
        c = boto3.client("iot", region_name=REGION)
        c.create_thing(thingName=THING)
        c.create_policy(policyName=POLICY, policyDocument='{"Version": "2012-10-17"}')
        old = c.create_keys_and_certificate(setAsActive=True)
        c.attach_policy(policyName=POLICY, target=old["certificateArn"])
        c.attach_thing_principal(thingName=THING, principal=old["certificateArn"])
        c.old = old["certificateId"]  # type: ignore[attr-defined]
        calls: list[str] = []
        c.meta.events.register("before-call.iot.*", lambda model, **kw: calls.append(model.name))
        c.calls = calls  # type: ignore[attr-defined]
        yield c


def _status(iot, cid: str) -> str:
    return iot.describe_certificate(certificateId=cid)["certificateDescription"]["status"]


def test_rotation_from_a_device_csr(iot, tmp_path: Path) -> None:
    csr = device_csr(tmp_path, THING)
    got: dict = {}

    def deliver(pem: str, cid: str) -> bool:
        got["cert"] = x509.load_pem_x509_certificate(pem.encode())
        got["id"] = cid
        return True

    def confirm(cid: str) -> bool:
        # When the device proves the new certificate, the old one is still usable.
        assert _status(iot, iot.old) == "ACTIVE" and _status(iot, cid) == "ACTIVE"
        return True

    rep = rotate_on_aws(iot, THING, csr, POLICY, deliver, confirm)
    print(rep.line())
    assert rep.confirmed and rep.old_ids == [iot.old] and rep.old_status == "REVOKED"
    assert iot.calls[:4] == [
        "ListThingPrincipals",
        "CreateCertificateFromCsr",
        "AttachPolicy",
        "AttachThingPrincipal",
    ]
    assert iot.calls[4:] == ["DescribeCertificate"] * 2 + [
        "UpdateCertificate",
        "DetachThingPrincipal",
    ]
    assert got["id"] == rep.new_id
    assert got["cert"].subject.rfc4514_string() == f"CN={THING}"
    assert _status(iot, iot.old) == "REVOKED" and _status(iot, rep.new_id) == "ACTIVE"
    assert iot.list_thing_principals(thingName=THING)["principals"] == [rep.new_arn]
    assert iot.list_attached_policies(target=rep.new_arn)["policies"][0]["policyName"] == POLICY
    # The next rotation finds only the new certificate as the one to replace.
    rep2 = rotate_on_aws(iot, THING, device_csr(tmp_path, THING), POLICY,
                         lambda p, c: True, lambda c: True, old_status="INACTIVE")  # fmt: skip
    assert rep2.confirmed and rep2.old_ids == [rep.new_id]
    assert _status(iot, rep.new_id) == "INACTIVE" and _status(iot, iot.old) == "REVOKED"


def test_unconfirmed_certificate_keeps_the_old_one(iot, tmp_path: Path) -> None:
    rep = rotate_on_aws(iot, THING, device_csr(tmp_path, THING), POLICY,
                        lambda p, c: True, lambda c: False)  # fmt: skip
    print(rep.line())
    assert rep.delivered and not rep.confirmed and rep.old_status == "ACTIVE"
    assert "UpdateCertificate" not in iot.calls
    assert _status(iot, iot.old) == "ACTIVE"
    # The new one stays attached (the device may still come back on it): both are old
    # for the next rotation.
    assert set(iot.list_thing_principals(thingName=THING)["principals"]) == {
        rep.new_arn,
        iot.describe_certificate(certificateId=iot.old)["certificateDescription"]["certificateArn"],
    }
    nxt = rotate_on_aws(iot, THING, device_csr(tmp_path, THING), POLICY,
                        lambda p, c: True, lambda c: True)  # fmt: skip
    assert set(nxt.old_ids) == {iot.old, rep.new_id}
    assert _status(iot, iot.old) == _status(iot, rep.new_id) == "REVOKED"


def _other_csr(cn: str, signer=None) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    )
    return b.sign(signer or key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    "csr, why",
    [
        (lambda: _other_csr("kit-someone-else"), "must verify and name"),
        (lambda: f"{BEGIN}\nAAAA\n{END}\n", "does not parse"),
    ],
    ids=["other-thing", "malformed"],
)
def test_refused_csr_changes_nothing(iot, csr, why: str) -> None:
    def never(*a: object) -> bool:
        raise AssertionError("nothing is delivered or confirmed for a refused CSR")

    rep = rotate_on_aws(iot, THING, csr(), POLICY, never, never)
    print(rep.line())
    assert rep.rejected == "InvalidRequestException" and why in rep.steps[-1]
    assert iot.calls == ["ListThingPrincipals"]
    assert _status(iot, iot.old) == "ACTIVE"
    assert len(iot.list_certificates()["certificates"]) == 1


def test_csr_refused_by_aws_changes_nothing(iot, tmp_path: Path) -> None:
    """A refusal by AWS itself (simulated: a botocore hook raises the ClientError AWS
    would return, moto accepts any CSR that parses): reported with AWS's error code,
    the old certificate stays ACTIVE."""
    from botocore.exceptions import ClientError

    def refuse(**kw: object) -> None:
        raise ClientError(
            {"Error": {"Code": "LimitExceededException", "Message": "too many certificates"}},
            "CreateCertificateFromCsr",
        )

    iot.meta.events.register("before-call.iot.CreateCertificateFromCsr", refuse)
    rep = rotate_on_aws(iot, THING, device_csr(tmp_path, THING), POLICY,
                        lambda p, c: True, lambda c: True)  # fmt: skip
    assert rep.rejected == "LimitExceededException" and not rep.new_id
    assert _status(iot, iot.old) == "ACTIVE" and "UpdateCertificate" not in iot.calls


# -- the operator's MQTT side, on the bench's broker and shadow service ------------------
MOSQUITTO = Path("/usr/sbin/mosquitto")


class DeviceDouble:
    """Plays the kit's side of the exchange with paho, as a thing registered on the bench
    (the bench's broker and shadow service stand in for AWS IoT's data plane): on the
    shadow request it sends a CSR (``cn``: the name it puts in it), takes the reply,
    reports the certificate's SHA-256 as ``boot.identity.cert`` and answers pings. It
    cannot reconnect with moto's certificate (moto's CA, moto's key): this checks the
    operator's exchange, not a kit (tests/host/test_rotation_serial.py does a kit)."""

    def __init__(self, bench, thing: str, root: Path, cn: str | None = None, refuse=False):
        import ssl

        import paho.mqtt.client as mqtt
        from cryptography.hazmat.primitives.serialization import load_der_private_key
        from paho.mqtt.enums import CallbackAPIVersion

        from host_tools.kit.provision import bench_config
        from provisioning.device import provision_device

        ident = provision_device(bench.fleet_ca(), bench_config(bench, thing), root,
                                 bench.layout.server_ca_der.read_bytes())  # fmt: skip
        bench.register(thing, ident.fingerprint)
        der = (root / "certs/device.crt.der").read_bytes()
        self.cert_pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        key = load_der_private_key((root / "certs/device.key.der").read_bytes(), None)
        (root / "c.pem").write_bytes(self.cert_pem)
        (root / "k.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        ctx = ssl.create_default_context(cafile=str(bench.layout.server_ca_pem))
        ctx.load_cert_chain(root / "c.pem", root / "k.pem")
        self.thing, self.cn, self.refuse = thing, cn or thing, refuse
        self.prefix = bench.topic_prefix
        self.replies: list[tuple[str, dict]] = []
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=thing)
        self.c.tls_set_context(ctx)
        self.c.on_message = self._on
        self.c.connect("localhost", bench.port)
        own, shadow = f"{self.prefix}/{thing}", f"$aws/things/{thing}/shadow"
        self.c.subscribe([(f"{shadow}/update/delta", 1), (f"{own}/ping", 1),
                          (f"{own}/identity/csr/accepted", 1),
                          (f"{own}/identity/csr/rejected", 1)])  # fmt: skip
        self.c.loop_start()

    def _on(self, c, u, m) -> None:
        import hashlib
        import json

        doc = json.loads(m.payload)
        own, shadow = f"{self.prefix}/{self.thing}", f"$aws/things/{self.thing}/shadow"
        if m.topic.endswith("/update/delta"):
            rid = doc.get("state", {}).get("identity", {}).get("rotate")
            if rid:
                csr = _other_csr(self.cn)
                c.publish(f"{own}/identity/csr", json.dumps({"rid": rid,
                          "certificateSigningRequest": csr,
                          "currentCertificatePem": self.cert_pem.decode()}), 1)  # fmt: skip
        elif m.topic.endswith("/identity/csr/accepted"):
            self.replies.append(("accepted", doc))
            if self.refuse:
                report = {"identity_rotation": {"rid": doc["rid"], "error": "not my key"}}
            else:
                cert = x509.load_pem_x509_certificate(doc["certificatePem"].encode())
                fp = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
                report = {"boot": {"identity": {"cert": fp[:16], "gen": 1}}}
            c.publish(f"{shadow}/update", json.dumps({"state": {"reported": report}}), 1)
        elif m.topic.endswith("/identity/csr/rejected"):
            self.replies.append(("rejected", doc))
        elif m.topic.endswith("/ping"):
            c.publish(f"{own}/pong", json.dumps({"id": doc.get("id")}), 1)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    from host_tools.bench.bench import Bench

    if not MOSQUITTO.exists():
        pytest.skip("mosquitto not installed")
    b = Bench(tmp_path_factory.mktemp("awsrot") / "bench")
    b.up()
    yield b
    b.down()


def _link(bench, thing: str):
    import ssl

    from host_tools.bench.layout import OPERATOR_CN
    from host_tools.identity.rotation import DeviceLink

    cert, key = bench.layout.identity(OPERATOR_CN)
    ctx = ssl.create_default_context(cafile=str(bench.layout.server_ca_pem))
    ctx.load_cert_chain(cert, key)
    return DeviceLink("localhost", bench.port, thing, ctx, prefix=bench.topic_prefix)


@pytest.mark.parametrize("case", ["confirmed", "kit-refuses", "other-cn"])
def test_operator_exchange_over_mqtt(iot, bench, tmp_path: Path, case: str) -> None:
    from host_tools.identity.rotation import rotate_aws_over_the_air

    thing = THING  # the thing of the moto fixture, registered on the bench too
    dev = DeviceDouble(bench, thing, tmp_path / "dev", cn="kit-other" if case == "other-cn"
                       else None, refuse=case == "kit-refuses")  # fmt: skip
    try:
        with _link(bench, thing) as link:
            rep = rotate_aws_over_the_air(iot, link, thing, POLICY, timeout=20, progress=print)
    finally:
        dev.close()
    print(rep.line())
    mine = [
        (k, d)
        for k, d in dev.replies
        if d.get("rid") == link.rid and d.get("errorCode") != "NoRotationRequested"
    ]  # the bench's own service: ignored
    if case == "confirmed":
        assert rep.confirmed and _status(iot, iot.old) == "REVOKED"
        assert [k for k, _ in mine] == ["accepted"]
        assert mine[0][1]["certificateId"] == rep.new_id
    elif case == "kit-refuses":
        assert rep.delivered and not rep.confirmed and _status(iot, iot.old) == "ACTIVE"
        assert rep.steps[-1] == "the kit refused: not my key"
    else:
        assert rep.rejected == "InvalidRequestException" and _status(iot, iot.old) == "ACTIVE"
        assert [k for k, _ in mine] == ["rejected"]
        assert mine[0][1]["errorCode"] == "InvalidRequestException"
        assert "CreateCertificateFromCsr" not in iot.calls


def test_cli_rotate_over_the_air_on_aws(iot, bench, tmp_path: Path, capsys) -> None:
    import argparse
    import json

    from host_tools.bench.layout import OPERATOR_CN
    from host_tools.identity import cli as identity_cli

    p = argparse.ArgumentParser(prog="thingkit")
    identity_cli.register(p.add_subparsers(dest="command", required=True))
    cert, key = bench.layout.identity(OPERATOR_CN)
    dev = DeviceDouble(bench, THING, tmp_path / "dev")
    argv = [
        "rotate", "--over-the-air", "--target", "aws", THING, "--region", REGION,
        "--account-id", "123456789012", "--fleet", str(tmp_path / "no-fleet"),
        "--endpoint", f"localhost:{bench.port}", "--operator-cert", str(cert),
        "--operator-key", str(key), "--endpoint-ca", str(bench.layout.server_ca_pem),
        "--old-status", "INACTIVE", "--timeout", "20", "--yes", "--json",
    ]  # fmt: skip
    try:
        args = p.parse_args(argv)
        assert args.func(args) == 0
    finally:
        dev.close()
    (r,) = json.loads(capsys.readouterr().out)["rotated"]
    assert r["thing"] == THING and r["confirmed"] and r["old_ids"] == [iot.old]
    assert _status(iot, iot.old) == "INACTIVE" and _status(iot, r["new_id"]) == "ACTIVE"
    new = iot.describe_certificate(certificateId=r["new_id"])["certificateDescription"]
    assert iot.list_thing_principals(thingName=THING)["principals"] == [new["certificateArn"]]
