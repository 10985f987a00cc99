"""Boot: what tk.device.run does once, before its first session (loaded for it, then
dropped from sys.modules: none of this stays in RAM).

    info, tls, app2, diag, backoff = boot.start(hal, cfg)

The TLS context is made first, on a clean heap. Then the network and the clock (NTP),
whose modules are dropped and collected before App #2 (its drivers and the outbox) and
diagnostics are made: their peaks never meet. (App #2 before NTP needed 96 KiB on the
64-bit virtual kit; this order, 80 KiB.) No reading is lost by the wait: App #2 takes
none before the clock is set.
"""
import gc
import os

from tk import clock, forget, log, settings
from tk.backoff import Backoff
from tk.device import _read
from tk.diag import Diag
from tk.log import Logger
from tk.topics import Topics
from tk.version import VERSION

_log = Logger("device")


def start(hal, cfg, lean=False):
    """(boot info for the shadow, TLS context or None, App #2 or None, Diag, Backoff).
    ``lean``: without App #2 (tk.device starts again so after running out of memory)."""
    if not log.set_level(cfg.log_level):
        _log.warn("log_level %r unknown; keeping info", cfg.log_level)
    boot_id = "%08x" % int.from_bytes(os.urandom(4), "big")
    info = {"id": boot_id, "reason": hal.reset_cause(), "uid": hal.unique_id(), "fw": VERSION}
    from tk.device import boot_after  # already loaded: tk.device runs this boot
    after = boot_after()
    if after:
        info["after"] = after  # the previous run rebooted itself: why
    tls = make_tls(cfg)  # first: long-lived objects on a clean heap
    if lean:
        info["degraded"] = "App #2 off: out of memory at boot"
    hal.network_up(cfg)
    # App #2 takes no reading before this: until the clock is set there is no time to
    # give it.
    info["time_source"] = sync_time(hal, cfg)
    info["at"] = clock.unix_s()
    gc.collect()  # NTP's modules are gone: App #2's objects go on a clean heap
    app2, diag = parts(hal, cfg, boot_id, lean)
    gc.collect()
    return info, tls, app2, diag, Backoff(cfg.backoff_base_ms, cfg.backoff_cap_ms,
                                          jitter(hal, cfg))


def make_tls(cfg):
    """The TLS context (client certificate, key, CA), made once per boot before anything
    else: its ~3 KB block then sits on a clean heap, where a context made per connection
    could find the heap too fragmented after hours of readings (MemoryError in ssl).
    Certificates changed on flash take effect at the next boot (a rotation resets the
    kit). On failure each connection makes its own, and reports why."""
    try:
        import ussl
        return ussl.make_context(_read(cfg.cert_file), _read(cfg.key_file),
                                 _read(cfg.ca_file))
    except Exception as e:
        _log.warn("TLS context not made at boot (%r): made per connection", e)
        return None


def parts(hal, cfg, boot_id, lean=False):
    """App #2 (if the board has components and ``lean`` is false) and diagnostics, made
    once per boot."""
    topics = Topics(cfg.topic_prefix, cfg.thing_name)
    comps, buses = [], {}
    if lean:
        _log.error("App #2 off: out of memory at boot; it is tried again at the next boot")
    else:
        from tk import board as boardfile  # boot only: dropped below
        try:
            b = boardfile.load()
            comps, buses = boardfile.components(b), b.get("buses", {})
        except boardfile.BoardError as e:
            _log.warn("App #2 off: %s", e)
        b = boardfile = None
        forget(("board",))
    settings.configure([c["id"] for c in comps], cfg.telemetry_interval_s, cfg.diag_interval_s)
    app2 = None
    if comps:
        # Here, not at the top: not in RAM during NTP. Both before any App #2 object:
        # their long-lived code objects are made first, on the cleanest heap.
        from tk.app2 import App2
        from tk.outbox import Outbox
        app2 = App2(None, cfg.thing_name, topics.telemetry, comps, hal, boot_id, buses)
    diag = Diag(None, cfg.thing_name, topics.diag, hal)
    diag.set_interval(cfg.diag_interval_s)
    if app2 is not None:
        app2.set_interval(cfg.telemetry_interval_s)
        _log.info("App #2: %d components every %d s", len(comps), cfg.telemetry_interval_s)
        app2.self_test()
        app2.outbox = diag.outbox = Outbox("outbox", cfg.outbox_max_records)
    return app2, diag


def sync_time(hal, cfg):
    """NTP at boot (tk.timesync); its modules are dropped once the clock is set."""
    from tk import timesync
    try:
        return timesync.sync(hal, cfg.ntp_servers, cfg.backoff_base_ms,
                             min(cfg.backoff_cap_ms, 60000))
    finally:
        timesync = None
        forget(("timesync", "sntp"))


def jitter(hal, cfg):
    """backoff.jitter false is a test-rig baseline (reconnect storm comparison): honoured on the virtual kit alone."""
    if cfg.backoff_jitter:
        return True
    if hal.NAME == "sim":
        _log.warn("backoff jitter OFF (virtual-kit test setting): every retry waits its full window")
        return False
    _log.warn("backoff.jitter false ignored: only the virtual kit may retry in step")
    return True
