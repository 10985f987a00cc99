"""The device's life: clock, connect with backoff, shadow sync, App #1, App #2, serve.

    device.run(hal, cfg)   # never returns

Every failure of a session (TLS, CONNACK, time-out, lost link) ends in the same place:
close the socket, wait a full-jitter backoff delay, try again. The backoff resets once a
connection has stayed up for ``backoff.reset_after_s``.
"""
import gc
import os
import time

from tk import board as boardfile
from tk import clock, config, log, settings, timesync
from tk.app1 import App1, last_will
from tk.app2 import App2
from tk.backoff import Backoff
from tk.diag import Diag
from tk.log import Logger
from tk.mqtt import Client
from tk.shadow import Shadow, ShadowRejected, ShadowTooLarge
from tk.topics import Topics
from tk.version import VERSION

_log = Logger("device")


class Session:
    """One MQTT connection and everything that runs over it.

    ``app2`` and ``diag`` outlive sessions (sequence numbers, drivers, heap minimum);
    each session points them at its client.
    """

    def __init__(self, hal, cfg, boot_info, app2, diag):
        self.hal = hal
        self.cfg = cfg
        self.boot_info = boot_info
        self.topics = Topics(cfg.topic_prefix, cfg.thing_name)
        params = {
            "cert": config.read_bytes(cfg.cert_file),
            "key": config.read_bytes(cfg.key_file),
            "cadata": config.read_bytes(cfg.ca_file),
            "server_hostname": cfg.endpoint,
        }
        self.client = Client(cfg.thing_name, cfg.endpoint, cfg.port, cfg.keepalive_s, params)
        self.client.set_last_will(self.topics.status, last_will(cfg.thing_name, VERSION),
                                  True, 1)
        self.shadow = Shadow(self.client, cfg.thing_name)
        self.shadow.on_delta = self._on_delta
        # App #2 values and diagnostics go to named shadows the device only writes: the
        # classic shadow (read on every connect) stays small, so does the RAM to parse it.
        self.app2_shadow = Shadow(self.client, cfg.thing_name, "app2")
        self.diag_shadow = Shadow(self.client, cfg.thing_name, "diag")
        self.app1 = App1(self.client, cfg.thing_name, self.topics, VERSION)
        self.app2 = app2
        self.diag = diag
        for part in (app2, diag):
            if part is not None:
                part.client = self.client
        self._pending_delta = None

    def open(self):
        cfg = self.cfg
        _log.info("connecting to %s:%d as %s", cfg.endpoint, cfg.port, cfg.thing_name)
        t0 = time.ticks_ms()
        self.client.connect()
        _log.info("mqtt connected (tls+connack %d ms)", time.ticks_diff(time.ticks_ms(), t0))
        # Every subscription in one SUBSCRIBE: one round trip to the cloud.
        self.client.subscribe_many(self.shadow.topics() + self.app1.subscriptions(), 1)
        self.sync_shadow()
        self.app1.start(self.boot_info)

    def sync_shadow(self):
        """Shadow sync on connect (IoT Lens BP 11.1): get, apply delta, report online.

        A shadow too large for this device, or a report the service refuses (413, 400),
        is logged and the session goes on: reconnecting would only meet it again.
        """
        try:
            doc = self.shadow.get()
        except ShadowTooLarge as e:
            _log.error("shadow sync: %s; desired state not applied", e)
            doc = None
        version = doc["version"] if doc else None
        delta = doc.get("state", {}).get("delta") if doc else None
        reported = self._apply_settings(delta)
        reported["connected"] = True
        reported["fw"] = VERSION
        reported["board"] = self.hal.NAME
        reported["boot"] = self.boot_info
        try:
            acc = self.shadow.update(reported=reported, version=version)
        except (ShadowRejected, ShadowTooLarge) as e:
            if isinstance(e, ShadowRejected) and e.code not in (400, 413):
                raise
            _log.error("shadow sync: report refused (%r); going on without it", e)
            return
        _log.info("shadow synced: connected=true (version %s)", acc.get("version"))

    def _apply_settings(self, delta):
        """Apply desired settings (if any); return the reported part that answers them."""
        rep = {}
        if delta and "settings" in delta:
            cur, rejected = settings.apply(delta["settings"])
            for k, why in rejected.items():
                if why:
                    _log.warn("setting %s refused: %s", k, why)
            rep["settings_rejected"] = rejected
        rep["settings"] = settings.current()
        self._push_settings()
        return rep

    def _push_settings(self):
        if self.app2 is not None:
            if self.app2.interval_ms != int(settings.value("telemetry_interval_s") * 1000):
                self.app2.set_interval(settings.value("telemetry_interval_s"))
            self.app2.set_enabled(settings.enabled_components())
        if self.diag is not None:
            if self.diag.interval_ms != int(settings.value("diag_interval_s") * 1000):
                self.diag.set_interval(settings.value("diag_interval_s"))

    def _on_delta(self, state, version):
        # Handled from the main loop, not inside the MQTT callback.
        self._pending_delta = state

    def serve(self):
        """Run until the connection fails (raises)."""
        c = self.client
        ka_ms = self.cfg.keepalive_s * 1000
        while True:
            wait = 1000
            if self.app2 is not None:
                wait = min(wait, self.app2.ms_to_due())
            c.poll(wait)
            self.app1.service()
            if self._pending_delta is not None:
                delta, self._pending_delta = self._pending_delta, None
                if "settings" in delta:
                    self.shadow.report(self._apply_settings(delta))
            if self.app2 is not None:
                r = self.app2.tick()
                if r is not None:
                    self.app2_shadow.report(self.app2.shadow_report(*r))
            if self.diag is not None:
                self.diag.sample()
                d = self.diag.tick()
                if d is not None:
                    self.diag_shadow.report(d)
            now = time.ticks_ms()
            if c.ping_outstanding:
                if time.ticks_diff(now, c.ping_at) > ka_ms // 2:
                    raise OSError("no PINGRESP within %d ms" % (ka_ms // 2))
            elif time.ticks_diff(now, c.last_tx) > ka_ms // 2:
                c.ping()

    def close(self):
        self.client.close()


def _parts(hal, cfg, boot_id):
    """App #2 (if the board has components) and diagnostics, made once per boot."""
    topics = Topics(cfg.topic_prefix, cfg.thing_name)
    try:
        b = boardfile.load()
        comps, buses = boardfile.components(b), b.get("buses", {})
    except boardfile.BoardError as e:
        _log.warn("App #2 off: %s", e)
        comps, buses = [], {}
    settings.configure([c["id"] for c in comps], cfg.telemetry_interval_s, cfg.diag_interval_s)
    app2 = App2(None, cfg.thing_name, topics.telemetry, comps, hal, boot_id, buses) if comps else None
    if app2 is not None:
        app2.set_interval(cfg.telemetry_interval_s)
        _log.info("App #2: %d components every %d s", len(comps), cfg.telemetry_interval_s)
        app2.self_test()
    diag = Diag(None, cfg.thing_name, topics.diag, hal)
    diag.set_interval(cfg.diag_interval_s)
    return app2, diag


def run(hal, cfg):
    if not log.set_level(cfg.log_level):
        _log.warn("log_level %r unknown; keeping info", cfg.log_level)
    boot_id = "%08x" % int.from_bytes(os.urandom(4), "big")
    boot = {"id": boot_id, "reason": hal.reset_cause(), "uid": hal.unique_id(), "fw": VERSION}
    app2, diag = _parts(hal, cfg, boot_id)  # first: long-lived objects on a clean heap
    gc.collect()
    hal.network_up(cfg)
    how = timesync.sync(hal, cfg.ntp_servers, cfg.backoff_base_ms, min(cfg.backoff_cap_ms, 60000))
    boot["time_source"] = how
    boot["at"] = clock.unix_s()
    backoff = Backoff(cfg.backoff_base_ms, cfg.backoff_cap_ms)
    sessions = 0
    while True:
        session = None
        up_at = None
        try:
            session = Session(hal, cfg, boot, app2, diag)
            sessions += 1
            diag.reconnects = sessions - 1
            session.open()
            up_at = time.ticks_ms()
            session.serve()
        except Exception as e:
            _log.warn("session ended: %r", e)
        finally:
            if session is not None:
                session.close()
            session = None
            gc.collect()
        if up_at is not None and time.ticks_diff(time.ticks_ms(), up_at) >= cfg.backoff_reset_s * 1000:
            backoff.reset()
        delay, window = backoff.next()
        _log.info("reconnect in %d ms (attempt %d, window %d ms)", delay, backoff.attempt, window)
        time.sleep_ms(delay)
