"""The device's life: clock, connect with backoff, shadow sync, App #1, serve.

    device.run(hal, cfg)   # never returns

Every failure of a session (TLS, CONNACK, time-out, lost link) ends in the same place:
close the socket, wait a full-jitter backoff delay, try again. The backoff resets once a
connection has stayed up for ``backoff.reset_after_s``.
"""
import gc
import time

from tk import clock, config, settings, timesync
from tk.app1 import App1, last_will
from tk.backoff import Backoff
from tk.log import Logger
from tk.mqtt import Client
from tk.shadow import Shadow
from tk.topics import Topics
from tk.version import VERSION

_log = Logger("device")


class Session:
    """One MQTT connection and everything that runs over it."""

    def __init__(self, hal, cfg, boot_info):
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
        self.app1 = App1(self.client, cfg.thing_name, self.topics, VERSION)
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
        """Shadow sync on connect (IoT Lens BP 11.1): get, apply delta, report online."""
        doc = self.shadow.get()
        version = doc["version"] if doc else None
        delta = doc.get("state", {}).get("delta") if doc else None
        reported = self._reported_for(delta)
        reported["connected"] = True
        reported["fw"] = VERSION
        reported["board"] = self.hal.NAME
        reported["boot"] = self.boot_info
        acc = self.shadow.update(reported=reported, version=version)
        _log.info("shadow synced: connected=true (version %s)", acc.get("version"))

    def _reported_for(self, delta):
        rep = {}
        if delta and "settings" in delta:
            cur, rejected = settings.apply(delta["settings"])
            for k, why in rejected.items():
                if why:
                    _log.warn("setting %s refused: %s", k, why)
            rep["settings"] = cur
            rep["settings_rejected"] = rejected
        else:
            rep["settings"] = settings.current()
        return rep

    def _on_delta(self, state, version):
        # Handled from the main loop, not inside the MQTT callback.
        self._pending_delta = state

    def serve(self):
        """Run until the connection fails (raises)."""
        c = self.client
        ka_ms = self.cfg.keepalive_s * 1000
        while True:
            c.poll(1000)
            if self._pending_delta is not None:
                delta, self._pending_delta = self._pending_delta, None
                if "settings" in delta:
                    self.shadow.update(reported=self._reported_for(delta))
            now = time.ticks_ms()
            if c.ping_outstanding:
                if time.ticks_diff(now, c.ping_at) > ka_ms // 2:
                    raise OSError("no PINGRESP within %d ms" % (ka_ms // 2))
            elif time.ticks_diff(now, c.last_tx) > ka_ms // 2:
                c.ping()

    def close(self):
        self.client.close()


def run(hal, cfg):
    log_ok = cfg.log_level
    from tk import log
    if not log.set_level(log_ok):
        _log.warn("log_level %r unknown; keeping info", log_ok)
    boot = {"reason": hal.reset_cause(), "uid": hal.unique_id(), "fw": VERSION}
    hal.network_up(cfg)
    how = timesync.sync(hal, cfg.ntp_servers, cfg.backoff_base_ms, min(cfg.backoff_cap_ms, 60000))
    boot["time_source"] = how
    boot["at"] = clock.unix_s()
    backoff = Backoff(cfg.backoff_base_ms, cfg.backoff_cap_ms)
    while True:
        session = None
        up_at = None
        try:
            session = Session(hal, cfg, boot)
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
