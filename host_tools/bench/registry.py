"""Fleet operations on the local bench: bulk registration, CRL, revocation, reuse report.

Bench registration belongs to the bench: these use :mod:`provisioning` (the CA and its
revocation list), never the reverse. They work on a :class:`~host_tools.bench.bench.Bench`
through its files and public methods only:

- :func:`register_things` writes ``things.json`` and the ACL once for any number of things
  and asks mosquitto to re-read the ACL (SIGHUP), where ``Bench.register`` does one thing
  per reload;
- :func:`publish_crl` writes ``pki/fleet.crl.pem`` (one CRL per intermediate of the bench's
  fleet CA, plus an empty one for the bench's own server CA, whose clients the broker also
  checks once a CRL file is configured), re-renders ``mosquitto.conf`` and restarts the
  broker. A restart, not SIGHUP: mosquitto 2.0 builds its TLS context when a listener
  opens, and a revoked certificate was still accepted after SIGHUP (measured with 2.0.11);
  the restart also drops the revoked device's open connection. Other devices reconnect
  (their sessions persist);
- :func:`revoke_on_bench` records a revocation and publishes the CRL: the revoked kit is
  refused at its next TLS handshake;
- :func:`reuse_report` reads the broker log for one certificate identity used by two live
  connections at once (``hw.unique_cert``).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from host_tools.bench import acl, broker
from host_tools.bench.bench import Bench
from provisioning.ca import CertificateAuthority
from provisioning.revocation import RevocationList, Revoked, build_crls

CRL_FILE = "fleet.crl.pem"


def crl_path(bench: Bench) -> Path:
    return bench.layout.pki / CRL_FILE


def register_things(bench: Bench, things: dict[str, str], reload: bool = True) -> int:
    """Register many things at once (thing -> certificate fingerprint).

    Returns:
        How many entries were added or changed (0: nothing to do, no reload).
    """
    reg = bench.things()
    changed = 0
    now = int(time.time())
    for thing, fp in things.items():
        if reg.get(thing, {}).get("fingerprint") != fp:
            reg[thing] = {"fingerprint": fp, "registered": now}
            changed += 1
    if changed:
        _write_registry(bench, reg, reload)
    return changed


def unregister_things(bench: Bench, things: list[str], reload: bool = True) -> int:
    """Remove things from the bench registry and ACL; returns how many were there."""
    reg = bench.things()
    gone = [t for t in things if reg.pop(t, None) is not None]
    if gone:
        _write_registry(bench, reg, reload)
    return len(gone)


def _write_registry(bench: Bench, reg: dict, reload: bool) -> None:
    lay = bench.layout
    lay.root.mkdir(parents=True, exist_ok=True)
    tmp = lay.registry.with_suffix(".tmp")
    tmp.write_text(json.dumps({"things": reg}, indent=1))
    os.replace(tmp, lay.registry)
    tmp = lay.acl.with_suffix(".tmp")
    tmp.write_text(acl.render(reg, bench.topic_prefix))
    os.replace(tmp, lay.acl)
    if reload:
        bench.apply_config()  # SIGHUP if the ACL changed; nothing if it did not


def publish_crl(bench: Bench, restart: bool = True) -> Path:
    """Write the bench's CRL file and make the broker use it (restart if it is up)."""
    fleet = bench.fleet_ca()
    server = CertificateAuthority.load(bench.layout.server_ca)
    data = build_crls(fleet, RevocationList(fleet.directory)) + build_crls(server)
    path = crl_path(bench)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    if bench.is_up():
        bench.layout.mosquitto_conf.write_text(broker.render_conf(bench.layout, bench.port))
        if restart:
            bench.apply_config()  # a restart only if the revocations changed
    return path


def revoke_on_bench(
    bench: Bench, cert: x509.Certificate, thing: str = "", reason: str = "unspecified"
) -> tuple[Revoked, bool]:
    """Revoke a device certificate issued by the bench's fleet CA; publish the CRL.

    Returns:
        The revocation entry and whether it is new (False: already revoked; the CRL is
        published again all the same).

    Raises:
        CAError: the certificate was not issued by the bench's fleet CA.
    """
    from provisioning.ca import CAError

    fleet = bench.fleet_ca()
    if fleet.issuer_of(cert) is None:
        raise CAError(
            f"certificate {cert.subject.rfc4514_string()} was not issued by the bench's fleet "
            f"CA ({fleet.directory}); the bench can only revoke what it trusts"
        )
    entry, new = RevocationList(fleet.directory).revoke(cert, thing, reason)
    publish_crl(bench)
    return entry, new


# -- reuse detection ---------------------------------------------------------------------
_TS = r"^(?P<ts>\S+): "
_CONNECTED = re.compile(
    _TS + r"New client connected from (?P<addr>\S+) as (?P<cid>\S+) \(.*u'(?P<user>[^']*)'\)\.?$"
)
_GONE = re.compile(
    _TS + r"(?:Client (?P<a>\S+) (?:disconnected|closed its connection|has exceeded timeout)"
    r"|Socket error on client (?P<b>\S+), disconnecting)"
)
_TAKEOVER = re.compile(_TS + r"Client (?P<cid>\S+) already connected, closing old connection")


@dataclass
class Reuse:
    """One certificate identity (CN) seen on more than one live connection."""

    identity: str
    connections: list[dict] = field(default_factory=list)
    takeovers: int = 0

    def line(self) -> str:
        who = ", ".join(
            f"{c['client_id']} from {c['addr']} at {c['since']}" for c in self.connections
        )
        extra = f"; {self.takeovers} client id takeovers" if self.takeovers else ""
        return (
            f"certificate CN={self.identity} is presented by {len(self.connections)} live "
            f"connections ({who}){extra}"
        )


def reuse_report(bench: Bench, log_text: str | None = None, min_takeovers: int = 3) -> list[Reuse]:
    """Certificate identities with two or more live connections, from the broker log.

    The broker's identity of a connection is its certificate's CN
    (``use_identity_as_username``), and thingkit issues one certificate per thing, so a
    CN on two live connections is one certificate on two devices (``hw.unique_cert``).
    Two devices that also share the client id knock each other off in turn (AWS:
    DUPLICATE_CLIENTID); ``min_takeovers`` such takeovers of one client id count too.
    Bench identities (``bench.*``) are ignored.
    """
    text = bench.broker_log() if log_text is None else log_text
    live: dict[str, dict] = {}  # client id -> connection
    takeovers: dict[str, int] = {}
    for line in text.splitlines():
        m = _CONNECTED.match(line)
        if m:
            live[m["cid"]] = {
                "client_id": m["cid"],
                "identity": m["user"],
                "addr": m["addr"],
                "since": m["ts"],
            }
            continue
        m = _TAKEOVER.match(line)
        if m:
            takeovers[m["cid"]] = takeovers.get(m["cid"], 0) + 1
            live.pop(m["cid"], None)
            continue
        m = _GONE.match(line)
        if m:
            live.pop(m["a"] or m["b"], None)
        elif " terminating" in line and "mosquitto version" in line:
            live.clear()
    by_id: dict[str, Reuse] = {}
    for c in live.values():
        if c["identity"].startswith("bench."):
            continue
        by_id.setdefault(c["identity"], Reuse(c["identity"])).connections.append(c)
    out = [r for r in by_id.values() if len(r.connections) > 1]
    for cid, n in takeovers.items():
        if n >= min_takeovers and not cid.startswith(("bench.", "operator-")):
            r = next((r for r in out if any(c["client_id"] == cid for c in r.connections)), None)
            if r is None:
                ident = next((c["identity"] for c in live.values() if c["client_id"] == cid), cid)
                r = Reuse(ident, [c for c in live.values() if c["client_id"] == cid])
                out.append(r)
            r.takeovers += n
    return sorted(out, key=lambda r: r.identity)
