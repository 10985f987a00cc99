"""Certificate rotation over the air, device side: a new key and CSR made on the kit.

The operator asks through the shadow (``desired.identity.rotate = <request id>``,
``thingkit rotate THING``); tk.device hands the request here, from its main loop. Over
the running session, with the kit's current identity:

1. make the next generation's key (``certs/id<gen>.key.der``; never sent or printed)
   and a CSR with CN = thing name;
2. publish ``{"rid", "certificateSigningRequest", "currentCertificatePem"}`` on
   ``<prefix>/<thing>/identity/csr`` (a topic of the thing's own policy) and wait for
   ``.../accepted`` (``certificatePem``) or ``.../rejected``. On AWS this is a topic
   rule calling ``CreateCertificateFromCsr``; thingkit's local stand-in serves it;
3. check that the certificate holds this key's public key; write it;
4. commit (tk.claim's ``certs/identity.json``: state "trial", the new files, the
   previous ones kept as ``prev``), report, reboot. The first session on the new
   certificate proves it (tk.claim.proven); three failed sessions in a row put the
   previous identity back (tk.claim.session_failed). The operator revokes the old
   certificate only after the kit has come back on the new one.

A request already done (same id) is ignored; a failure is reported in
``reported.identity_rotation`` and the kit goes on with its current identity.

    from tk import rotate
    rotate.run(hal, cfg, session.client, session.shadow, {"rotate": "r1"})
"""
import gc
import time

from tk import claim, watchdog
from tk.log import Logger

_log = Logger("rotate")


def run(hal, cfg, client, shadow, req):
    rid = req.get("rotate") if isinstance(req, dict) else None
    st = claim.load()
    if not isinstance(rid, str) or not rid or st.get("rid") == rid:
        return
    from tk import fleet_prov, identity

    gen = st.get("gen", 0) + 1
    topic = ("%s/%s/identity/csr" % (cfg.topic_prefix, cfg.thing_name)).encode()
    key_path, crt_path = "certs/id%d.key.der" % gen, "certs/id%d.crt.der" % gen
    try:
        t0 = time.ticks_ms()
        key = identity.make_key(key_path, replace=True)  # a cut rotation's leftover goes
        watchdog.feed()
        csr = identity.pem(identity.csr(key, cfg.thing_name), "CERTIFICATE REQUEST")
        _log.info("rotation %s: key and CSR made on the kit in %d ms", rid,
                  time.ticks_diff(time.ticks_ms(), t0))
        with open(cfg.cert_file, "rb") as f:
            current = identity.pem(f.read(), "CERTIFICATE")
        gc.collect()
        reply = fleet_prov._request(client, topic, {
            "rid": rid, "certificateSigningRequest": csr, "currentCertificatePem": current})
        csr = current = None
        pem = reply.get("certificatePem")
        if not isinstance(pem, str) or reply.get("rid") != rid:
            raise fleet_prov.ProvisioningError("malformed reply: certificatePem or rid")
        der = fleet_prov.pem_der(pem)
        if identity.public_spki(key) not in der:
            raise fleet_prov.ProvisioningError("the certificate received is not for this "
                                               "kit's key")
        key = None
        identity._write_atomic(crt_path, der)
    except Exception as e:  # noqa: the kit keeps its current identity
        why = str(e) if isinstance(e, fleet_prov.ProvisioningError) else repr(e)
        _log.error("rotation %s: %s; keeping the current certificate", rid, why)
        st["rid"] = rid  # answered: not tried again on every delta
        st["why"] = "rotation %s: %s" % (rid, why)
        claim.save(st)
        shadow.report({"identity_rotation": {"rid": rid, "error": why}})
        return
    finally:
        for suffix in (b"/accepted", b"/rejected"):
            client.on(topic + suffix, None)
    st.update(state="trial", gen=gen, cert=crt_path, key=key_path, rid=rid, via="rotation",
              prev={"cert": cfg.cert_file, "key": cfg.key_file})
    st.pop("fails", None)
    st.pop("why", None)
    claim.save(st)  # the commit point: the next boot uses the new certificate
    _log.info("rotation %s: new certificate (generation %d) stored; rebooting onto it",
              rid, gen)
    try:
        shadow.report({"identity_rotation": {"rid": rid, "state": "switching", "gen": gen}})
        client.disconnect()
    except Exception:  # noqa: the commit is done; the report is a courtesy
        pass
    hal.reboot()
