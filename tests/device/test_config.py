"""tk.config: loading and checking config.json on the device filesystem."""

from __future__ import annotations

import copy
import json

import pytest

from .harness import FIRMWARE

CERTS = {
    "certs/cert.der": b"\x30\x82cert",
    "certs/key.der": b"\x30\x82key",
    "certs/ca.der": b"\x30\x82ca",
}

VALID = {
    "schema": 1,
    "thing_name": "kit-1_A",
    "mqtt": {"endpoint": "127.0.0.1", "port": 8883, "keepalive_s": 60, "topic_prefix": "bench"},
    "tls": {"cert": "certs/cert.der", "key": "certs/key.der", "ca": "certs/ca.der"},
    "ntp": {"servers": ["127.0.0.1:12300", "pool.ntp.org"]},
    "backoff": {"base_ms": 500, "cap_ms": 60000, "reset_after_s": 45},
    "log_level": "debug",
    "docs_url": "https://example.com/kit",
    "wifi": {"ssid": "lab", "password": "wifi-secret"},
}

LOAD = """
from tk import config
from tkfakes import out, err
try:
    c = config.load({path})
    out({{"ok": {{k: getattr(c, k) for k in (
        "thing_name", "endpoint", "port", "keepalive_s", "topic_prefix", "cert_file",
        "key_file", "ca_file", "ntp_servers", "backoff_base_ms", "backoff_cap_ms",
        "backoff_reset_s", "log_level", "docs_url", "wifi")}}}})
except config.ConfigError as e:
    out({{"error": str(e)}})
"""


def load(
    mpy, doc=None, *, text: str | None = None, certs: dict | None = None, path: str | None = None
) -> dict:
    for name, data in (CERTS if certs is None else certs).items():
        mpy.write(name, data)
    if text is None and doc is not None:
        text = json.dumps(doc)
    if text is not None:
        mpy.write("config.json", text)
    return mpy.one(LOAD.format(path="" if path is None else repr(path)))


def with_change(path: str, value=..., doc=None) -> dict:
    """VALID with ``path`` (dotted) set to ``value``, or removed when value is omitted."""
    d = copy.deepcopy(VALID if doc is None else doc)
    *parents, last = path.split(".")
    cur = d
    for p in parents:
        cur = cur[p]
    if value is ...:
        del cur[last]
    else:
        cur[last] = value
    return d


def test_valid_config_loads(mpy):
    r = load(mpy, VALID)
    assert r == {
        "ok": {
            "thing_name": "kit-1_A",
            "endpoint": "127.0.0.1",
            "port": 8883,
            "keepalive_s": 60,
            "topic_prefix": "bench",
            "cert_file": "certs/cert.der",
            "key_file": "certs/key.der",
            "ca_file": "certs/ca.der",
            "ntp_servers": ["127.0.0.1:12300", "pool.ntp.org"],
            "backoff_base_ms": 500,
            "backoff_cap_ms": 60000,
            "backoff_reset_s": 45,
            "log_level": "debug",
            "docs_url": "https://example.com/kit",
            "wifi": {"ssid": "lab", "password": "wifi-secret"},
        }
    }


def test_optional_fields_take_defaults(mpy):
    doc = copy.deepcopy(VALID)
    for k in ("keepalive_s", "topic_prefix"):
        del doc["mqtt"][k]
    for k in ("backoff", "log_level", "docs_url", "wifi"):
        del doc[k]
    r = load(mpy, doc)["ok"]
    assert (
        r["keepalive_s"],
        r["topic_prefix"],
        r["backoff_base_ms"],
        r["backoff_cap_ms"],
        r["backoff_reset_s"],
        r["log_level"],
        r["docs_url"],
        r["wifi"],
    ) == (30, "thingkit", 1000, 120000, 30, "info", "", None)


def test_explicit_path(mpy):
    mpy.write("conf/other.json", json.dumps(VALID))
    assert load(mpy, None, path="conf/other.json")["ok"]["thing_name"] == "kit-1_A"


@pytest.mark.parametrize(
    "field",
    [
        "thing_name",
        "mqtt",
        "mqtt.endpoint",
        "mqtt.port",
        "tls",
        "tls.cert",
        "tls.key",
        "tls.ca",
        "ntp",
        "ntp.servers",
    ],
)
def test_missing_required_field(mpy, field):
    r = load(mpy, with_change(field))
    if "." not in field and field in ("tls", "ntp"):
        # A missing section is reported as its first required field.
        first = {"tls": "tls.cert", "ntp": "ntp.servers"}[field]
        assert r == {"error": f"missing field '{first}'"}
    else:
        assert r == {"error": f"missing field '{field}'"}


def test_missing_schema(mpy):
    assert load(mpy, with_change("schema")) == {"error": "schema must be 1, found None"}


@pytest.mark.parametrize(
    "field, value, kind",
    [
        ("thing_name", 5, "str"),
        ("mqtt", ["endpoint"], "dict"),
        ("mqtt.endpoint", None, "str"),
        ("mqtt.port", "8883", "int"),
        ("mqtt.port", 8883.0, "int"),
        ("mqtt.port", True, "int"),
        ("mqtt.keepalive_s", "60", "int"),
        ("mqtt.topic_prefix", 7, "str"),
        ("tls.cert", 1, "str"),
        ("tls.ca", ["certs/ca.der"], "str"),
        ("ntp.servers", "pool.ntp.org", "list"),
        ("backoff.base_ms", 1.5, "int"),
        ("backoff.cap_ms", False, "int"),
        ("backoff.reset_after_s", "30", "int"),
        ("log_level", 10, "str"),
        ("docs_url", False, "str"),
    ],
)
def test_wrong_type(mpy, field, value, kind):
    assert load(mpy, with_change(field, value)) == {"error": f"field '{field}' must be {kind}"}


@pytest.mark.parametrize(
    "field, value, lo, hi",
    [
        ("mqtt.port", 0, 1, 65535),
        ("mqtt.port", 65536, 1, 65535),
        ("mqtt.keepalive_s", 29, 30, 1200),
        ("mqtt.keepalive_s", 1201, 30, 1200),
        ("backoff.base_ms", 0, 1, 600000),
        ("backoff.base_ms", 600001, 1, 600000),
        ("backoff.cap_ms", 499, 500, 3600000),  # below base_ms (500)
        ("backoff.cap_ms", 3600001, 500, 3600000),
        ("backoff.reset_after_s", 0, 1, 86400),
        ("backoff.reset_after_s", 86401, 1, 86400),
    ],
)
def test_out_of_range(mpy, field, value, lo, hi):
    assert load(mpy, with_change(field, value)) == {
        "error": f"field '{field}' is {value}; allowed {lo}..{hi}"
    }


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("schema", 2, "schema must be 1, found 2"),
        ("schema", "1", "schema must be 1, found '1'"),
        ("thing_name", "", "thing_name must be 1-64 of A-Z a-z 0-9 _ -"),
        ("thing_name", "k" * 65, "thing_name must be 1-64 of A-Z a-z 0-9 _ -"),
        ("thing_name", "kit 1", "thing_name must be 1-64 of A-Z a-z 0-9 _ -"),
        ("thing_name", "kit/1", "thing_name must be 1-64 of A-Z a-z 0-9 _ -"),
        ("thing_name", "kit+#", "thing_name must be 1-64 of A-Z a-z 0-9 _ -"),
        ("mqtt.endpoint", "", "mqtt.endpoint must be a host name"),
        ("mqtt.endpoint", "mqtts://broker", "mqtt.endpoint must be a host name"),
        ("mqtt.endpoint", "my broker", "mqtt.endpoint must be a host name"),
        (
            "ntp.servers",
            [],
            "ntp.servers must be a non-empty list of 'host' or 'host:port' (port 1-65535)",
        ),
        (
            "ntp.servers",
            [""],
            "ntp.servers must be a non-empty list of 'host' or 'host:port' (port 1-65535)",
        ),
        (
            "ntp.servers",
            ["pool.ntp.org", 5],
            "ntp.servers must be a non-empty list of 'host' or 'host:port' (port 1-65535)",
        ),
    ],
)
def test_invalid_values(mpy, field, value, message):
    assert load(mpy, with_change(field, value)) == {"error": message}


def test_thing_name_of_64_chars_is_accepted(mpy):
    assert load(mpy, with_change("thing_name", "k" * 64))["ok"]["thing_name"] == "k" * 64


CREDENTIAL = (
    "a credential other than the TLS certificate; only certificates are accepted (Appendix B)"
)


@pytest.mark.parametrize(
    "field",
    [
        "mqtt.password",
        "mqtt.username",
        "mqtt.user",
        "mqtt.pass",
        "mqtt.token",
        "mqtt.secret",
        "mqtt.api_key",
        "mqtt.access_key",
        "mqtt.Password",
        "mqtt.TOKEN",
        "mqtt.passwd",
        "mqtt.access_token",
        "mqtt.auth_token",
        "mqtt.client_secret",
        # Anywhere in the file, not only in the MQTT section (the audit's rule).
        "password",
        "Pass-Word",
        "ntp.token",
        "backoff.aws_secret_access_key",
        "tls.credentials",
    ],
)
def test_credential_keys_anywhere_refused(mpy, field):
    assert load(mpy, with_change(field, "hunter2")) == {"error": f"{field}: {CREDENTIAL}"}


def test_credential_key_inside_a_list_refused(mpy):
    doc = with_change("extra", [{"name": "x"}, {"auth": {"bearer": "abc"}}])
    assert load(mpy, doc) == {"error": f"extra.auth.bearer: {CREDENTIAL}"}


def test_wifi_password_is_not_a_cloud_credential(mpy):
    assert load(mpy, with_change("wifi", {"ssid": "lab", "password": "x", "psk": "y"}))["ok"]


@pytest.mark.parametrize("key", ["private_key", "client_cert", "host"])
def test_other_unknown_mqtt_keys_refused(mpy, key):
    r = load(mpy, with_change(f"mqtt.{key}", "hunter2"))
    assert r == {
        "error": f"mqtt.{key}: unknown field; only TLS certificates may be used as credentials"
    }


def test_device_and_audit_share_one_credential_rule():
    # thingkit audit reads the firmware's own tuple: the same fields are refused on the
    # device and flagged on the host.
    from host_tools.audit import fleet

    src = (FIRMWARE / "tk" / "config.py").read_text()
    assert "CREDENTIAL_FIELDS = (" in src
    assert "password" in fleet._CREDENTIAL_FIELDS and "accesskeyid" in fleet._CREDENTIAL_FIELDS
    assert fleet._NOT_CLOUD == frozenset({"wifi"})


@pytest.mark.parametrize(
    "field, name",
    [("tls.cert", "certs/cert.der"), ("tls.key", "certs/key.der"), ("tls.ca", "certs/ca.der")],
)
def test_missing_cert_file_refused(mpy, field, name):
    certs = {k: v for k, v in CERTS.items() if k != name}
    assert load(mpy, VALID, certs=certs) == {"error": f"file '{name}' (field '{field}') not found"}


def test_empty_cert_file_refused(mpy):
    certs = dict(CERTS)
    certs["certs/key.der"] = b""
    assert load(mpy, VALID, certs=certs) == {
        "error": "file 'certs/key.der' (field 'tls.key') is empty"
    }


# (MicroPython's json accepts a trailing comma, so '{"schema": 1,}' is not in this list.)
@pytest.mark.parametrize("text", ["", "{", "{'schema': 1}", "schema=1", '{"schema": 1'])
def test_invalid_json_refused(mpy, text):
    assert load(mpy, text=text) == {"error": "config.json is not valid JSON"}


def test_missing_file_refused(mpy):
    assert load(mpy, None) == {"error": "config.json not found: provision the device first"}


@pytest.mark.parametrize("text", ["[]", "1", '"config"', "null"])
def test_top_level_not_an_object(mpy, text):
    assert load(mpy, text=text) == {"error": "top level must be an object"}


@pytest.mark.parametrize("spec", ["127.0.0.1:ntp", "pool.ntp.org:", "host:99999"])
def test_ntp_server_with_bad_port_refused(mpy, spec):
    r = load(mpy, with_change("ntp.servers", [spec]))
    assert r == {
        "error": "ntp.servers must be a non-empty list of 'host' or 'host:port' (port 1-65535)"
    }


def test_read_bytes(mpy):
    mpy.write("blob.bin", bytes(range(256)))
    r = mpy.one("""
        from tk import config
        from tkfakes import out, hx
        out(hx(config.read_bytes("blob.bin")))
    """)
    assert bytes.fromhex(r) == bytes(range(256))


def test_large_base_without_cap_is_accepted(mpy):
    doc = copy.deepcopy(VALID)
    doc["backoff"] = {"base_ms": 200000}
    r = load(mpy, doc)
    assert "ok" in r, r
    assert r["ok"]["backoff_base_ms"] == 200000
    assert r["ok"]["backoff_cap_ms"] >= 200000
