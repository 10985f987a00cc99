"""``thingkit view`` in a real browser: Debian's Chromium driven by Playwright.

One bench, one virtual kit (the real firmware on the MicroPython unix port) and the view
server (``python -m host_tools.view``, a separate process as a person runs it) serve the
whole module. The page must list the kit online, show telemetry points arriving, write
a desired setting the kit then reports, show a rollout advance, and turn the kit offline
within 2 s of its Last Will when its power is cut, all without reloading. Screenshots
are kept in ``reports/view/``.

The model and the security checks also have browser-free tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.paths import REPO
from host_tools.view.model import FleetModel, Series, disconnect_reason

# One worker runs this module, in order: its tests share one bench, kit and view.
pytestmark = pytest.mark.xdist_group("view")

MOSQUITTO = Path("/usr/sbin/mosquitto")
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "reports" / "view"
THING = "kit-view"


# -- the model, without a bench ---------------------------------------------------------
def test_last_will_and_lifecycle_events_make_the_disconnect_reason() -> None:
    m = FleetModel("thingkit")
    m.ingest("thingkit/k1/status", b'{"state":"online","fw":"0.1.0"}', 100.0, False)
    assert m.things["k1"].row()["online"] is True and m.things["k1"].since == 100.0
    will = b'{"thing":"k1","state":"offline","fw":"0.1.0","reason":"connection_lost"}'
    ch = m.ingest("thingkit/k1/status", will, 130.0, False)
    assert ch is not None and ch.kinds == {"row"}
    # The bench's lifecycle event (as AWS IoT publishes it) says how the link ended.
    event = {"clientId": "k1", "eventType": "disconnected", "disconnectReason": "CONNECTION_LOST"}
    m.ingest("$aws/events/presence/disconnected/k1", json.dumps(event).encode(), 130.1, False)
    row = m.things["k1"].row()
    assert (row["online"], row["since"]) == (False, 130.0)
    assert row["reason"] == "Last Will (connection lost) · connection lost (no DISCONNECT)"
    event["disconnectReason"] = "MQTT_KEEP_ALIVE_TIMEOUT"
    m.ingest("$aws/events/presence/disconnected/k1", json.dumps(event).encode(), 140.0, False)
    assert m.things["k1"].row()["reason"].endswith(" · keep-alive timeout")
    # The operator's own client is no thing: no row for it.
    event["clientId"] = "view-1234"
    assert (
        m.ingest(
            "$aws/events/presence/disconnected/view-1234", json.dumps(event).encode(), 1, False
        )
        is None
    )
    assert "view-1234" not in m.things
    # A connection the broker refused has no session, so no event: its log line tells.
    got = disconnect_reason("2026-12-03T13:00:00: Client k3 disconnected, not authorised.")
    assert got == ("k3", "refused (not authorised)")
    assert disconnect_reason("x: New client connected from 127.0.0.1 as k1") is None


def test_telemetry_keeps_an_hour_of_numbers_only() -> None:
    m = FleetModel("thingkit")
    for i in range(5):
        doc = {"readings": {"env": {"temperature": 20 + i, "ok": True}, "led": {"on": False}}}
        m.ingest("thingkit/k1/telemetry", json.dumps(doc).encode(), 1000.0 + 1000 * i, False)
    view = m.things["k1"].telemetry_view()
    assert list(view) == ["env"] and list(view["env"]) == ["temperature"]  # bools left out
    assert [p[1] for p in view["env"]["temperature"]] == [21.0, 22.0, 23.0, 24.0]  # > 1 h gone
    s = Series()
    for i in range(1000):
        s.add(float(i), 1.0)
    assert len(s.t) == 720 and s.t[0] == 280.0


def test_shadow_documents_give_state_fw_board_and_delta() -> None:
    m = FleetModel("thingkit")
    cur = {
        "state": {
            "desired": {"settings": {"telemetry_interval_s": 5}},
            "reported": {"connected": True, "fw": "1.2.0", "board": "sim", "settings": {}},
        },
        "metadata": {},
        "version": 7,
    }
    doc = json.dumps({"current": cur, "timestamp": 1}).encode()
    m.ingest("$aws/things/k1/shadow/update/documents", doc, 50.0, False)
    row = m.things["k1"].row()
    assert (row["online"], row["fw"], row["board"]) == (True, "1.2.0", "sim")
    classic = m.things["k1"].shadow_view()["classic"]
    assert classic["version"] == 7
    assert classic["delta"] == {"settings": {"telemetry_interval_s": 5}}


def test_rollout_stages_and_target_version() -> None:
    m = FleetModel("thingkit")
    doc = {"operation": "thingkit.ota", "version": "2.0.0"}
    abort = {"criteriaList": [{"failureType": "ALL", "thresholdPercentage": 20.0}]}
    jobs = [
        {
            "jobId": "r1-canary",
            "status": "COMPLETED",
            "document": doc,
            "createdAt": 1,
            "executions": [{"thingName": "a", "status": "SUCCEEDED", "queuedAt": 1}],
        },
        {
            "jobId": "r1",
            "status": "IN_PROGRESS",
            "document": doc,
            "createdAt": 2,
            "abortConfig": abort,
            "executions": [
                {"thingName": "b", "status": "FAILED", "queuedAt": 2},
                {"thingName": "c", "status": "QUEUED", "queuedAt": 2},
            ],
        },
    ]
    assert sorted(m.set_jobs(jobs)) == ["a", "b", "c"]
    assert (m.things["a"].target, m.things["b"].target, m.things["c"].target) == (
        "2.0.0",
        "",
        "2.0.0",
    )
    (r,) = m.rollouts()
    assert r["state"] == "in progress" and r["stages"]["rest"]["failure_rate"] == 100.0
    assert r["stages"]["rest"]["abort_threshold"] == 20.0
    assert m.set_jobs(jobs) == []  # nothing changed


def test_non_loopback_bind_without_token_is_refused_in_one_line(tmp_path: Path) -> None:
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "host_tools.view",
            "--host",
            "0.0.0.0",
            "--bench-root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith("thingkit: refusing to serve the view on 0.0.0.0 without --token")
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr


def test_a_bench_that_is_down_is_one_line(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "host_tools.view", "--bench-root", str(tmp_path / "bench")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert (p.returncode, p.stdout) == (1, "")
    assert p.stderr.startswith(
        "thingkit: the bench is not running; start it with: thingkit bench up"
    )
    assert len(p.stderr.splitlines()) == 1


# -- a bench, a kit, the server ---------------------------------------------------------
def start_view(root: Path, kits: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """Run the view server on a free port; (process, base URL)."""
    argv = [sys.executable, "-m", "host_tools.view", "--bench-root", str(root), "--port", "0"]
    argv += ["--kits", str(kits), *extra]
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once it listens
    if not line.startswith("thingkit view: http://"):
        proc.kill()
        raise AssertionError(f"view did not start: {line!r} {proc.stderr.read()}")  # type: ignore[union-attr]
    return proc, line.split()[2]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto not installed (bash scripts/dev.sh setup installs it)")
    from host_tools.bench.bench import Bench
    from host_tools.bench.observer import Observer
    from host_tools.kit.provision import create_sim_kit

    tmp = tmp_path_factory.mktemp("view")
    bench = Bench(tmp / "bench")
    bench.up()
    try:  # a kit that cannot be made must not leave the bench running
        kit = create_sim_kit(bench, tmp / "kits", THING, telemetry_interval_s=2)
    except BaseException:
        bench.down()
        raise
    obs = Observer(bench)
    proc = None
    try:
        obs.start()
        t0 = time.time()
        kit.power_on()
        online = obs.wait(
            lambda m: (
                m.topic == f"thingkit/{THING}/status" and (m.json() or {}).get("state") == "online"
            ),
            90,
            since=t0,
        )
        assert online is not None, kit.console()
        proc, url = start_view(bench.layout.root, tmp / "kits")
        yield {"bench": bench, "kit": kit, "obs": obs, "url": url, "tmp": tmp}
    finally:
        if proc is not None:
            stop(proc)
        kit.power_off()
        obs.stop()
        bench.down()


def post(url: str, body: object, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(
        url,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.mark.slow
def test_actions_need_the_csrf_token_and_a_same_origin(rig: dict) -> None:
    url = rig["url"]
    page = urllib.request.urlopen(url, timeout=10).read().decode()
    csrf = page.split('name="thingkit-csrf" content="')[1].split('"')[0]
    target = f"{url}api/things/{THING}/desired"
    body = {"desired": {"settings": {"log_level": "info"}}}
    code, doc = post(target, body)
    assert (code, doc["error"]) == (403, "missing or wrong CSRF token")
    code, doc = post(target, body, {"X-Thingkit-CSRF": "guess"})
    assert code == 403
    hdr = {"X-Thingkit-CSRF": csrf, "Origin": "http://evil.example"}
    code, doc = post(target, body, hdr)
    assert (code, doc["error"]) == (403, "cross-origin request from http://evil.example")
    # A page of another site served from 127.0.0.1 by name (DNS rebinding) is refused.
    req = urllib.request.Request(url, headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 421
    # With the token and a same-origin request the action goes through.
    code, doc = post(target, body, {"X-Thingkit-CSRF": csrf, "Origin": url.rstrip("/")})
    assert code == 200 and doc["ok"] and doc["result"]["accepted"] is True


@pytest.mark.slow
def test_read_only_and_token(rig: dict) -> None:
    bench, tmp = rig["bench"], rig["tmp"]
    proc, url = start_view(bench.layout.root, tmp / "kits", "--read-only", "--token", "s3cret")
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url.split("?")[0], timeout=10)
        assert e.value.code == 401
        assert url.endswith("/?token=s3cret")
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'name="thingkit-readonly" content="1"' in page
        csrf = page.split('name="thingkit-csrf" content="')[1].split('"')[0]
        hdr = {"X-Thingkit-CSRF": csrf, "Authorization": "Bearer s3cret"}
        code, doc = post(url.split("?")[0] + "api/jobs/x/cancel", {}, hdr)
        assert (code, doc["error"]) == (403, "the view is read-only (--read-only)")
    finally:
        stop(proc)


# -- in the browser ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(rig: dict) -> Iterator[object]:
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (bash scripts/dev.sh setup installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (bash scripts/dev.sh setup installs it)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            args=["--no-sandbox"] if os.geteuid() == 0 else [],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: object, rig: dict) -> Iterator[object]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    pg = ctx.new_page()
    pg.on("dialog", lambda d: d.accept())  # the confirmations of actions
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
        assert errors == [], errors
    finally:
        ctx.close()


@pytest.mark.slow
def test_page_lists_the_kit_online(page: object, rig: dict) -> None:
    page.goto(rig["url"])  # type: ignore[attr-defined]
    row = page.locator(f'tr[data-thing="{THING}"][data-online="true"]')  # type: ignore[attr-defined]
    row.wait_for(timeout=10_000)
    assert "online" in row.inner_text() and "sim" in row.inner_text()
    page.wait_for_selector("#link.live")  # type: ignore[attr-defined]
    page.screenshot(path=str(SHOTS / "fleet.png"))  # type: ignore[attr-defined]


@pytest.mark.slow
def test_telemetry_points_arrive_without_reload(page: object, rig: dict) -> None:
    page.goto(rig["url"] + f"#/kit/{THING}")  # type: ignore[attr-defined]
    chart = page.locator('.chart[data-series="env.temperature"]')  # type: ignore[attr-defined]
    chart.wait_for(timeout=10_000)
    page.evaluate("window.__noReload = 1")  # type: ignore[attr-defined]
    n0 = int(chart.get_attribute("data-n"))
    # The kit publishes every 2 s: a new point shows up in the chart.
    page.wait_for_function(  # type: ignore[attr-defined]
        f"""() => +document.querySelector('.chart[data-series="env.temperature"]')
                .dataset.n > {n0}""",
        timeout=15_000,
    )
    assert page.evaluate("window.__noReload") == 1  # type: ignore[attr-defined]
    assert "shadow synced" in page.inner_text("#kit-console")  # type: ignore[attr-defined]
    cert = page.inner_text("#kit-cert")  # type: ignore[attr-defined]
    assert f"CN={THING}" in cert and "PRIVATE" not in page.content()  # type: ignore[attr-defined]
    page.screenshot(path=str(SHOTS / "kit.png"), full_page=True)  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_desired_setting_changed_in_the_page_is_reported_by_the_kit(
    page: object, rig: dict
) -> None:
    page.goto(rig["url"] + f"#/kit/{THING}")  # type: ignore[attr-defined]
    page.wait_for_selector('.shadow[data-shadow="classic"]')  # type: ignore[attr-defined]
    page.select_option("#desired-key", "telemetry_interval_s")  # type: ignore[attr-defined]
    page.fill("#desired-value", "3")  # type: ignore[attr-defined]
    page.click("#desired-form button")  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        """() => {
            const r = document.querySelector('.shadow[data-shadow="classic"] pre.reported');
            return r && JSON.parse(r.textContent).settings.telemetry_interval_s === 3;
        }""",
        timeout=20_000,
    )
    assert page.inner_text("#desired-result").startswith("accepted")  # type: ignore[attr-defined]
    # The kit itself applied it: its shadow says so, and its readings come every 3 s.
    doc = rig["obs"].shadow_get(THING)
    assert doc["state"]["reported"]["settings"]["telemetry_interval_s"] == 3
    assert "delta" not in doc["state"]


@pytest.mark.slow
def test_a_rollout_advances_on_the_page(page: object, rig: dict) -> None:
    from host_tools.bench.jobs_service import DeviceSession, JobsOperator

    bench = rig["bench"]
    dev = DeviceSession.create(bench, "view-fake-ota", rig["tmp"])
    page.goto(rig["url"] + "#/rollouts")  # type: ignore[attr-defined]
    page.wait_for_selector("#link.live")  # type: ignore[attr-defined]
    try:
        doc = {"operation": "thingkit.ota", "version": "9.9.9"}
        with JobsOperator(bench) as ops:
            ops.create_job("vr1-canary", doc, ["view-fake-ota"])
        card = page.locator('[data-rollout="vr1"]')  # type: ignore[attr-defined]
        card.wait_for(timeout=10_000)
        assert "0/1 ended" in card.inner_text()
        status, _ = dev.jobs("start-next", statusDetails={"step": "download"})
        assert status == "accepted"
        status, _ = dev.jobs("update", "vr1-canary", status="SUCCEEDED")
        assert status == "accepted"
        page.wait_for_function(  # type: ignore[attr-defined]
            """() => (document.querySelector('[data-rollout="vr1"]')||{}).textContent
                   .includes('1/1 ended')""",
            timeout=10_000,
        )
        assert "SUCCEEDED" in card.inner_html()
        page.screenshot(path=str(SHOTS / "rollouts.png"))  # type: ignore[attr-defined]
        # A job cancelled from the page (confirmed in a dialog) ends CANCELED.
        with JobsOperator(bench) as ops:
            ops.create_job("vr2", doc, ["view-fake-ota"])
            page.locator('[data-rollout="vr2"] button.cancel').click(timeout=10_000)  # type: ignore[attr-defined]
            page.wait_for_function(  # type: ignore[attr-defined]
                """() => (document.querySelector('[data-rollout="vr2"]')||{}).textContent
                       .includes('vr2 (CANCELED)')""",
                timeout=10_000,
            )
            assert ops.describe_job("vr2")["status"] == "CANCELED"
    finally:
        dev.close()


@pytest.mark.slow
def test_a_power_cut_turns_the_kit_offline_within_2_s_of_the_last_will(
    page: object, rig: dict
) -> None:
    obs, kit = rig["obs"], rig["kit"]
    page.goto(rig["url"])  # type: ignore[attr-defined]
    page.locator(f'tr[data-thing="{THING}"][data-online="true"]').wait_for(timeout=10_000)  # type: ignore[attr-defined]
    page.evaluate("window.__noReload = 1")  # type: ignore[attr-defined]
    t0 = time.time()
    kit.power_off()
    offline = page.locator(f'tr[data-thing="{THING}"][data-online="false"]')  # type: ignore[attr-defined]
    offline.wait_for(timeout=30_000)
    seen = time.time()
    will = obs.wait(
        lambda m: (
            m.topic == f"thingkit/{THING}/status" and (m.json() or {}).get("state") == "offline"
        ),
        5,
        since=t0,
    )
    assert will is not None, "no Last Will on the broker"
    assert (m := will.json()) and m["reason"] == "connection_lost"  # the broker's, not the kit's
    assert seen - will.t <= 2.0, f"offline on the page {seen - will.t:.2f} s after the Last Will"
    assert page.evaluate("window.__noReload") == 1  # type: ignore[attr-defined]
    assert "Last Will" in offline.inner_text()
    # The broker's account of how the link ended follows: its lifecycle event.
    page.wait_for_function(  # type: ignore[attr-defined]
        f"""() => document.querySelector('tr[data-thing="{THING}"]').textContent
                .includes('Last Will (connection lost) · connection lost (no DISCONNECT)')""",
        timeout=5_000,
    )
    page.screenshot(path=str(SHOTS / "power-cut.png"))  # type: ignore[attr-defined]


@pytest.mark.slow
def test_revoking_the_certificate_from_the_page(page: object, rig: dict) -> None:
    from host_tools.bench.registry import crl_path
    from provisioning.revocation import RevocationList

    bench = rig["bench"]
    rig["kit"].power_off()  # (already off after the power cut; the broker restarts now)
    page.goto(rig["url"] + f"#/kit/{THING}")  # type: ignore[attr-defined]
    page.wait_for_selector('#kit-cert[data-revoked="false"]')  # type: ignore[attr-defined]
    # Revoking restarts the broker, which the view process stops; this process started
    # it, so it reaps it as a parent does (host_tools.bench.procs.stop waits for a pid to
    # be gone, and a child nobody reaps stays a zombie).
    broker = bench.state["broker_pid"]
    threading.Thread(target=os.waitpid, args=(broker, 0), daemon=True).start()
    page.click("#revoke")  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => document.querySelector('#revoke-result').textContent !== ''", timeout=60_000
    )
    assert page.inner_text("#revoke-result") == "revoked"  # type: ignore[attr-defined]
    page.wait_for_selector('#kit-cert[data-revoked="true"]', timeout=10_000)  # type: ignore[attr-defined]
    assert page.is_disabled("#revoke")  # type: ignore[attr-defined]
    fp = page.inner_text("#kit-cert").split("SHA-256 fingerprint")[1].split()[0]  # type: ignore[attr-defined]
    assert RevocationList(bench.layout.fleet_ca).is_revoked(fp)
    assert crl_path(bench).exists()
    page.goto(rig["url"])  # type: ignore[attr-defined]
    assert "revoked" in page.locator(f'tr[data-thing="{THING}"]').inner_text(timeout=10_000)  # type: ignore[attr-defined]
