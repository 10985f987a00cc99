"""The device's life: clock, connect with backoff, shadow sync, App #1, App #2, serve.

    device.run(hal, cfg)   # never returns

Every failure of a session (TLS, CONNACK, time-out, lost link, no PINGRESP, no PUBACK)
ends in the same place: close the socket, wait a full-jitter backoff delay, try again.
The backoff resets once a connection has stayed up for ``backoff.reset_after_s``, but a
connection the broker closed (a duplicate-client-id kick) must have lasted twice the cap
(tk.backoff.Backoff.session_ended). While offline App #2 keeps reading into its outbox;
each session sends the backlog, a few records per loop turn. What happens once per
boot (TLS context, App #2 and diagnostics, NTP) is tk.boot's, dropped after it ran.
"""
import errno
import gc
import json
import time

from tk import forget, ota, settings, watchdog
from tk.app1 import App1, last_will
from tk.log import Logger
from tk.mqtt import Client
from tk.shadow import Shadow, ShadowRejected, ShadowTooLarge
from tk.topics import Topics
from tk.version import VERSION

_log = Logger("device")
_AFTER = "reboot.txt"  # why the device rebooted itself (tk.device._last_resort)
_FLUSH_BATCH = 8  # outbox records published per loop turn
_OOM_SESSIONS = 2  # sessions in a row ended by MemoryError before App #2 is dropped
_tls = None  # the TLS client context, made once per boot (tk.boot.make_tls)


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
        params = {"server_hostname": cfg.endpoint}
        if _tls is not None:
            params["context"] = _tls  # made at boot (tk.boot.make_tls)
        else:
            params["cert"] = _read(cfg.cert_file)
            params["key"] = _read(cfg.key_file)
            params["cadata"] = _read(cfg.ca_file)
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
        # The update agent (tk.ota); a new version past its deadline rolls back here,
        # on every connection attempt, whether it can connect or not.
        ota.check_deadline(hal)
        self.ota = ota.Agent(hal, cfg, self.client, cfg.thing_name, self.app1, self.topics)
        self.app2 = app2
        self.diag = diag
        for part in (app2, diag):
            if part is not None:
                part.client = self.client
        self._pending_delta = None
        # The settings answer last reported. The service publishes a delta after every
        # update that leaves desired != reported, this device's own reports included: a
        # refused value stays in desired, so answering every delta would report, get the
        # same delta back and report again, without end. An answer is sent once.
        self._said = None

    def open(self):
        cfg = self.cfg
        _log.info("connecting to %s:%d as %s", cfg.endpoint, cfg.port, cfg.thing_name)
        # Mbed TLS takes its buffers (~17 KB contiguous for TLS 1.2) from the board's own
        # heap, outside the GC heap: what that heap had at this handshake goes to diag.
        if self.diag is not None:
            self.diag.tls_heap = self.hal.tls_heap()
        t0 = time.ticks_ms()
        self.client.connect()
        # TLS has parsed the certificates (if this session read them): their bytes need
        # not stay for the session.
        self.client.ssl_params = None
        _log.info("mqtt connected (tls+connack %d ms)", time.ticks_diff(time.ticks_ms(), t0))
        # Every subscription in one SUBSCRIBE: one round trip to the cloud.
        self.client.subscribe_many(self.shadow.topics() + self.app1.subscriptions()
                                   + self.ota.subscriptions(), 1)  # 5 + 1 + 2: AWS max 8
        self.sync_shadow()
        self.app1.start(self.boot_info)
        self.ota.start()

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
        if delta and "identity" in delta:  # asked while this kit was offline
            self._pending_delta = {"identity": delta["identity"]}
        reported = self._apply_settings(delta)
        self._said = json.dumps(reported)
        reported["connected"] = True
        reported["fw"] = VERSION
        reported["runtime"] = ota.runtime_version(self.hal)  # the MicroPython image
        reported["slot"] = "%s/%s" % (self.hal.running_slot(), ota.app_slot())
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

    def _rotate(self, req):
        from tk import rotate  # loaded for a rotation only, dropped after it
        try:
            rotate.run(self.hal, self.cfg, self.client, self.shadow, req)
        finally:
            rotate = None
            forget(("rotate", "fleet_prov", "identity", "p256_sign"))

    def _on_delta(self, state, version):
        # Handled from the main loop, not inside the MQTT callback.
        self._pending_delta = state

    def serve(self):
        """Run until the connection fails (raises)."""
        c = self.client
        ka_ms = self.cfg.keepalive_s * 1000
        while True:
            watchdog.feed()  # the session loop makes progress
            wait = 1000
            if self.app2 is not None:
                # A backlog to send: only look for incoming packets, do not wait.
                wait = 0 if self.app2.pending() else min(wait, self.app2.ms_to_due())
            c.poll(wait)
            self.app1.service()
            self.ota.service()
            if self._pending_delta is not None:
                delta, self._pending_delta = self._pending_delta, None
                if "identity" in delta:  # a certificate rotation asked for (tk.rotate)
                    self._rotate(delta["identity"])
                if "settings" in delta:
                    rep = self._apply_settings(delta)
                    said = json.dumps(rep)
                    if said != self._said:  # the same answer again: nothing new to say
                        self._said = said
                        self.shadow.report(rep)
            if self.app2 is not None:
                r = self.app2.tick()
                if r is not None:
                    self.app2_shadow.report(self.app2.shadow_report(*r))
                # Oldest first, a bounded batch per turn: the loop keeps serving the
                # shadow, App #1, pings and readings while a backlog drains.
                self.app2.flush(_FLUSH_BATCH)
            if self.diag is not None:
                self.diag.sample()
                d = self.diag.tick()
                if d is not None:
                    self.diag_shadow.report(d)
            now = time.ticks_ms()
            if c.ping_outstanding:
                if time.ticks_diff(now, c.ping_at) > ka_ms // 2:
                    raise OSError("no PINGRESP within %d ms" % (ka_ms // 2))
            elif (time.ticks_diff(now, c.last_tx) > ka_ms // 2
                  or time.ticks_diff(now, c.last_rx) > ka_ms // 2):
                # Half a keepalive without a byte from the broker is checked whatever this
                # device is sending: a busy publisher on a half-open link is noticed
                # within one keepalive (PINGREQ, then no PINGRESP), not only when a QoS 1
                # publish times out.
                c.ping()

    def close(self):
        self.client.close()
        self.ota.close()  # its working part, if loaded, goes with the session


def _exists(path):
    import os
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _close(session):
    """End a session whatever state it is in; nothing it raises escapes."""
    try:
        session.close()
    except Exception:  # a socket already gone, or no heap for the error: still closed
        pass


def _peer_closed(e):
    """The broker ended the connection (EOF or reset): a kick, a restart, a cut link."""
    return isinstance(e, OSError) and len(e.args) > 0 and e.args[0] in (-1, errno.ECONNRESET)


def _offline_wait(ms, app2, diag):
    """Sleep ``ms`` between sessions, in steps, so App #2 keeps reading into its outbox."""
    end = time.ticks_add(time.ticks_ms(), ms)
    while True:
        watchdog.feed()
        left = time.ticks_diff(end, time.ticks_ms())
        if left <= 0:
            break
        if app2 is not None and app2.outbox is not None:
            try:
                if app2.tick() is not None:
                    # On flash now: one line per reading, so a person (and the HIL
                    # test) knows what the outbox holds.
                    _log.info("offline: seq %d queued (%d waiting)", app2.seq, app2.pending())
            except Exception as e:  # a full or failing filesystem must not stop the loop
                _log.error("offline reading failed: %r", e)
            left = min(left, max(1, app2.ms_to_due()))
        diag.sample()
        time.sleep_ms(min(left, 1000))  # back to feed the watchdog at least every second


def _boot(hal, cfg):
    """tk.boot.start, once; if the heap runs out on the way, once more without App #2
    (its drivers and outbox are most of what boot adds): a device that cannot fit its
    components still comes online, answers, reports why in the shadow (reported.boot.
    degraded) and can take an update or a smaller configuration, where a device that
    kept failing at boot could not be reached at all."""
    lean = False
    while True:
        from tk import boot as bootmod  # boot only: dropped once the device is set up
        try:
            return bootmod.start(hal, cfg, lean)
        except MemoryError as e:
            if lean:
                raise
            lean = True
            _log.error("out of memory at boot (%r): starting again without App #2", e)
        finally:
            bootmod = None
            forget(("boot",))
        _forget_app2()  # what the failed start loaded; a lean start loads none of it
        gc.collect()


def _last_resort(hal, cfg, cloud_at):
    """No cloud session for ``offline.reboot_after_s`` (900 s by default): reboot, as
    ESPHome's reboot_timeout does, in case the fault is in this device (a network stack
    or radio that never recovers). App #2's readings are on flash and survive; the next
    boot reports why it started in reported.boot.after."""
    limit = cfg.offline_reboot_s
    if not limit or time.ticks_diff(time.ticks_ms(), cloud_at) < limit * 1000:
        return
    _log.error("no cloud session for %d s: rebooting (readings stay on flash)", limit)
    try:
        with open(_AFTER, "w") as f:
            f.write("no cloud session for %d s" % limit)
    except OSError:
        pass
    hal.reboot()


def boot_after():
    """Why the previous run ended, if it rebooted itself (read once, then removed)."""
    import os
    try:
        with open(_AFTER) as f:
            why = f.read()
        os.remove(_AFTER)
        return why
    except OSError:
        return None


def _forget_app2():
    # Runs when the heap may be exhausted: allocates nothing (no list of names, no
    # string built; see tk.forget).
    import sys
    mods = sys.modules
    while True:
        key = None
        for k in mods:
            if k.startswith("tk.drivers."):
                key = k
                break
        if key is None:
            break
        del mods[key]
    forget(("app2", "outbox", "drivers"))


def run(hal, cfg):
    global _tls
    claim = None
    if cfg.claim or _exists("certs/identity.json"):  # a claim kit, or one that made its
        from tk import claim                            # own identity: which one to use
        claim.select(cfg)
    info, _tls, app2, diag, backoff = _boot(hal, cfg)
    if claim is not None:
        claim.boot_info(cfg, info)
        if cfg.identity == "claim":  # no own identity yet: fleet provisioning first
            from tk import fleet_prov
            fleet_prov.run(hal, cfg, _tls, backoff)  # returns only by rebooting
    gc.collect()
    sessions = 0
    oom = 0  # sessions in a row that ended out of memory
    cloud_at = time.ticks_ms()  # the last time a session was up (or boot)
    while True:
        session = None
        up_at = None
        ended = None
        try:
            session = Session(hal, cfg, info, app2, diag)
            sessions += 1
            diag.reconnects = sessions - 1
            session.open()
            up_at = time.ticks_ms()
            if claim is not None and claim.proven(cfg, info):
                session.shadow.report({"boot": info})  # a new certificate proven: say so
            session.serve()
        except Exception as e:
            ended = e
        # Clean up first, allocating nothing, and only then say why: when the heap ran
        # out, the log line needs the memory the session held (a clean-up that raised
        # here would end run() and restart the device from main every few seconds).
        if session is not None:
            _close(session)
        session = None
        gc.collect()
        peer = _peer_closed(ended)
        oom = oom + 1 if isinstance(ended, MemoryError) else 0
        if ended is not None:
            try:  # the call's own argument tuple needs a block of heap
                _log.warn("session ended: %r%s", ended, " (closed by the broker)" if peer else "")
            except MemoryError:
                pass
        if claim is not None and up_at is None:  # a trial identity goes back after 3
            claim.session_failed(cfg, hal, ended)
        ended = None
        if oom >= _OOM_SESSIONS and app2 is not None:
            # As at boot (_boot): a device that cannot keep a session with App #2 goes on
            # without it, reachable, rather than failing every session. Its outbox stays
            # on flash for the next boot.
            app2 = diag.outbox = None
            _forget_app2()
            gc.collect()
            info["degraded"] = "App #2 off: out of memory"
            _log.error("out of memory in %d sessions in a row: App #2 off until the next boot",
                       oom)
        if up_at is not None:
            cloud_at = time.ticks_ms()
        _last_resort(hal, cfg, cloud_at)
        if up_at is not None and backoff.session_ended(
                time.ticks_diff(time.ticks_ms(), up_at), peer, cfg.backoff_reset_s * 1000):
            _log.info("backoff reset (the connection was stable)")
        delay, window = backoff.next()
        _log.info("reconnect in %d ms (attempt %d, window %d ms)", delay, backoff.attempt, window)
        _offline_wait(delay, app2, diag)
