"""Device configuration, read from ``config.json`` on the device filesystem.

Everything that differs between devices or clouds lives here, never in code: thing name,
endpoint, port, certificate paths, NTP servers, backoff. The loader checks every field
and raises ConfigError naming the field, so a bad file gives one clear console line.

The only credentials it accepts are TLS certificate and key files (Appendix B): a user
name, password, token or other credential-like field anywhere in the file is refused
(the Wi-Fi network's own key excepted), by the same rule ``thingkit audit`` applies.
"""
import json
import os

CONFIG_FILE = "config.json"
SCHEMA = 1
# The MQTT section takes these keys and no others: anything else (a user name, a
# password, a token) would be a credential other than the TLS certificate.
_MQTT_KEYS = ("endpoint", "port", "keepalive_s", "topic_prefix")
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
# Field names that hold a credential other than the TLS certificate, compared in lower
# case without "_", "-" or spaces, at any depth. thingkit audit reads this tuple from
# this file (host_tools/audit/fleet.py): one rule on the device and on the host.
CREDENTIAL_FIELDS = (
    "user", "username", "userid", "login", "password", "passwd", "pass", "pwd",
    "passphrase", "token", "accesstoken", "sessiontoken", "authtoken", "idtoken",
    "refreshtoken", "jwt", "bearer", "authorization", "apikey", "secret", "secretkey",
    "clientsecret", "accesskey", "accesskeyid", "secretaccesskey", "awsaccesskeyid",
    "awssecretaccesskey", "credentials", "sastoken", "customauthorizer",
    "customauthorizername", "authorizername", "tokenkeyname", "tokensignature",
)
# Objects whose fields are not cloud credentials: the Wi-Fi network's own key.
NOT_CLOUD = ("wifi",)


class ConfigError(Exception):
    pass


def _get(d, path, kind, default=None):
    cur = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            if default is not None:
                return default
            raise ConfigError("missing field '%s'" % path)
        cur = cur[part]
    if not isinstance(cur, kind) or (kind is int and isinstance(cur, bool)):
        raise ConfigError("field '%s' must be %s" % (path, kind.__name__))
    return cur


def _int(d, path, lo, hi, default=None):
    v = _get(d, path, int, default)
    if v < lo or v > hi:
        raise ConfigError("field '%s' is %d; allowed %d..%d" % (path, v, lo, hi))
    return v


def _file(d, path):
    name = _get(d, path, str)
    try:
        if os.stat(name)[6] == 0:
            raise ConfigError("file '%s' (field '%s') is empty" % (name, path))
    except OSError:
        raise ConfigError("file '%s' (field '%s') not found" % (name, path))
    return name


def _ntp_ok(spec):
    if not isinstance(spec, str) or not spec or " " in spec:
        return False
    host, sep, port = spec.rpartition(":")
    if not sep:
        return True
    if not host or not port.isdigit():
        return False
    return 0 < int(port) < 65536


class Settings:
    """A checked configuration: attributes mirror config.json. No methods, so holding
    one keeps nothing of this module (tk.main drops it after boot)."""


def Config(doc):
    """Check ``doc`` (the parsed config.json); return its Settings or raise ConfigError."""
    self = Settings()
    _fill(self, doc)
    return self


def _credential(node, where):
    """The path of the first credential-like field in ``node``, else None."""
    if isinstance(node, list):
        for item in node:
            found = _credential(item, where)
            if found:
                return found
    elif isinstance(node, dict):
        for k, v in node.items():
            name = where + "." + k if where else k
            norm = str(k).lower().replace("_", "").replace("-", "").replace(" ", "")
            if norm in CREDENTIAL_FIELDS:
                return name
            if str(k).lower() not in NOT_CLOUD:
                found = _credential(v, name)
                if found:
                    return found
    return None


def _fill(self, doc):
    if not isinstance(doc, dict):
        raise ConfigError("top level must be an object")
    bad = _credential(doc, "")
    if bad:
        raise ConfigError("%s: a credential other than the TLS certificate; only "
                          "certificates are accepted (Appendix B)" % bad)
    if doc.get("schema") != SCHEMA:
        raise ConfigError("schema must be %d, found %r" % (SCHEMA, doc.get("schema")))
    self.thing_name = _get(doc, "thing_name", str)
    if not 0 < len(self.thing_name) <= 64 or any(c not in _NAME_CHARS for c in self.thing_name):
        raise ConfigError("thing_name must be 1-64 of A-Z a-z 0-9 _ -")
    mqtt = _get(doc, "mqtt", dict)
    for k in mqtt:
        if k not in _MQTT_KEYS:
            raise ConfigError("mqtt.%s: unknown field; only TLS certificates may be used "
                              "as credentials" % k)
    self.endpoint = _get(doc, "mqtt.endpoint", str)
    if not self.endpoint or "/" in self.endpoint or " " in self.endpoint:
        raise ConfigError("mqtt.endpoint must be a host name")
    self.port = _int(doc, "mqtt.port", 1, 65535)
    # AWS IoT accepts keepalive 30..1200 s.
    self.keepalive_s = _int(doc, "mqtt.keepalive_s", 30, 1200, 30)
    self.topic_prefix = _get(doc, "mqtt.topic_prefix", str, "thingkit")
    self.cert_file = _file(doc, "tls.cert")
    self.key_file = _file(doc, "tls.key")
    self.ca_file = _file(doc, "tls.ca")
    servers = _get(doc, "ntp.servers", list)
    if not servers or not all(_ntp_ok(s) for s in servers):
        raise ConfigError("ntp.servers must be a non-empty list of 'host' or 'host:port' "
                          "(port 1-65535)")
    self.ntp_servers = servers
    self.backoff_base_ms = _int(doc, "backoff.base_ms", 1, 600000, 1000)
    self.backoff_cap_ms = _int(doc, "backoff.cap_ms", self.backoff_base_ms, 3600000,
                               max(120000, self.backoff_base_ms))
    self.backoff_reset_s = _int(doc, "backoff.reset_after_s", 1, 86400, 30)
    # Test-rig switch (reconnect storm comparison): honoured on the virtual kit alone.
    self.backoff_jitter = _get(doc, "backoff.jitter", bool, True)
    # Telemetry records kept while offline (tk.outbox; about 300 B of flash each).
    self.outbox_max_records = _int(doc, "outbox.max_records", 16, 10000, 512)
    self.log_level = _get(doc, "log_level", str, "info")
    self.telemetry_interval_s = _int(doc, "app2.interval_s", 1, 3600, 10)
    self.diag_interval_s = _int(doc, "diag.interval_s", 10, 86400, 60)
    self.docs_url = _get(doc, "docs_url", str, "")
    # OTA: the code-signing public key (no file: updates off, tk.ota says so) and
    # how long a new version has to confirm itself before it is rolled back.
    self.ota_pubkey = _get(doc, "ota.pubkey", str, "certs/ota-signing.der")
    self.ota_confirm_s = _int(doc, "ota.confirm_s", 10, 3600, 300)
    # Last resort (no cloud session for this long: reboot, the outbox kept on flash); 0 off.
    self.offline_reboot_s = _get(doc, "offline.reboot_after_s", int, 900)
    if self.offline_reboot_s and not 10 <= self.offline_reboot_s <= 86400:
        raise ConfigError("field 'offline.reboot_after_s' is %d; allowed 0 (never) or "
                          "10..86400" % self.offline_reboot_s)
    # The hardware watchdog's time-out (tk.watchdog): longer than any legitimate block.
    self.watchdog_s = _int(doc, "watchdog.timeout_s", 10, 600, 60)
    self.wifi = doc.get("wifi")
    # Fleet provisioning by claim (tk.claim): tls.* are then the batch's claim identity.
    self.claim = doc.get("claim")
    if self.claim is not None and not isinstance(self.claim, dict):
        raise ConfigError("field 'claim' must be dict")
    if self.claim and not all(isinstance(self.claim.get(k), str) and self.claim.get(k)
                              for k in ("template", "serial")):
        raise ConfigError("claim needs 'template' and 'serial' (strings)")
    self.identity = None  # tk.claim.select: "claim", "trial", "own" on a claim kit


def load(path=CONFIG_FILE):
    """Read and check the config file; raise ConfigError with a clear reason."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("%s not found: provision the device first" % path)
    try:
        doc = json.loads(text)
    except ValueError:
        raise ConfigError("%s is not valid JSON" % path)
    return Config(doc)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def wait_load(log):
    """load(), or, while the file is missing or bad, say why on the console every 10 s
    (never a crash loop: a person fixes it over the console without a reboot)."""
    import time
    while True:
        try:
            return load()
        except ConfigError as e:
            log.error("config: %s; idle until config.json is fixed", e)
            log.error("help: %s", _docs_url())
        for _ in range(10):
            time.sleep(1)


def _docs_url():
    """The documentation link from config.json, if it can be read at all."""
    try:
        with open(CONFIG_FILE) as f:
            url = json.load(f).get("docs_url")
        return url if isinstance(url, str) and url else "see the kit's documentation"
    except Exception:
        return "see the kit's documentation"
