"""Fleet provisioning by claim, device side: AWS IoT's device provisioning MQTT API.

Run by tk.device when this boot uses the claim identity (tk.claim). Over a session
authenticated by the claim certificate:

1. make an EC P-256 key on the kit (tk.identity; never sent, never printed) and a CSR
   with CN = thing name;
2. ``$aws/certificates/create-from-csr/json`` -> ``.../accepted``: the certificate and
   its ownership token. The certificate must hold this key's public key, else it is
   refused (a reply for another kit, or a wrong one);
3. ``$aws/provisioning-templates/<template>/provision/json`` with the token and
   ``{"SerialNumber": serial}`` -> ``.../accepted``: ``thingName`` must be ours;
4. commit: ``certs/identity.json`` says "trial" with the new files, and the kit
   reboots onto its own identity (tk.claim proves it on the first session).

Power cuts: the key, then the certificate with its token (``certs/claim_pending.json``)
are on flash before the next step, so a restart resumes where it stopped (RegisterThing
again with the same token is answered the same). Nothing before step 4 changes what the
kit boots with. A failure (time-out, rejected, malformed reply, certificate not for this
key) is said on the console and kept for the shadow (tk.claim.note); the kit waits a
backoff delay and tries again, on the claim identity.

    from tk import fleet_prov
    fleet_prov.run(hal, cfg, tls_context, backoff)   # returns only by rebooting
"""
import gc
import json
import os
import time

from tk import claim, watchdog
from tk.log import Logger
from tk.mqtt import Client

_log = Logger("claim")
_PENDING = "certs/claim_pending.json"
_CSR = b"$aws/certificates/create-from-csr/json"
_WAIT_MS = 20000  # per request


class ProvisioningError(Exception):
    pass


def _load(path):
    try:
        with open(path) as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(path, doc):
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
    os.rename(path + ".tmp", path)


def pem_der(text):
    """DER bytes of the first PEM block in ``text``; ProvisioningError if there is none."""
    from binascii import a2b_base64
    i = text.find("-----BEGIN ")
    j = text.find("-----END ", i + 1)
    if i < 0 or j < 0:
        raise ProvisioningError("certificatePem is not PEM")
    body = text[text.find("\n", i) + 1:j]
    try:
        return a2b_base64(body.replace("\n", "").replace("\r", ""))
    except ValueError:
        raise ProvisioningError("certificatePem is not base64")


def _request(c, topic, doc, timeout_ms=_WAIT_MS):
    """Publish ``doc`` on ``topic`` and wait for ``accepted`` (returns its document) or
    ``rejected`` (raises with AWS's statusCode, errorCode and errorMessage)."""
    got = []
    acc, rej = topic + b"/accepted", topic + b"/rejected"
    c.on(acc, lambda t, m: got.append((True, m)))
    c.on(rej, lambda t, m: got.append((False, m)))
    c.subscribe_many((acc, rej), 1)
    c.publish(topic, json.dumps(doc), qos=1)
    t0 = time.ticks_ms()
    while not got:
        watchdog.feed()
        left = timeout_ms - time.ticks_diff(time.ticks_ms(), t0)
        if left <= 0:
            raise ProvisioningError("no reply on %s within %d s" % (topic.decode(),
                                                                   timeout_ms // 1000))
        c.poll(min(left, 1000))
    ok, msg = got[0]
    try:
        reply = json.loads(msg)
    except (TypeError, ValueError):
        raise ProvisioningError("malformed reply on %s" % (acc if ok else rej).decode())
    if not isinstance(reply, dict):
        raise ProvisioningError("malformed reply on %s" % (acc if ok else rej).decode())
    if not ok:
        raise ProvisioningError("rejected: %s %s: %s" % (
            reply.get("statusCode"), reply.get("errorCode"), reply.get("errorMessage")))
    return reply


def _next_gen():
    return claim.load().get("gen", 0) + 1


def attempt(hal, cfg, tls):
    """One provisioning attempt; returns the committed identity state, or raises."""
    pend = _load(_PENDING)
    if pend.get("gen", 0) < _next_gen():  # left over from a generation already committed
        pend = {}
    gen = pend.get("gen") or _next_gen()
    key_path, crt_path = "certs/id%d.key.der" % gen, "certs/id%d.crt.der" % gen
    params = {"server_hostname": cfg.endpoint}
    if tls is not None:
        params["context"] = tls
    else:
        params["cert"] = _read(cfg.cert_file)
        params["key"] = _read(cfg.key_file)
        params["cadata"] = _read(cfg.ca_file)
    c = Client(cfg.thing_name, cfg.endpoint, cfg.port, cfg.keepalive_s, params)
    try:
        token = pend.get("token")
        if not (token and claim._exists(crt_path) and claim._exists(key_path)):
            token = _certificate(c, cfg, gen, key_path, crt_path)
        else:
            _log.info("resuming with the certificate of generation %d", gen)
            c.connect()
        watchdog.feed()
        topic = ("$aws/provisioning-templates/%s/provision/json" % cfg.claim["template"]).encode()
        try:
            reply = _request(c, topic, {"certificateOwnershipToken": token,
                                        "parameters": {"SerialNumber": cfg.claim["serial"]}})
        except ProvisioningError as e:
            if "InvalidToken" in str(e):  # expired (1 h): a new certificate next time
                _save(_PENDING, {"gen": gen})
            raise
        if reply.get("thingName") != cfg.thing_name:
            raise ProvisioningError("RegisterThing named thing %r, this kit is %r" % (
                reply.get("thingName"), cfg.thing_name))
        try:
            c.disconnect()
        except OSError:
            pass
    finally:
        c.close()
    st = claim.load()
    st.update(state="trial", gen=gen, cert=crt_path, key=key_path)
    st.pop("fails", None)
    claim.save(st)  # the commit point: the next boot uses the new identity
    try:
        os.remove(_PENDING)
    except OSError:
        pass
    return st


def _certificate(c, cfg, gen, key_path, crt_path):
    """Key (made once per generation, kept across restarts), CSR, CreateCertificateFromCsr;
    the certificate and token are written before RegisterThing. Returns the token."""
    from tk import identity  # here: loaded only by a kit that provisions (its own rule)

    t0 = time.ticks_ms()
    if claim._exists(key_path):
        key = identity.load_key(key_path)
    else:
        _save(_PENDING, {"gen": gen})  # this generation's files are ours to overwrite
        key = identity.make_key(key_path)
    watchdog.feed()
    csr = identity.pem(identity.csr(key, cfg.thing_name), "CERTIFICATE REQUEST")
    _log.info("key and CSR made on the kit in %d ms",
              time.ticks_diff(time.ticks_ms(), t0))
    watchdog.feed()
    gc.collect()
    c.connect()
    reply = _request(c, _CSR, {"certificateSigningRequest": csr})
    csr = None
    pem, token = reply.get("certificatePem"), reply.get("certificateOwnershipToken")
    if not isinstance(pem, str) or not isinstance(token, str):
        raise ProvisioningError("malformed reply: certificatePem or token missing")
    der = pem_der(pem)
    if identity.public_spki(key) not in der:
        raise ProvisioningError("the certificate received is not for this kit's key")
    key = None
    identity._write_atomic(crt_path, der)
    _save(_PENDING, {"gen": gen, "token": token})
    _log.info("certificate %s... received", reply.get("certificateId", "?")[:12])
    return token


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def run(hal, cfg, tls, backoff):
    """Provision until it works, then reboot onto the new identity."""
    _log.info("provisioning %s (serial %s, template %s)", cfg.thing_name,
              cfg.claim["serial"], cfg.claim["template"])
    while True:
        watchdog.feed()
        try:
            attempt(hal, cfg, tls)
            _log.info("provisioned as %s; rebooting onto its own certificate",
                      cfg.thing_name)
            hal.reboot()
            return
        except Exception as e:  # noqa: any failure keeps the claim identity and retries
            why = str(e) if isinstance(e, ProvisioningError) else repr(e)
            _log.error("%s; keeping the claim identity", why)
            try:
                claim.note(why)
            except OSError:
                pass
        gc.collect()
        delay, _w = backoff.next()
        _log.info("next try in %d ms", delay)
        end = time.ticks_add(time.ticks_ms(), delay)
        while time.ticks_diff(end, time.ticks_ms()) > 0:
            watchdog.feed()
            time.sleep_ms(min(1000, max(1, time.ticks_diff(end, time.ticks_ms()))))
