"""The checks of ``thingkit validate``, in the order they run (see :mod:`.engine`).

Each takes a :class:`~host_tools.validate.engine.Session` whose kit is online and
returns the results of its items, with the evidence seen on the broker, in the shadow,
on the kit's console and, where the cloud offers them, in its logs.
"""

from __future__ import annotations

import re
import ssl
import time
import uuid

from host_tools.bench.observer import Message
from host_tools.checklist import catalog
from host_tools.kit.sim import POWER_ON_TIME, firmware_files
from host_tools.validate import checklist as cl
from host_tools.validate.app2_check import check_component, check_timestamps, telemetry
from host_tools.validate.engine import Check, Session, stamp
from host_tools.validate.static_scan import scan

PING_TIMEOUT = 5.0
APP2_INTERVAL = 2  # s: the validator speeds App #2 up through the shadow
APP2_MESSAGES = 4  # telemetry messages collected: several intervals
NOT_ON_CLOUD = "not shown on this cloud"


def _doc(m: Message) -> dict:
    """A message's JSON object ({} if it is not one)."""
    d = m.json()
    return d if isinstance(d, dict) else {}


def _online_topic(s: Session) -> list[cl.Result]:
    obs = s.observer
    topic = f"{s.prefix}/status"
    m = obs.wait(
        lambda m: m.topic == topic and not m.retain and _doc(m).get("state") == "online",
        5,
        since=s.t_power_on,
    )
    if m is None:
        return [cl.not_met("app1.online_topic", f"no online message on {topic}", s.tail())]
    return [
        cl.met(
            "app1.online_topic",
            f"{stamp(m.t)} {m.topic}: {m.excerpt()}",
            f"{m.t - s.t_power_on:.2f} s after power-on; retained, QoS 1",
        )
    ]


def _shadow(s: Session) -> list[cl.Result]:
    doc = s.observer.shadow_get(s.thing)
    reported = (doc or {}).get("state", {}).get("reported", {})
    s.identity.update({k: reported[k] for k in ("fw", "board") if k in reported})
    out = []
    acc = s.online
    if acc is None or reported.get("connected") is not True:
        out.append(
            cl.not_met(
                "app1.shadow_online",
                "no accepted update with reported.connected=true",
                f"shadow now: {doc}",
            )
        )
    else:
        out.append(
            cl.met(
                "app1.shadow_online",
                f"{stamp(acc.t)} {acc.topic}: {acc.excerpt()}",
                f"shadow get (operator): reported.connected=true, version {(doc or {}).get('version')}",
            )
        )
    settings = reported.get("settings", {})
    delta = (doc or {}).get("state", {}).get("delta")
    if settings.get("log_level") == "debug" and not (delta or {}).get("settings"):
        out.append(
            cl.met(
                "lens.shadow_sync",
                "desired.settings.log_level=debug set before first connect",
                "device reported settings.log_level=debug on connect; no delta left",
            )
        )
    else:
        out.append(cl.not_met("lens.shadow_sync", f"reported.settings={settings}, delta={delta}"))
    return out


def _subscribe(s: Session) -> list[cl.Result]:
    obs, prefix = s.observer, s.prefix
    nonce = uuid.uuid4().hex[:12]
    t0 = obs.publish(f"{prefix}/ping", {"id": nonce})
    m = obs.wait(
        lambda m: m.topic == f"{prefix}/pong" and _doc(m).get("id") == nonce,
        PING_TIMEOUT,
        since=t0,
    )
    if m is None:
        return [
            cl.not_met(
                "app1.subscribe",
                f"no answer on {prefix}/pong to id {nonce} within {PING_TIMEOUT:.0f} s",
                s.tail(),
            )
        ]
    return [
        cl.met(
            "app1.subscribe",
            f'{stamp(t0)} operator published {{"id": "{nonce}"}} on {prefix}/ping',
            f"{stamp(m.t)} {m.topic}: {m.excerpt()}",
            f"round trip {1000 * (m.t - t0):.0f} ms",
        )
    ]


def _time(s: Session) -> list[cl.Result]:
    con = s.dut.console()
    set_m = re.search(r"^\d+ I time: clock set from (\S+): (\S+)", con, re.MULTILINE)
    conn_m = re.search(r"^\d+ I device: connecting to", con, re.MULTILINE)
    ok = bool(set_m and conn_m and set_m.start() < conn_m.start())
    ev = [f"kit powered on with its RTC at its reset value ({POWER_ON_TIME})"]
    if set_m:
        ev.append(
            f"console: clock set from {set_m.group(1)} to {set_m.group(2)} before the first connect"
        )
    if "ntp_log" in s.cloud.capabilities and "broker_log" in s.cloud.capabilities:
        bench = s.cloud.bench  # type: ignore[attr-defined]
        try:
            ntp = bench.layout.ntp_log.read_text()
        except FileNotFoundError:
            ntp = ""
        answered = [
            ln
            for ln in ntp.splitlines()
            if ln.endswith("answered") and float(ln.split()[0]) >= s.t_power_on
        ]
        blog = bench.broker_log()
        at = s.cloud.broker_connect_offset(s.thing)  # type: ignore[attr-defined]
        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(s.t_power_on))
        window = blog[:at] if at is not None else blog
        fails = [
            ln
            for ln in window.splitlines()
            if ln[:19] >= start and ("failed" in ln or "OpenSSL Error" in ln)
        ]
        if answered:
            ev.append(
                f"bench NTP server answered the kit at {stamp(float(answered[0].split()[0]))}"
            )
        ev.append(f"failed TLS attempts at the broker since power-on: {len(fails)}")
        ok = ok and bool(answered) and not fails
    else:
        tls_fail = re.findall(
            r"^\d+ [EW] .*(?:TLS|ssl|SSL).*$",
            con[: conn_m.start()] if conn_m else con,
            re.MULTILINE,
        )
        ev.append(f"failed TLS attempts on the kit's console before it connected: {len(tls_fail)}")
        ev.append(f"NTP server and broker logs: {NOT_ON_CLOUD}")
        ok = ok and not tls_fail
    return [(cl.met if ok else cl.not_met)("lens.time_before_connect", *ev)]


_VERSIONS = (
    ssl.TLSVersion.TLSv1,
    ssl.TLSVersion.TLSv1_1,
    ssl.TLSVersion.TLSv1_2,
    ssl.TLSVersion.TLSv1_3,
)


def _tls(s: Session) -> list[cl.Result]:
    got = {v.name: s.cloud.probe(v, with_cert=True) for v in _VERSIONS}
    conn = s.cloud.connection(s.observer, s.thing, s.t_power_on)
    only12 = got["TLSv1_2"] == "TLSv1.2" and not any(
        got[k] for k in ("TLSv1", "TLSv1_1", "TLSv1_3")
    )
    ev = [
        "listener probe: "
        + ", ".join(
            f"{k.replace('_', '.')} {'accepted' if v else 'refused'}" for k, v in got.items()
        )
    ]
    if conn:
        ev.append(f"device connected to that listener: {conn.evidence}")
    if conn and got["TLSv1_2"] and got["TLSv1_3"] and not (got["TLSv1"] or got["TLSv1_1"]):
        # AWS IoT Core's default security policy also accepts TLS 1.3: which one the
        # device negotiated is not visible from outside.
        return [cl.not_run("hw.tls12", f"{NOT_ON_CLOUD}: the endpoint also accepts TLS 1.3", *ev)]
    return [(cl.met if only12 and conn else cl.not_met)("hw.tls12", *ev)]


def _cert_auth(s: Session) -> list[cl.Result]:
    anon = s.cloud.probe(ssl.TLSVersion.TLSv1_2, with_cert=False)
    conn = s.cloud.connection(s.observer, s.thing, s.t_power_on)
    ev = ["a TLS 1.2 client without a certificate is " + ("ACCEPTED" if anon else "refused")]
    want = {s.thing, s.identity.get("certificate_sha256")}  # CN (bench) or certificate id
    ok = anon is None and conn is not None and conn.identity in want and conn.client_id == s.thing
    if conn:
        ev.append(
            f"device identity from its certificate: {conn.identity!r}, client id {conn.client_id}"
        )
        ev.append(conn.evidence)
    else:
        ev.append("no connection of the kit seen by the cloud")
    return [(cl.met if ok else cl.not_met)("hw.cert_auth", *ev)]


def _static(s: Session) -> list[cl.Result]:
    cfg = s.dut.config()
    endpoint = cfg["mqtt"]["endpoint"]
    files = firmware_files()
    findings = scan(files, [endpoint])
    if findings:
        return [cl.not_met("hw.no_hardcoded_urls", *findings[:10])]
    return [
        cl.met(
            "hw.no_hardcoded_urls",
            f"{len(files)} firmware files scanned: no URL, AWS endpoint, IP address or bench host name",
            f"endpoint and port ({endpoint}:{cfg['mqtt']['port']}) reached the device only "
            "through config.json",
        )
    ]


def _settings_report(s: Session, desired: dict, pred, timeout: float = 5.0) -> Message | None:
    """Set desired settings; wait for the device's report that satisfies ``pred``."""
    acc = f"$aws/things/{s.thing}/shadow/update/accepted"
    since = time.time()
    s.observer.shadow_request(s.thing, "update", {"state": {"desired": {"settings": desired}}})
    return s.observer.wait(
        lambda m: (
            m.topic == acc and bool(m.json()) and pred(_doc(m).get("state", {}).get("reported", {}))
        ),
        timeout,
        since=since,
    )


def _app2(s: Session) -> list[cl.Result]:
    """Configuration through the shadow (a faster interval, then an invalid one), then
    App #2 readings over several intervals, diagnostics and timestamps."""
    out = []
    obs = s.observer
    ok = _settings_report(
        s,
        {"telemetry_interval_s": APP2_INTERVAL},
        lambda r: r.get("settings", {}).get("telemetry_interval_s") == APP2_INTERVAL,
    )
    t_cfg = time.time()
    bad = _settings_report(
        s,
        {"telemetry_interval_s": 0},
        lambda r: (r.get("settings_rejected") or {}).get("telemetry_interval_s"),
    )
    kept = bad is not None and (
        _doc(bad)["state"]["reported"].get("settings", {}).get("telemetry_interval_s")
        == APP2_INTERVAL
    )
    _settings_report(s, {"telemetry_interval_s": APP2_INTERVAL}, lambda r: True)
    if ok and bad and kept:
        why = _doc(bad)["state"]["reported"]["settings_rejected"]["telemetry_interval_s"]
        out.append(
            cl.met(
                "lens.config_via_shadow",
                f"desired.settings.telemetry_interval_s={APP2_INTERVAL} applied and reported at {stamp(ok.t)}",
                f'desired value 0 refused by the device: "{why}"; it kept {APP2_INTERVAL}',
            )
        )
    else:
        out.append(
            cl.not_met(
                "lens.config_via_shadow",
                f"applied: {bool(ok)}, refused: {bool(bad)}, previous kept: {bool(kept)}",
                s.tail(),
            )
        )
    topic = f"{s.prefix}/telemetry"
    obs.wait(
        lambda m: len(telemetry(obs.messages, topic, t_cfg)) >= APP2_MESSAGES,
        APP2_INTERVAL * (APP2_MESSAGES + 2),
        since=0,
    )
    msgs = telemetry(list(obs.messages), topic, t_cfg)
    for comp in s.target.board.components:
        out.append(check_component(comp, msgs, APP2_INTERVAL, APP2_MESSAGES - 1))
    out.append(_diag(s))
    out.append(check_timestamps(list(obs.messages), s.prefix, s.t_power_on))
    return out


DIAG_FIELDS = (
    "heap_free",
    "heap_min_free",
    "uptime_s",
    "reset_cause",
    "fw",
    "slot",
    "rssi",
    "reconnects",
)


def _diag(s: Session) -> cl.Result:
    obs = s.observer
    m = obs.find(lambda m: m.topic == f"{s.prefix}/diag", since=s.t_power_on)
    doc = obs.shadow_get(s.thing, shadow="diag") or {}
    in_shadow = doc.get("state", {}).get("reported", {})
    d = _doc(m) if m else {}
    missing = [f for f in DIAG_FIELDS if f not in d]
    if m is None or missing or not in_shadow:
        return cl.not_met(
            "lens.diagnostics",
            f"diag message: {m.excerpt() if m else None}",
            f"missing fields: {missing}",
            f"shadow diag: {bool(in_shadow)}",
        )
    return cl.met(
        "lens.diagnostics",
        f"{stamp(m.t)} {m.topic}: {m.excerpt(200)}",
        f"kept in the named shadow 'diag' (heap_free {in_shadow.get('heap_free')})",
    )


def _store_forward(s: Session) -> list[cl.Result]:
    from host_tools.validate.store_forward_check import check_store_forward

    bench = s.cloud.bench  # type: ignore[attr-defined]
    return [check_store_forward(bench, s.dut, s.thing, APP2_INTERVAL, stamp)]


def _updates(s: Session) -> list[cl.Result]:
    from host_tools.validate.update_checks import updates_on_kits

    return updates_on_kits(s)


def _offline(s: Session) -> list[cl.Result]:
    obs, dut = s.observer, s.dut
    keepalive = int(dut.config()["mqtt"].get("keepalive_s", 30))
    acc = f"$aws/things/{s.thing}/shadow/update/accepted"
    t_kill = time.time()
    dut.power_off()
    limit = 1.5 * keepalive
    m = obs.wait(
        lambda m: (
            m.topic == acc
            and _doc(m).get("state", {}).get("reported", {}).get("connected") is False
        ),
        limit + 2,
        since=t_kill,
    )
    if m is None:
        return [
            cl.not_met(
                "lens.offline_state",
                f"no reported.connected=false within {limit:.0f} s of power-off",
            )
        ]
    ev = [
        f"{stamp(t_kill)} kit power cut",
        f"{stamp(m.t)} {m.topic}: {m.excerpt()}",
        f"offline after {m.t - t_kill:.2f} s (limit 1.5 x keepalive = {limit:.0f} s)",
    ]
    gone = obs.find(
        lambda m: m.topic == f"$aws/events/presence/disconnected/{s.thing}", since=t_kill
    )
    if gone is not None:
        ev.append(f"lifecycle event {gone.topic}: {gone.excerpt(200)}")
    return [cl.met("lens.offline_state", *ev)]


POWER = "a power switch (a cold start with the RTC at its reset value, or a power cut)"
CHECKS: list[Check] = [
    Check("online message", ("app1.online_topic",), _online_topic),
    Check("shadow online and synced", ("app1.shadow_online", "lens.shadow_sync"), _shadow),
    Check("subscription (ping/pong)", ("app1.subscribe",), _subscribe),
    Check("time before connect", ("lens.time_before_connect",), _time, ("power_cut",), needs=POWER),
    Check("TLS 1.2", ("hw.tls12",), _tls),
    Check("certificate authentication", ("hw.cert_auth",), _cert_auth),
    Check("no hard-coded endpoints", ("hw.no_hardcoded_urls",), _static),
    Check(
        "App #2, configuration, diagnostics, timestamps",
        ("lens.config_via_shadow", "app2.*", "lens.diagnostics", "lens.timestamps"),
        _app2,
    ),
    Check(
        "store and forward",
        ("lens.store_forward",),
        _store_forward,
        cloud_needs=("broker_control",),
        needs=f"a cloud whose broker the validator can stop (the local bench); {NOT_ON_CLOUD}",
    ),
    Check(
        "updates",
        ("lens.signed_updates", "lens.staged_rollout", "lens.rollback"),
        _updates,
        ("virtual_kit",),
        ("jobs",),
        needs="three more kits made on this host (the virtual kit) and the bench's Jobs service",
    ),
    Check(
        "offline after a power cut", ("lens.offline_state",), _offline, ("power_cut",), needs=POWER
    ),
]


def check_for(item_id: str) -> Check:
    """The check that shows ``item_id`` (``app2.<c>``: the App #2 check), for the HIL
    suite, which runs the same code as validate on its own kits."""
    want = catalog.APP2_ALL if item_id.startswith("app2.") else item_id
    for c in CHECKS:
        if want in c.items:
            return c
    raise KeyError(item_id)
