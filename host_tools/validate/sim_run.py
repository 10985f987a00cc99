"""``thingkit validate --board sim``: boot a virtual kit against a fresh bench and check
each checklist item with evidence seen on the broker, in the shadow and in the logs."""

from __future__ import annotations

import json
import logging
import re
import ssl
import tempfile
import time
import uuid
from pathlib import Path

from host_tools.bench.bench import Bench
from host_tools.bench.layout import OPERATOR_CN
from host_tools.bench.observer import Message, Observer
from host_tools.kit.provision import create_sim_kit
from host_tools.kit.sim import POWER_ON_TIME, SimKit, firmware_files
from host_tools.validate import checklist as cl
from host_tools.validate.app2_check import check_component, check_timestamps, telemetry
from host_tools.validate.static_scan import scan
from host_tools.validate.store_forward_check import check_store_forward
from host_tools.validate.tls_probe import handshake
from host_tools.validate.update_checks import CONFIRM_S, UpdateChecks

log = logging.getLogger(__name__)
BOOT_TIMEOUT = 40.0
PING_TIMEOUT = 5.0
APP2_INTERVAL = 2  # s: the validator speeds App #2 up through the shadow
APP2_MESSAGES = 4  # telemetry messages collected: several intervals
UPDATE_HEAP = "224k"  # the update kits' heap budget (see _check_updates)


def _order(r: cl.Result) -> tuple[int, str]:
    """Checklist order: App #1, App #2 per component, then the rest as listed."""
    ids = list(cl.TITLES)
    if r.id.startswith("app2."):
        return (ids.index("app1.subscribe") + 1, r.id)
    return (ids.index(r.id) if r.id in ids else len(ids), r.id)


def _ts(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class SimValidation:
    """One validation run; ``run()`` returns the results in checklist order."""

    def __init__(self, root: Path, keepalive_s: int = 30) -> None:
        self.root = root
        self.keepalive_s = keepalive_s
        self.bench = Bench(root / "bench")
        self.thing = f"tk-sim-{uuid.uuid4().hex[:6]}"
        self.kit: SimKit | None = None
        self.results: dict[str, cl.Result] = {}
        self.t_power_on = 0.0

    def run(self) -> list[cl.Result]:
        self.bench.up()
        try:
            self.kit = create_sim_kit(
                self.bench,
                self.root / "kits",
                self.thing,
                keepalive_s=self.keepalive_s,
            )
            with Observer(self.bench) as obs:
                self._boot_and_check(obs)
        finally:
            if self.kit is not None:
                self.kit.power_off()
            self.bench.down()
        return sorted(self.results.values(), key=_order)

    def _set(self, r: cl.Result) -> None:
        self.results[r.id] = r

    # -- the run -----------------------------------------------------------------
    def _boot_and_check(self, obs: Observer) -> None:
        kit, thing = self.kit, self.thing
        assert kit is not None
        # A desired setting waiting in the shadow before the device ever connects:
        # shadow sync on connect must pick it up (IoT Lens BP 11.1).
        obs.shadow_request(
            thing, "update", {"state": {"desired": {"settings": {"log_level": "debug"}}}}
        )
        self.t_power_on = time.time()
        kit.power_on()
        status_topic = f"{self.bench.topic_prefix}/{thing}/status"
        shadow_acc = f"$aws/things/{thing}/shadow/update/accepted"

        def online_report(m: Message) -> bool:
            d = m.json()
            return (
                m.topic == shadow_acc
                and isinstance(d, dict)
                and d.get("state", {}).get("reported", {}).get("connected") is True
            )

        acc = self._wait_alive(obs, online_report, BOOT_TIMEOUT)
        if acc is None:
            # The kit never came online: every item is unmet; say why once, quickly.
            why = (
                "the kit stopped"
                if not kit.is_running()
                else f"no reported.connected=true within {BOOT_TIMEOUT:.0f} s"
            )
            for item in cl.TITLES:
                self._set(cl.not_met(item, why, self._tail()))
            return
        status = obs.wait(
            lambda m: (
                m.topic == status_topic
                and not m.retain
                and (m.json() or {}).get("state") == "online"
            ),
            5,
            since=self.t_power_on,
        )
        self._check_online_topic(status)
        self._check_shadow(obs, acc)
        self._check_subscribe(obs)
        self._check_time()
        self._check_tls()
        self._check_cert_auth()
        self._check_static()
        self._check_app2(obs)
        self._set(check_store_forward(self.bench, kit, thing, APP2_INTERVAL, _ts))
        self._check_updates(obs)
        self._check_offline(obs)

    def _check_updates(self, obs: Observer) -> None:
        """Signed updates, staged rollout and rollback, on a group of two more kits
        (stock plain partition table: app updates), and firmware-kind updates on one
        more made with board ``sim-ota`` (the -OTA table).

        They run with UPDATE_HEAP: code is .mpy files in the heap (no ROMFS on a stock
        image) and an update needs ~24 KB more, with room for fragmentation, on this
        64-bit sim (at the default budget the device ends the job FAILED with
        out_of_memory and stays online; see docs/troubleshooting.rst, hil_tests/test_ota.py).
        """
        names = [f"{self.thing}-b", f"{self.thing}-c"]
        ota_name = f"{self.thing}-ota"  # board sim-ota: the stock -OTA partition table
        kits = []
        try:
            for name in [*names, ota_name]:
                kit = create_sim_kit(
                    self.bench,
                    self.root / "kits",
                    name,
                    heap=UPDATE_HEAP,
                    board="sim-ota" if name == ota_name else "sim",
                    keepalive_s=self.keepalive_s,
                    ota_confirm_s=CONFIRM_S,
                )
                kits.append(kit)
                kit.power_on()
            for kit in kits:
                kit.wait_for(r"shadow synced", timeout=BOOT_TIMEOUT)
            checks = UpdateChecks(
                self.bench, obs, kits[:2], names, self.root, _ts, ota_kit=(kits[2], ota_name)
            )
            for r in checks.run():
                r.evidence.append(
                    f"update kits {', '.join(names)} (board sim) and {ota_name} (board "
                    f"sim-ota): heap budget {UPDATE_HEAP}"
                )
                self._set(r)
        except Exception as e:  # noqa: BLE001 - reported as not met, with the reason
            for item in ("lens.signed_updates", "lens.rollback", "lens.staged_rollout"):
                if item not in self.results:
                    tail = " | ".join(kits[0].console().splitlines()[-6:]) if kits else ""
                    self._set(cl.not_met(item, f"update checks stopped: {e!r}", tail))
        finally:
            for kit in kits:
                kit.power_off()

    def _wait_alive(self, obs: Observer, pred, timeout: float) -> Message | None:
        """Like obs.wait, but give up as soon as the kit's process has stopped."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = obs.wait(pred, 0.25, since=self.t_power_on)
            if m is not None:
                return m
            if self.kit is not None and not self.kit.is_running():
                return obs.find(pred, since=self.t_power_on)
        return None

    def _check_online_topic(self, m: Message | None) -> None:
        if m is None:
            self._set(
                cl.not_met(
                    "app1.online_topic",
                    f"no online message on the status topic within {BOOT_TIMEOUT:.0f} s",
                    self._tail(),
                )
            )
            return
        self._set(
            cl.met(
                "app1.online_topic",
                f"{_ts(m.t)} {m.topic}: {m.excerpt()}",
                f"{m.t - self.t_power_on:.2f} s after power-on; retained, QoS 1",
            )
        )

    def _check_shadow(self, obs: Observer, acc: Message | None) -> None:
        thing = self.thing
        doc = obs.shadow_get(thing)
        reported = (doc or {}).get("state", {}).get("reported", {})
        if acc is None or reported.get("connected") is not True:
            self._set(
                cl.not_met(
                    "app1.shadow_online",
                    "no accepted update with reported.connected=true",
                    f"shadow now: {doc}",
                    self._tail(),
                )
            )
        else:
            self._set(
                cl.met(
                    "app1.shadow_online",
                    f"{_ts(acc.t)} {acc.topic}: {acc.excerpt()}",
                    f"shadow get (operator): reported.connected=true, version {doc.get('version')}",
                )
            )
        settings = reported.get("settings", {})
        delta = (doc or {}).get("state", {}).get("delta")
        if settings.get("log_level") == "debug" and not (delta or {}).get("settings"):
            self._set(
                cl.met(
                    "lens.shadow_sync",
                    "desired.settings.log_level=debug set before first connect",
                    "device reported settings.log_level=debug on connect; no delta left",
                )
            )
        else:
            self._set(
                cl.not_met("lens.shadow_sync", f"reported.settings={settings}, delta={delta}")
            )

    def _check_subscribe(self, obs: Observer) -> None:
        prefix = f"{self.bench.topic_prefix}/{self.thing}"
        nonce = uuid.uuid4().hex[:12]
        t0 = obs.publish(f"{prefix}/ping", {"id": nonce})
        m = obs.wait(
            lambda m: m.topic == f"{prefix}/pong" and (m.json() or {}).get("id") == nonce,
            PING_TIMEOUT,
            since=t0,
        )
        if m is None:
            self._set(
                cl.not_met(
                    "app1.subscribe",
                    f"no answer on {prefix}/pong to id {nonce} within {PING_TIMEOUT:.0f} s",
                    self._tail(),
                )
            )
        else:
            self._set(
                cl.met(
                    "app1.subscribe",
                    f'{_ts(t0)} operator published {{"id": "{nonce}"}} on {prefix}/ping',
                    f"{_ts(m.t)} {m.topic}: {m.excerpt()}",
                    f"round trip {1000 * (m.t - t0):.0f} ms",
                )
            )

    def _kit_connect_line(self) -> re.Match | None:
        rx = re.compile(
            r"^(\S+): New client connected from 127\.0\.0\.1:(\d+) as (\S+) \(p\d, c\d, k(\d+), u'([^']*)'\)",
            re.MULTILINE,
        )
        for m in rx.finditer(self.bench.broker_log()):
            if m.group(3) == self.thing:
                return m
        return None

    def _check_tls(self) -> None:
        lay = self.bench.layout
        op = lay.identity(OPERATOR_CN)
        got = {}
        for v in (
            ssl.TLSVersion.TLSv1,
            ssl.TLSVersion.TLSv1_1,
            ssl.TLSVersion.TLSv1_2,
            ssl.TLSVersion.TLSv1_3,
        ):
            got[v.name] = handshake(self.bench.port, lay.server_ca_pem, v, op)
        line = self._kit_connect_line()
        only12 = got["TLSv1_2"] == "TLSv1.2" and not any(
            got[k] for k in ("TLSv1", "TLSv1_1", "TLSv1_3")
        )
        ev = [
            "broker listener probe: "
            + ", ".join(
                f"{k.replace('_', '.')} {'accepted' if v else 'refused'}" for k, v in got.items()
            )
        ]
        if line:
            ev.append(f"device connected to that listener: {line.group(0)}")
        self._set((cl.met if only12 and line else cl.not_met)("hw.tls12", *ev))

    def _check_cert_auth(self) -> None:
        lay = self.bench.layout
        anon = handshake(self.bench.port, lay.server_ca_pem, ssl.TLSVersion.TLSv1_2, None)
        line = self._kit_connect_line()
        ev = ["a TLS 1.2 client without a certificate is " + ("ACCEPTED" if anon else "refused")]
        ok = anon is None and line is not None and line.group(5) == self.thing
        if line:
            ev.append(
                f"device identity from its certificate CN: u'{line.group(5)}', "
                f"client id {line.group(3)}"
            )
        self._set((cl.met if ok else cl.not_met)("hw.cert_auth", *ev))

    def _check_time(self) -> None:
        kit = self.kit
        assert kit is not None
        con = kit.console()
        set_m = re.search(r"^\d+ I time: clock set from (\S+): (\S+)", con, re.MULTILINE)
        conn_m = re.search(r"^\d+ I device: connecting to", con, re.MULTILINE)
        answered = [
            ln
            for ln in self._read(self.bench.layout.ntp_log).splitlines()
            if ln.endswith("answered") and float(ln.split()[0]) >= self.t_power_on
        ]
        # TLS failures at the broker between power-on and the kit's first session.
        blog = self.bench.broker_log()
        line = self._kit_connect_line()
        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.t_power_on))
        window = blog[: line.start()] if line else blog
        broker_fail = [
            ln
            for ln in window.splitlines()
            if ln[:19] >= start and ("failed" in ln or "OpenSSL Error" in ln)
        ]
        ok = bool(set_m and conn_m and set_m.start() < conn_m.start() and answered)
        ev = [f"kit powered on with its RTC at {POWER_ON_TIME}"]
        if answered:
            ev.append(f"bench NTP server answered the kit at {_ts(float(answered[0].split()[0]))}")
        if set_m:
            ev.append(
                f"console: clock set from {set_m.group(1)} to {set_m.group(2)} "
                f"before the first connect"
            )
        ev.append(f"failed TLS attempts at the broker since power-on: {len(broker_fail)}")
        self._set(
            (cl.met if ok and not broker_fail else cl.not_met)("lens.time_before_connect", *ev)
        )

    def _check_static(self) -> None:
        # The values the kit was provisioned with must not appear in its code.
        assert self.kit is not None
        cfg = json.loads((self.kit.flash / "config.json").read_text())
        findings = scan(firmware_files(), [cfg["mqtt"]["endpoint"]])
        files = len(firmware_files())
        if findings:
            self._set(cl.not_met("hw.no_hardcoded_urls", *findings[:10]))
        else:
            self._set(
                cl.met(
                    "hw.no_hardcoded_urls",
                    f"{files} firmware files scanned: no URL, AWS endpoint, IP address or bench host name",
                    f"endpoint and port (localhost:{self.bench.port}, chosen at random when the bench "
                    f"started) reached the device only through config.json",
                )
            )

    def _settings_report(self, obs: Observer, desired: dict, pred, timeout: float = 5.0):
        """Set desired settings; wait for the device's report that satisfies ``pred``."""
        acc = f"$aws/things/{self.thing}/shadow/update/accepted"
        since = time.time()
        obs.shadow_request(self.thing, "update", {"state": {"desired": {"settings": desired}}})
        return obs.wait(
            lambda m: (
                m.topic == acc
                and m.json()
                and pred((m.json() or {}).get("state", {}).get("reported", {}))
            ),
            timeout,
            since=since,
        )

    def _check_app2(self, obs: Observer) -> None:
        kit = self.kit
        assert kit is not None
        prefix = f"{self.bench.topic_prefix}/{self.thing}"
        board = json.loads((kit.flash / "board.json").read_text())
        comps = board.get("components", [])
        # Configuration through the shadow: a faster interval, then an invalid one.
        ok = self._settings_report(
            obs,
            {"telemetry_interval_s": APP2_INTERVAL},
            lambda r: r.get("settings", {}).get("telemetry_interval_s") == APP2_INTERVAL,
        )
        t_cfg = time.time()
        bad = self._settings_report(
            obs,
            {"telemetry_interval_s": 0},
            lambda r: (r.get("settings_rejected") or {}).get("telemetry_interval_s"),
        )
        kept = bad and (
            bad.json()["state"]["reported"].get("settings", {}).get("telemetry_interval_s")
            == APP2_INTERVAL
        )
        self._settings_report(obs, {"telemetry_interval_s": APP2_INTERVAL}, lambda r: True)
        if ok and bad and kept:
            why = bad.json()["state"]["reported"]["settings_rejected"]["telemetry_interval_s"]
            self._set(
                cl.met(
                    "lens.config_via_shadow",
                    f"desired.settings.telemetry_interval_s={APP2_INTERVAL} applied and "
                    f"reported at {_ts(ok.t)}",
                    f'desired value 0 refused by the device: "{why}"; it kept {APP2_INTERVAL}',
                )
            )
        else:
            self._set(
                cl.not_met(
                    "lens.config_via_shadow",
                    f"applied: {bool(ok)}, refused: {bool(bad)}, previous kept: {bool(kept)}",
                    self._tail(),
                )
            )
        # Readings for several intervals at the new interval.
        topic = f"{prefix}/telemetry"
        obs.wait(
            lambda m: len(telemetry(obs.messages, topic, t_cfg)) >= APP2_MESSAGES,
            APP2_INTERVAL * (APP2_MESSAGES + 2),
            since=0,
        )
        msgs = telemetry(list(obs.messages), topic, t_cfg)
        if not comps:
            self._set(cl.not_met("app2.components", "the board definition lists no components"))
        for comp in comps:
            self._set(check_component(comp, msgs, APP2_INTERVAL, APP2_MESSAGES - 1))
        self._check_diag(obs, prefix)
        self._set(check_timestamps(list(obs.messages), prefix, self.t_power_on))

    def _check_diag(self, obs: Observer, prefix: str) -> None:
        m = obs.find(lambda m: m.topic == f"{prefix}/diag", since=self.t_power_on)
        fields = (
            "heap_free",
            "heap_min_free",
            "uptime_s",
            "reset_cause",
            "fw",
            "slot",
            "rssi",
            "reconnects",
        )
        doc = obs.shadow_get(self.thing, shadow="diag") or {}
        in_shadow = doc.get("state", {}).get("reported", {})
        d = m.json() if m else {}
        missing = [f for f in fields if f not in (d or {})]
        if m is None or missing or not in_shadow:
            self._set(
                cl.not_met(
                    "lens.diagnostics",
                    f"diag message: {m.excerpt() if m else None}",
                    f"missing fields: {missing}",
                    f"shadow diag: {bool(in_shadow)}",
                )
            )
            return
        self._set(
            cl.met(
                "lens.diagnostics",
                f"{_ts(m.t)} {m.topic}: {m.excerpt(200)}",
                f"kept in the named shadow 'diag' (heap_free {in_shadow.get('heap_free')})",
            )
        )

    def _check_offline(self, obs: Observer) -> None:
        kit = self.kit
        assert kit is not None
        shadow_acc = f"$aws/things/{self.thing}/shadow/update/accepted"
        t_kill = time.time()
        kit.power_off()
        limit = 1.5 * self.keepalive_s
        m = obs.wait(
            lambda m: (
                m.topic == shadow_acc
                and (m.json() or {}).get("state", {}).get("reported", {}).get("connected") is False
            ),
            limit + 2,
            since=t_kill,
        )
        if m is None:
            self._set(
                cl.not_met(
                    "lens.offline_state",
                    f"no reported.connected=false within {limit:.0f} s of power-off",
                )
            )
            return
        self._set(
            cl.met(
                "lens.offline_state",
                f"{_ts(t_kill)} kit power cut (SIGKILL)",
                f"{_ts(m.t)} {m.topic}: {m.excerpt()}",
                f"offline after {m.t - t_kill:.2f} s (limit 1.5 x keepalive = {limit:.0f} s)",
            )
        )

    # -- helpers -------------------------------------------------------------------
    def _tail(self) -> str:
        kit = self.kit
        lines = kit.console().splitlines()[-6:] if kit else []
        return "console tail: " + " | ".join(lines)

    @staticmethod
    def _read(p: Path) -> str:
        try:
            return p.read_text()
        except FileNotFoundError:
            return ""


def validate_sim(root: Path | None = None) -> tuple[list[cl.Result], dict]:
    """Run the validation in ``root`` (a temporary directory if None)."""
    t0 = time.time()
    if root is None:
        with tempfile.TemporaryDirectory(prefix="thingkit-validate-") as d:
            v = SimValidation(Path(d))
            results = v.run()
    else:
        v = SimValidation(Path(root))
        results = v.run()
    return results, {"board": "sim", "thing": v.thing, "duration_s": round(time.time() - t0, 2)}
