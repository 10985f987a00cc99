"""Which identity this boot uses, for a kit that was born with a claim certificate.

A kit of a claim batch is flashed with the batch's claim certificate and key (config.json
``tls.cert``/``tls.key``) and a ``claim`` section (``{"template": ..., "serial": ...}``).
Its own identity, once fleet provisioning (tk.fleet_prov) has made one, is recorded in
``certs/identity.json``, written atomically; that file is the commit point:

    {"state": "trial" | "own" | "claim", "gen": 1,
     "cert": "certs/id1.crt.der", "key": "certs/id1.key.der", "why": "..."}

- no file, or state "claim": this boot runs on the claim identity and provisions;
- "trial": the new certificate is used; the first session that comes up (TLS, CONNACK,
  shadow sync) makes it "own" (proven). If ``_TRIAL_FAILS`` sessions in a row fail
  first, the kit goes back to the claim identity (state "claim", with why) and reboots:
  it is never left without an identity that works;
- "own": the kit's own identity, for good.

The claim files stay on flash (the kit can be provisioned again if the operator releases
its serial); the claim certificate can only reach the provisioning topics.

    from tk import claim
    claim.select(cfg)           # at boot, after config: sets cfg.identity
    claim.boot_info(cfg, info)  # what the shadow says (reported.boot.identity)
"""
import json
import os

from tk.log import Logger

STATE = "certs/identity.json"
_TRIAL_FAILS = 3
_log = Logger("claim")


def _exists(path):
    try:
        os.stat(path)
        return True
    except (OSError, TypeError):
        return False


def load():
    try:
        with open(STATE) as f:
            st = json.load(f)
        return st if isinstance(st, dict) else {}
    except (OSError, ValueError):
        return {}


def save(st):
    with open(STATE + ".tmp", "w") as f:
        json.dump(st, f)
    os.rename(STATE + ".tmp", STATE)  # atomic: the old or the new state survives


def select(cfg):
    """Point cfg at this boot's identity; cfg.identity is None (config.json's files and
    no identity.json), "claim" or "config" (config.json's files), "trial" or "own"."""
    cfg.identity = None
    st = load()
    if not cfg.claim and not st:
        return
    s = st.get("state")
    if s in ("trial", "own") and _exists(st.get("cert")) and _exists(st.get("key")):
        cfg.cert_file, cfg.key_file = st["cert"], st["key"]
        cfg.identity = s
    else:
        if s in ("trial", "own"):
            _log.error("identity: %s certificate files missing; back to config.json's", s)
        # config.json's tls files: the claim (a claim kit) or the provisioned identity
        cfg.identity = "claim" if cfg.claim else "config"
    _log.info("identity: %s (%s)", cfg.identity, cfg.cert_file)


def boot_info(cfg, info):
    """Add the identity's story to the boot info the shadow reports."""
    if cfg.identity is None:
        return
    st = load()
    d = {"state": cfg.identity, "via": st.get("via", "claim"), "gen": st.get("gen", 0)}
    try:  # which certificate this boot uses: the start of its SHA-256 (AWS's id form)
        import hashlib
        from binascii import hexlify
        with open(cfg.cert_file, "rb") as f:
            d["cert"] = hexlify(hashlib.sha256(f.read()).digest()[:8]).decode()
    except OSError:
        pass
    if st.get("why"):
        d["why"] = st["why"]  # the last thing that went wrong on the way
    info["identity"] = d


def note(why):
    """Record why the last provisioning step failed (for the console and the shadow)."""
    st = load()
    st["why"] = why
    save(st)


def proven(cfg, info):
    """A session came up on the trial identity: it is the kit's own from now on.
    True if that changed something (``info``, the boot info, says "own" then)."""
    if cfg.identity != "trial":
        return False
    st = load()
    st["state"] = "own"
    st.pop("fails", None)
    st.pop("prev", None)
    save(st)
    cfg.identity = "own"
    _log.info("identity: own certificate proven (%s)", st.get("cert"))
    for g in range(1, st.get("gen", 0)):  # earlier generations' files: never used again
        for suffix in (".key.der", ".crt.der"):
            try:
                os.remove("certs/id%d%s" % (g, suffix))
            except OSError:
                pass
    boot_info(cfg, info)
    return True


def session_failed(cfg, hal, why):
    """A session on the trial identity failed before coming up (``why``: the exception);
    after _TRIAL_FAILS in a row, go back to the previous identity (a rotation) or the
    claim identity, and reboot."""
    if cfg.identity != "trial":
        return
    why = repr(why)
    st = load()
    n = st.get("fails", 0) + 1
    st["fails"] = n
    if n >= _TRIAL_FAILS:
        st["why"] = "new certificate never connected (%d tries): %s" % (n, why)
        prev = st.pop("prev", None)
        if prev:  # a rotation: the certificate that worked before
            st.update(state="own", cert=prev["cert"], key=prev["key"])
            back = "previous certificate"
        else:
            st["state"] = "claim"
            back = "claim identity"
        st.pop("fails", None)
        save(st)
        _log.error("identity: %s; back to the %s", st["why"], back)
        hal.reboot()
    save(st)
