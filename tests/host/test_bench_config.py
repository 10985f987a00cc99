"""Tests for the bench's broker configuration: ACL, mosquitto.conf, OpenSSL caps, and one
real mosquitto started from them (listeners, TLS versions, clean shutdown)."""

from __future__ import annotations

import configparser
import os
import socket
import ssl
import time
from pathlib import Path

import pytest

from host_tools.bench import acl, broker
from host_tools.bench.bench import Bench
from host_tools.bench.layout import OPERATOR_CN, SERVICES_CN, BenchLayout
from host_tools.bench.pki import BROKER_CN
from host_tools.validate.tls_probe import handshake
from provisioning.ca import CertificateAuthority, Usage

MOSQUITTO = Path("/usr/sbin/mosquitto")

# mosquitto options that belong to a listener. Placed before the first `listener` line
# they configure the default listener, which mosquitto then opens on port 1883.
PER_LISTENER = {
    "bind_address",
    "bind_interface",
    "cafile",
    "capath",
    "certfile",
    "ciphers",
    "ciphers_tls1.3",
    "crlfile",
    "dhparamfile",
    "http_dir",
    "keyfile",
    "max_connections",
    "max_qos",
    "mount_point",
    "port",
    "protocol",
    "psk_hint",
    "require_certificate",
    "socket_domain",
    "tls_engine",
    "tls_keyform",
    "tls_version",
    "use_identity_as_username",
    "use_subject_as_username",
    "use_username_as_clientid",
    "websockets_log_level",
}


# -- ACL -----------------------------------------------------------------------------
def _acl_blocks(text: str) -> dict[str, list[str]]:
    """user -> its `topic ...` lines, from a rendered ACL file."""
    blocks: dict[str, list[str]] = {}
    user = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("user "):
            user = line.split(" ", 1)[1]
            assert user not in blocks, f"user {user} appears twice"
            blocks[user] = []
        else:
            assert user is not None, f"rule before any user line: {line!r}"
            blocks[user].append(line)
    return blocks


THINGS = ["kit-1", "kit-10", "kit-2", "Kit_B"]


def test_acl_users_are_exactly_services_operator_and_things() -> None:
    blocks = _acl_blocks(acl.render(THINGS))
    assert list(blocks) == [SERVICES_CN, OPERATOR_CN, "Kit_B", "kit-1", "kit-10", "kit-2"]


def test_acl_service_identities_read_all() -> None:
    blocks = _acl_blocks(acl.render(THINGS))
    for cn in (SERVICES_CN, OPERATOR_CN):
        assert blocks[cn] == [
            "topic readwrite #",
            "topic readwrite $aws/#",
            "topic readwrite $SYS/#",
        ]


@pytest.mark.parametrize("thing", THINGS)
def test_acl_thing_gets_only_its_own_topics(thing: str) -> None:
    blocks = _acl_blocks(acl.render(THINGS))
    rules = blocks[thing]
    assert rules == acl.thing_rules(thing)
    others = set(THINGS) - {thing}
    for rule in rules:
        kind, access, topic = rule.split(" ")
        assert kind == "topic" and access in ("read", "write", "readwrite"), rule
        levels = topic.split("/")
        assert topic != "#" and levels[0] not in ("#", "+"), rule
        # Own subtree only: thingkit/<thing>/... or $aws/things/<thing>/...
        assert levels[:2] == ["thingkit", thing] or levels[:3] == ["$aws", "things", thing], rule
        assert not others & set(levels), rule
        assert "$SYS" not in levels


def test_acl_no_thing_line_mentions_another_thing() -> None:
    text = acl.render(THINGS)
    blocks = _acl_blocks(text)
    for thing in THINGS:
        for rule in blocks[thing]:
            topic_levels = set(rule.split(" ")[2].split("/"))
            assert topic_levels & set(THINGS) == {thing}, rule


def test_acl_empty_fleet_and_order_independence() -> None:
    assert list(_acl_blocks(acl.render([]))) == [SERVICES_CN, OPERATOR_CN]
    assert acl.render(["b", "a"]) == acl.render(["a", "b"])
    assert acl.render({"kit-1": {}}) == acl.render(["kit-1"])


def test_thing_rules_exact() -> None:
    rules = acl.thing_rules("kit-1", topic_prefix="acme")
    assert rules[0] == "topic readwrite acme/kit-1/#"
    s = "$aws/things/kit-1/shadow"
    j = "$aws/things/kit-1/jobs"
    st = "$aws/things/kit-1/streams"
    assert set(rules[1:]) == {
        f"topic write {s}/get",
        f"topic write {s}/update",
        f"topic write {s}/delete",
        f"topic read {s}/get/#",
        f"topic read {s}/update/#",
        f"topic read {s}/delete/#",
        f"topic write {s}/name/+/get",
        f"topic write {s}/name/+/update",
        f"topic write {s}/name/+/delete",
        f"topic read {s}/name/+/get/#",
        f"topic read {s}/name/+/update/#",
        f"topic read {s}/name/+/delete/#",
        f"topic read {j}/notify",
        f"topic read {j}/notify-next",
        f"topic write {j}/get",
        f"topic read {j}/get/#",
        f"topic write {j}/start-next",
        f"topic read {j}/start-next/#",
        f"topic write {j}/+/get",
        f"topic read {j}/+/get/#",
        f"topic write {j}/+/update",
        f"topic read {j}/+/update/#",
        f"topic write {st}/+/get/json",
        f"topic write {st}/+/describe/json",
        f"topic read {st}/+/data/json",
        f"topic read {st}/+/description/json",
        f"topic read {st}/+/rejected/json",
    }
    assert len(rules) == 28
    # A thing may not publish on its own shadow's reply topics (only the service does).
    assert not any(
        r.startswith(("topic write", "topic readwrite")) and "/accepted" in r for r in rules
    )
    assert not any(
        r.startswith(("topic write", "topic readwrite")) and r.endswith("/#") and "$aws" in r
        for r in rules
    )


def test_acl_custom_prefix_in_render() -> None:
    blocks = _acl_blocks(acl.render(["kit-1"], topic_prefix="acme"))
    assert blocks["kit-1"][0] == "topic readwrite acme/kit-1/#"
    assert not any("thingkit/" in r for r in blocks["kit-1"])


# -- mosquitto.conf -------------------------------------------------------------------
def _conf_lines(layout: BenchLayout, port: int) -> list[str]:
    return [
        ln for ln in broker.render_conf(layout, port).splitlines() if ln and not ln.startswith("#")
    ]


def test_render_conf_single_listener_on_loopback(tmp_path: Path) -> None:
    lines = _conf_lines(BenchLayout(tmp_path), 18884)
    listeners = [ln for ln in lines if ln.split()[0] == "listener"]
    assert listeners == ["listener 18884 127.0.0.1"]
    keys = [ln.split()[0] for ln in lines]
    assert "port" not in keys and "bind_address" not in keys and "bind_interface" not in keys


def test_render_conf_no_per_listener_option_before_listener(tmp_path: Path) -> None:
    lines = _conf_lines(BenchLayout(tmp_path), 18884)
    at = next(i for i, ln in enumerate(lines) if ln.startswith("listener "))
    before = {ln.split()[0] for ln in lines[:at]}
    assert before & PER_LISTENER == set()
    after = [ln.split()[0] for ln in lines[at + 1 :]]
    assert after == [
        "max_qos",
        "cafile",
        "certfile",
        "keyfile",
        "tls_version",
        "require_certificate",
        "use_identity_as_username",
    ]


def test_render_conf_values(tmp_path: Path) -> None:
    lay = BenchLayout(tmp_path)
    lines = _conf_lines(lay, 18884)
    keys = [ln.split(" ", 1)[0] for ln in lines if not ln.startswith("log_type")]
    assert len(keys) == len(set(keys)), "an option appears twice"
    opts = {
        ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in lines if not ln.startswith("log_type")
    }
    cert, key = lay.identity(BROKER_CN)
    assert opts["tls_version"] == "tlsv1.2"
    assert opts["require_certificate"] == "true"
    assert opts["use_identity_as_username"] == "true"
    assert opts["allow_anonymous"] == "false"
    assert opts["set_tcp_nodelay"] == "true"
    assert opts["per_listener_settings"] == "false"
    assert opts["max_qos"] == "1"
    assert opts["max_keepalive"] == "1200"
    assert opts["max_packet_size"] == str(128 * 1024 + 1024)
    assert opts["acl_file"] == str(lay.acl)
    assert opts["cafile"] == str(lay.client_cafile)
    assert (opts["certfile"], opts["keyfile"]) == (str(cert), str(key))
    assert opts["log_dest"] == f"file {lay.broker_log}"
    assert "crlfile" not in opts
    assert "password_file" not in opts and "psk_file" not in opts


def test_render_conf_crl_after_listener_when_present(tmp_path: Path) -> None:
    lay = BenchLayout(tmp_path)
    lay.pki.mkdir()
    (lay.pki / "fleet.crl.pem").write_text("crl")
    lines = _conf_lines(lay, 18884)
    at = lines.index("listener 18884 127.0.0.1")
    assert lines[at + 1 :][-1] == f"crlfile {lay.pki / 'fleet.crl.pem'}"


def test_openssl_cnf_caps_tls_at_1_2(tmp_path: Path) -> None:
    cp = configparser.ConfigParser()
    cp.optionxform = str  # keep key case
    cp.read_string("[default]\n" + broker.OPENSSL_CNF)
    conf_section = cp["default"]["openssl_conf"]
    ssl_section = cp[conf_section]["ssl_conf"]
    tls_section = cp[ssl_section]["system_default"]
    assert dict(cp[tls_section]) == {"MinProtocol": "TLSv1.2", "MaxProtocol": "TLSv1.2"}

    lay = BenchLayout(tmp_path)
    env = broker.write_openssl_cnf(lay)
    assert env == {"OPENSSL_CONF": str(tmp_path / "openssl-broker.cnf")}
    assert Path(env["OPENSSL_CONF"]).read_text() == broker.OPENSSL_CNF


# -- a real mosquitto -------------------------------------------------------------------
def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:[") : -1])
    return out


def _addr(hex_addr: str) -> tuple[str, int]:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        ip = socket.inet_ntop(
            socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        )
    return ip, int(port, 16)


def listening(pid: int) -> set[tuple[str, str, int]]:
    """(proto, ip, port) of every TCP listener and bound UDP socket of ``pid``."""
    inodes = _socket_inodes(pid)
    found = set()
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            f = row.split()
            local, state, inode = f[1], f[3], f[9]
            if inode not in inodes:
                continue
            if proto.startswith("tcp") and state != "0A":  # 0A = LISTEN
                continue
            ip, port = _addr(local)
            found.add((proto.rstrip("6"), ip, port))
    return found


def _procs_mentioning(text: str) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmd:
            pids.append(int(d))
    return pids


needs_mosquitto = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto not installed")
    b = Bench(tmp_path_factory.mktemp("bench") / "bench")
    try:
        b.up()
        yield b
    finally:
        b.down()


@needs_mosquitto
def test_broker_listens_only_on_chosen_port(bench: Bench) -> None:
    st = bench.state
    assert listening(st["broker_pid"]) == {("tcp", "127.0.0.1", st["broker_port"])}
    # The services process answers NTP on loopback only and listens on nothing else.
    assert listening(st["services_pid"]) == {("udp", "127.0.0.1", st["ntp_port"])}


@needs_mosquitto
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_broker_refuses_tls_1_3_and_1_1(bench: Bench) -> None:
    lay = bench.layout
    ident = lay.identity(OPERATOR_CN)
    mark = len(bench.broker_log())
    assert handshake(bench.port, lay.server_ca_pem, ssl.TLSVersion.TLSv1_3, ident) is None
    assert handshake(bench.port, lay.server_ca_pem, ssl.TLSVersion.TLSv1_1, ident) is None
    # Refused by the broker (both ClientHellos reached it), not by the local client.
    # mosquitto may log a moment after the client sees the refusal.
    deadline = time.monotonic() + 3
    while (
        bench.broker_log()[mark:].count("unsupported protocol") < 2 and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert bench.broker_log()[mark:].count("unsupported protocol") == 2


@needs_mosquitto
def test_broker_accepts_tls_1_2_operator(bench: Bench) -> None:
    lay = bench.layout
    got = handshake(
        bench.port, lay.server_ca_pem, ssl.TLSVersion.TLSv1_2, lay.identity(OPERATOR_CN)
    )
    assert got == "TLSv1.2"


@needs_mosquitto
def test_broker_requires_a_trusted_client_certificate(bench: Bench, tmp_path: Path) -> None:
    lay = bench.layout
    assert handshake(bench.port, lay.server_ca_pem, ssl.TLSVersion.TLSv1_2, None) is None
    rogue_ca = CertificateAuthority.create(tmp_path / "rogue", "rogue")
    pair = rogue_ca.issue(OPERATOR_CN, Usage.CLIENT)
    cert, key = tmp_path / "rogue.crt", tmp_path / "rogue.key"
    cert.write_bytes(pair.cert_pem + rogue_ca.issuing.cert_pem)
    key.write_bytes(pair.key_pem())
    assert handshake(bench.port, lay.server_ca_pem, ssl.TLSVersion.TLSv1_2, (cert, key)) is None


@needs_mosquitto
def test_bench_down_leaves_no_process(tmp_path: Path) -> None:
    b = Bench(tmp_path / "bench")
    try:
        st = b.up()
        pids = (st["broker_pid"], st["services_pid"])
        root = str(b.layout.root)
        assert sorted(_procs_mentioning(root)) == sorted(pids)
        assert b.is_up() is True
    finally:
        b.down()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} still exists after down()"
    assert _procs_mentioning(root) == []
    assert b.is_up() is False
    after = b.state
    assert "broker_pid" not in after and "services_pid" not in after
    assert after["broker_port"] == st["broker_port"]
    assert b.status()["up"] is False
    b.down()  # a second down is quiet
