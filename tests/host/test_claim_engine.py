"""The fleet provisioning engine (provisioning.claim) without a broker: the documented
request and reply shapes, the pre-provisioning allow-list check, tokens, idempotent
retries, refusals and their records, and the claim identity's ACL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from host_tools.bench import acl
from provisioning.ca import CertificateAuthority
from provisioning.claim import (
    CREATE_TOPIC,
    CSR_TOPIC,
    TOKEN_TTL_S,
    ClaimRegistry,
    ProvisioningEngine,
    claim_rules,
)

TEMPLATE = "$aws/provisioning-templates/b1/provision/json"


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.open_or_create(tmp_path_factory.mktemp("ca") / "ca", "test")


@pytest.fixture
def env(ca: CertificateAuthority, tmp_path: Path):
    reg = ClaimRegistry(tmp_path / "claims.json")
    reg.add_batch("b1", "00" * 32, {"SN1": "kit-SN1", "SN2": "kit-SN2"}, burst=5, window_s=10)
    registered: list[tuple[str, str]] = []
    clock = Clock()
    eng = ProvisioningEngine(
        reg, ca, tmp_path / "events.jsonl", lambda t, f: registered.append((t, f)), clock=clock
    )
    return eng, reg, registered, clock, tmp_path


def _csr(cn: str, key=None) -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def _one(eng, topic: str, doc: object) -> tuple[str, dict]:
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    (reply,) = eng.handle(topic, payload)
    return reply


def _events(tmp: Path) -> list[dict]:
    return [json.loads(x) for x in (tmp / "events.jsonl").read_text().splitlines()]


def test_csr_then_register_thing(env) -> None:
    eng, reg, registered, _clock, tmp = env
    pem, key = _csr("kit-SN1")
    topic, doc = _one(eng, CSR_TOPIC, {"certificateSigningRequest": pem})
    assert topic == CSR_TOPIC + "/accepted"
    assert set(doc) == {"certificateId", "certificatePem", "certificateOwnershipToken"}
    cert = x509.load_pem_x509_certificate(doc["certificatePem"].encode())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.subject.rfc4514_string() == "CN=kit-SN1"
    assert doc["certificateId"] == cert.fingerprint(hashes.SHA256()).hex()
    req = {
        "certificateOwnershipToken": doc["certificateOwnershipToken"],
        "parameters": {"SerialNumber": "SN1"},
    }
    topic, out = _one(eng, TEMPLATE, req)
    assert topic == TEMPLATE + "/accepted"
    assert out == {"thingName": "kit-SN1", "deviceConfiguration": {}}
    assert registered == [("kit-SN1", doc["certificateId"])]
    # The same request again (a device that lost power before committing): same answer,
    # nothing registered twice.
    assert _one(eng, TEMPLATE, req) == (TEMPLATE + "/accepted", out)
    assert len(registered) == 1
    assert reg.batches()["b1"]["provisioned"]["SN1"]["thing"] == "kit-SN1"
    ev = _events(tmp)
    assert [e["result"] for e in ev] == ["accepted"] * 3
    assert "PRIVATE" not in (tmp / "events.jsonl").read_text()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"not json", "InvalidPayload"),
        (b"[1]", "InvalidPayload"),
        ({}, "InvalidPayload"),
        ({"certificateSigningRequest": "-----BEGIN CERTIFICATE REQUEST-----\nAA\n"}, "InvalidCSR"),
    ],
)
def test_bad_csr_requests_are_rejected(env, payload, code) -> None:
    eng, *_ = env
    topic, doc = _one(eng, CSR_TOPIC, payload)
    assert topic == CSR_TOPIC + "/rejected"
    assert doc["statusCode"] == 400 and doc["errorCode"] == code
    assert set(doc) == {"statusCode", "errorCode", "errorMessage"}


def test_csr_with_bad_signature_is_rejected(env) -> None:
    eng, *_ = env
    pem, _key = _csr("kit-SN1")
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 1  # inside the signature
    bad = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    _topic, doc = _one(eng, CSR_TOPIC, {"certificateSigningRequest": bad})
    assert doc["errorCode"] == "InvalidCSR" and "signature" in doc["errorMessage"]


def _token(eng, cn: str) -> str:
    pem, _ = _csr(cn)
    return _one(eng, CSR_TOPIC, {"certificateSigningRequest": pem})[1]["certificateOwnershipToken"]


def test_pre_provisioning_refusals(env) -> None:
    eng, reg, registered, clock, tmp = env

    def reg_thing(token: str, serial: str, template: str = TEMPLATE) -> dict:
        req = {"certificateOwnershipToken": token, "parameters": {"SerialNumber": serial}}
        topic, doc = _one(eng, template, req)
        assert topic.endswith("/rejected")
        return doc

    def csr_refused(cn: str) -> dict:
        topic, doc = _one(eng, CSR_TOPIC, {"certificateSigningRequest": _csr(cn)[0]})
        assert topic.endswith("/rejected")
        return doc

    # No certificate for a name that is not an allow-listed thing (the bench would
    # accept it at once: identity = CN).
    assert csr_refused("kit-SN9")["errorCode"] == "NotAllowListed"
    assert reg_thing(_token(eng, "kit-SN1"), "SN9")["errorCode"] == "NotAllowListed"
    assert reg_thing("forged", "SN1")["errorCode"] == "InvalidToken"
    # A certificate whose CN is not the serial's thing.
    assert reg_thing(_token(eng, "kit-SN2"), "SN1")["errorCode"] == "InvalidCSR"
    other = "$aws/provisioning-templates/nope/provision/json"
    clock.t += 11  # out of the throttling window
    assert reg_thing(_token(eng, "kit-SN1"), "SN1", other)["statusCode"] == 404
    # The token expires after an hour; the unactivated certificates are revoked then.
    revoked: list = []
    eng.revoke = revoked.extend
    tok = _token(eng, "kit-SN1")
    clock.t += TOKEN_TTL_S + 1
    assert reg_thing(tok, "SN1")["errorCode"] == "InvalidToken"
    _token(eng, "kit-SN2")  # any later token sweeps the expired ones
    assert len(revoked) >= 4
    revoked.clear()
    # Provisioned: a stray certificate for the same name (made before a power cut) is
    # revoked at activation; the activated one never is.
    stray = _token(eng, "kit-SN1")
    tok = _token(eng, "kit-SN1")
    _one(eng, TEMPLATE, {"certificateOwnershipToken": tok, "parameters": {"SerialNumber": "SN1"}})
    assert len(revoked) == 1 and stray != tok
    # A second kit with the provisioned serial: no certificate, no registration.
    clock.t += 11
    assert csr_refused("kit-SN1")["errorCode"] == "AlreadyProvisioned"
    assert reg_thing(stray, "SN1")["errorCode"] == "InvalidToken"
    # After an hour nothing more is revoked: the activated certificate stays valid.
    revoked.clear()
    clock.t += TOKEN_TTL_S + 1
    _token(eng, "kit-SN2")
    fps = [c.fingerprint(hashes.SHA256()).hex() for c in revoked]
    assert fps and registered[0][1] not in fps  # only the unactivated kit-SN2 one
    # A disabled claim provisions nothing more.
    reg.disable("b1", "test")
    assert csr_refused("kit-SN2")["errorCode"] == "NotAllowListed"
    assert registered == [("kit-SN1", registered[0][1])]
    codes = [e.get("code") for e in _events(tmp) if e.get("result") == "rejected"]
    assert {"NotAllowListed", "InvalidToken", "AlreadyProvisioned"} <= set(codes)


def test_burst_is_throttled(env) -> None:
    eng, *_rest, clock, _tmp = env
    codes = [_one(eng, CSR_TOPIC, b"{}")[1]["statusCode"] for _ in range(8)]
    assert codes == [400] * 5 + [429] * 3
    clock.t += 11
    assert _one(eng, CSR_TOPIC, b"{}")[1]["statusCode"] == 400


def test_create_keys_and_certificate_shape(env) -> None:
    eng, *_ = env
    topic, doc = _one(eng, CREATE_TOPIC, {})
    assert topic == CREATE_TOPIC + "/accepted"
    assert set(doc) == {
        "certificateId",
        "certificatePem",
        "privateKey",
        "certificateOwnershipToken",
    }


def test_claim_acl_grants_only_provisioning(env) -> None:
    _eng, reg, *_ = env
    text = acl.render({"kit-1": {}}, "thingkit", reg.batches())
    block = text.split("user claim.b1\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert block == claim_rules("b1")
    assert all("$aws/certificates/" in r or "$aws/provisioning-templates/b1/" in r for r in block)
    reg.disable("b1", "x")
    assert "user claim.b1\n\n" in acl.render({}, "thingkit", reg.batches())
