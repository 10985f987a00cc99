"""``thingkit view --cloud remote``: the page filled from MQTT only, in a real browser.

A bench and a virtual kit (the real firmware on the MicroPython unix port) are started on
their own; the view is then started as a separate process that knows only the bench's
endpoint, an operator certificate and key and the CA (copied out of the bench's
directory), the way ``thingkit validate --cloud remote`` reaches it (see
tests/host/test_validate_targets.py). ``THINGKIT_HOME`` points at an empty directory, so
no bench or kit of this machine can be found by default, and the test checks the view
process has no file of the bench open. The page must list the kit online, show a
telemetry point arrive, write a desired value the kit reports, show a pending job from
the jobs notification, turn the kit offline on a power cut, and say "not available from
this cloud" where it cannot know (certificate, console, refused connections, rollouts,
cancelling, revoking).

This is a bench reached as a remote cloud, not AWS IoT Core: no AWS account is reachable
from where thingkit is built.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.errors import UserError
from host_tools.paths import REPO
from host_tools.view.model import FleetModel
from host_tools.view.remote import NOT_HERE, view_topics

# One worker runs this module, in order: its tests share one bench, kit and view.
pytestmark = pytest.mark.xdist_group("view-remote")

MOSQUITTO = Path("/usr/sbin/mosquitto")
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "reports" / "view"
THING = "kit-remote-view"
FAKE = "remote-view-jobs"  # a device session that only takes jobs
ABSENT = "kit-never-seen"


def run_view(*argv: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "host_tools.view", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "THINGKIT_HOME": str(home)},
        check=False,
    )


# -- without a broker ----------------------------------------------------------------------
def test_the_remote_topics_are_named_one_by_one() -> None:
    t = view_topics("kit-1", "tk")
    every = t["receive"] + t["publish"]
    assert not [x for x in every if "+" in x or "#" in x]  # AWS policies allow no wildcard
    assert "tk/kit-1/status" in t["receive"] and "$aws/things/kit-1/jobs/notify" in t["receive"]
    assert "$aws/events/presence/disconnected/kit-1" in t["receive"]
    assert "$aws/things/kit-1/shadow/name/app2/get/accepted" in t["receive"]
    assert "$aws/things/kit-1/shadow/update" in t["publish"]


def test_shadow_get_and_pending_jobs_feed_the_model() -> None:
    m = FleetModel("thingkit")
    doc = {"state": {"reported": {"connected": True, "fw": "1.0.0", "board": "sim"}},
           "metadata": {"reported": {"connected": {"timestamp": 1000}}}, "version": 4}  # fmt: skip
    ch = m.ingest("$aws/things/k1/shadow/get/accepted", json.dumps(doc).encode(), 2000.0, False)
    assert ch is not None and ch.kinds == {"row", "shadow"}
    row = m.things["k1"].row()
    assert (row["online"], row["since"], row["fw"]) == (True, 1000, "1.0.0")
    # An update seen since the get is newer: an older get answer changes nothing.
    doc["version"] = 3
    assert (
        m.ingest("$aws/things/k1/shadow/get/accepted", json.dumps(doc).encode(), 1, False) is None
    )
    note = {"jobs": {"QUEUED": [{"jobId": "j1", "queuedAt": 5}]}, "timestamp": 6}
    ch = m.set_pending_jobs("k1", json.dumps(note).encode())
    assert ch is not None and [(j["jobId"], j["status"]) for j in m.things["k1"].jobs] == [
        ("j1", "QUEUED")
    ]
    assert m.set_pending_jobs("k1", json.dumps(note).encode()) is None  # nothing new
    got = {"inProgressJobs": [], "queuedJobs": [], "timestamp": 7}
    assert m.set_pending_jobs("k1", json.dumps(got).encode()) is not None
    assert m.things["k1"].jobs == []


def test_remote_options_are_checked_in_one_line(tmp_path: Path) -> None:
    p = run_view("--cloud", "remote", "--endpoint", "h.example", home=tmp_path)
    assert (p.returncode, p.stdout) == (1, "")
    assert p.stderr.strip() == (
        "thingkit: --cloud remote needs --operator-cert FILE, --operator-key FILE"
    )
    p = run_view("--endpoint", "h.example", home=tmp_path)
    assert p.returncode == 1 and p.stderr.startswith("thingkit: --endpoint, --operator-cert")
    (tmp_path / "op.crt").write_text("x")
    (tmp_path / "op.key").write_text("x")
    p = run_view(
        "--cloud", "remote", "--endpoint", "h.example", "--operator-cert",
        str(tmp_path / "op.crt"), "--operator-key", str(tmp_path / "op.key"), home=tmp_path,
    )  # fmt: skip
    assert p.returncode == 1 and p.stderr.startswith(
        "thingkit: --cloud remote needs the things to follow"
    )
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr
    p = run_view(
        "--cloud", "remote", "--endpoint", "h.example", "--operator-cert",
        str(tmp_path / "op.crt"), "--operator-key", str(tmp_path / "op.key"),
        "--things", "a", "--host", "0.0.0.0", home=tmp_path,
    )  # fmt: skip
    assert p.stderr.startswith("thingkit: refusing to serve the view on 0.0.0.0 without --token")


def test_a_bundle_names_the_thing_prefix_and_endpoint(tmp_path: Path) -> None:
    import argparse

    from host_tools.view.cli import add_arguments, remote_spec

    (tmp_path / "config.json").write_text(
        json.dumps({"thing_name": "kit-b", "mqtt": {"endpoint": "h.example", "topic_prefix": "tk"}})
    )
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(
        ["--cloud", "remote", "--bundle", str(tmp_path), "--things", "kit-a",
         "--operator-cert", "c", "--operator-key", "k"]
    )  # fmt: skip
    spec = remote_spec(args)
    assert spec is not None
    assert (spec.endpoint, spec.port, spec.prefix) == ("h.example", 8883, "tk")
    assert spec.things == ["kit-a", "kit-b"] and spec.client_id.startswith("thingkit-view-")
    args = p.parse_args(["--cloud", "remote", "--endpoint", "h:9", "--things", "a/#"])
    args.operator_cert = args.operator_key = Path("x")
    with pytest.raises(UserError, match="bad thing name 'a/#'"):
        remote_spec(args)
    args = p.parse_args(["--cloud", "remote", "--endpoint", "h:x"])
    args.operator_cert = args.operator_key = Path("x")
    with pytest.raises(UserError, match="bad --endpoint 'h:x'"):
        remote_spec(args)


def test_an_unusable_identity_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "op.crt").write_text("not a certificate")
    (tmp_path / "op.key").write_text("not a key")
    p = run_view(
        "--cloud", "remote", "--endpoint", "localhost:1", "--operator-cert",
        str(tmp_path / "op.crt"), "--operator-key", str(tmp_path / "op.key"),
        "--things", "a", home=tmp_path,
    )  # fmt: skip
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith("thingkit: the operator certificate and key do not load")
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr


# -- a bench reached as a remote cloud ---------------------------------------------------
# ``python -m host_tools.view`` with an audit hook that logs every file Python opens
# (PEP 578 "open" events), to show the view reads no file of the bench.
AUDITED = """
import os, runpy, sys
log = open(os.environ["VIEW_OPEN_LOG"], "a", buffering=1)
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        log.write(os.fsdecode(args[0]) + "\\n")
sys.addaudithook(hook)
runpy.run_module("host_tools.view", run_name="__main__", alter_sys=True)
"""


def start_remote_view(
    args: list[str], home: Path, open_log: Path
) -> tuple[subprocess.Popen, str, float]:
    """The view in remote mode on a free port, with every file it opens logged to
    ``open_log``; (process, URL, seconds to its first line)."""
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-c", AUDITED, "--port", "0", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "THINGKIT_HOME": str(home), "VIEW_OPEN_LOG": str(open_log)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("thingkit view: http://"):
        proc.kill()
        raise AssertionError(f"view did not start: {line!r} {proc.stderr.read()}")  # type: ignore[union-attr]
    return proc, line.split()[2], time.time() - t0


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
    from host_tools.bench.jobs_service import DeviceSession
    from host_tools.bench.layout import OPERATOR_CN
    from host_tools.bench.observer import Observer
    from host_tools.kit.provision import create_sim_kit

    tmp = tmp_path_factory.mktemp("view-remote")
    elsewhere = tmp / "elsewhere"  # the "cloud": a bench of its own, with its kit
    bench = Bench(elsewhere / "bench")
    bench.up()
    try:  # nothing made must leave the bench running
        kit = create_sim_kit(bench, elsewhere / "kits", THING, telemetry_interval_s=2)
        dev = DeviceSession.create(bench, FAKE, elsewhere)
    except BaseException:
        bench.down()
        raise
    # What an operator is handed: an endpoint, a certificate, a key and a CA file.
    op = tmp / "operator"
    op.mkdir()
    cert, key = bench.layout.identity(OPERATOR_CN)
    for src, name in ((cert, "operator.crt"), (key, "operator.key")):
        shutil.copy(src, op / name)
    shutil.copy(bench.layout.server_ca_pem, op / "ca.pem")
    args = [
        "--cloud", "remote", "--endpoint", f"localhost:{bench.port}",
        "--operator-cert", str(op / "operator.crt"), "--operator-key", str(op / "operator.key"),
        "--ca", str(op / "ca.pem"), "--things", f"{THING},{FAKE},{ABSENT}",
    ]  # fmt: skip
    home = tmp / "empty-home"
    home.mkdir()
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
        proc, url, started = start_remote_view(args, home, tmp / "opened.log")
        yield {
            "bench": bench, "kit": kit, "obs": obs, "url": url, "proc": proc, "dev": dev,
            "started_s": started, "args": args, "home": home, "root": elsewhere,
            "opened": tmp / "opened.log",
        }  # fmt: skip
    finally:
        if proc is not None:
            stop(proc)
        kit.power_off()
        dev.close()
        obs.stop()
        bench.down()


@pytest.mark.slow
def test_the_view_reads_no_bench_file(rig: dict) -> None:
    import urllib.request

    urllib.request.urlopen(rig["url"], timeout=10).read()  # the page: a file the view reads
    opened = rig["opened"].read_text().splitlines()
    assert any(p.endswith("host_tools/view/static/index.html") for p in opened), opened[-20:]
    root = str(rig["root"])
    assert [p for p in opened if p.startswith(root)] == []  # no file of the bench or its kits
    assert rig["started_s"] < 30


@pytest.mark.slow
def test_a_wrong_ca_is_one_line(rig: dict) -> None:
    args = list(rig["args"])
    ca = args.index("--ca") + 1
    args[ca] = args[args.index("--operator-cert") + 1]  # not the CA of the broker's certificate
    p = run_view(*args, home=rig["home"])
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith(
        f"thingkit: the TLS handshake with localhost:{rig['bench'].port} failed"
    )
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr


@pytest.mark.slow
def test_refused_actions_say_why(rig: dict) -> None:
    import urllib.error
    import urllib.request

    url = rig["url"]
    page = urllib.request.urlopen(url, timeout=10).read().decode()
    assert "remote cloud localhost:" in page
    csrf = page.split('name="thingkit-csrf" content="')[1].split('"')[0]
    hdr = {"Content-Type": "application/json", "X-Thingkit-CSRF": csrf}

    def post(path: str, body: dict, headers: dict) -> tuple[int, dict]:
        req = urllib.request.Request(url + path, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    code, doc = post(f"api/things/{THING}/revoke", {"reason": "x"}, hdr)
    assert code == 409 and doc["error"].startswith(f"{NOT_HERE}: revoking changes")
    code, doc = post("api/jobs/j1/cancel", {}, hdr)
    assert code == 409 and doc["error"].startswith(f"{NOT_HERE}: jobs are cancelled")
    # The security rules are those of the bench mode: no CSRF token, no action.
    code, doc = post(
        f"api/things/{THING}/desired", {"desired": {"a": 1}}, {"Content-Type": "application/json"}
    )
    assert (code, doc["error"]) == (403, "missing or wrong CSRF token")


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
    pg.on("dialog", lambda d: d.accept())
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
        assert errors == [], errors
    finally:
        ctx.close()


@pytest.mark.slow
def test_remote_page_lists_the_kit_online(page: object, rig: dict) -> None:
    page.goto(rig["url"])  # type: ignore[attr-defined]
    row = page.locator(f'tr[data-thing="{THING}"][data-online="true"]')  # type: ignore[attr-defined]
    row.wait_for(timeout=15_000)
    assert "sim" in row.inner_text()  # the board, from the shadow asked with get
    # A thing the cloud never spoke of stays unknown, not offline.
    absent = page.locator(f'tr[data-thing="{ABSENT}"]')  # type: ignore[attr-defined]
    assert absent.get_attribute("data-online") == "null" and "unknown" in absent.inner_text()
    note = page.inner_text("#unavailable-note")  # type: ignore[attr-defined]
    assert note.startswith(f"Refused connections: {NOT_HERE}")
    page.goto(rig["url"] + "#/rollouts")  # type: ignore[attr-defined]
    # wait for the text: inner_text() returns whatever is there yet (seen: "")
    page.locator("#rollouts", has_text=f"Rollouts: {NOT_HERE}").wait_for(timeout=10_000)  # type: ignore[attr-defined]


@pytest.mark.slow
def test_remote_kit_page_telemetry_and_unavailable_fields(page: object, rig: dict) -> None:
    page.goto(rig["url"] + f"#/kit/{THING}")  # type: ignore[attr-defined]
    chart = page.locator('.chart[data-series="env.temperature"]')  # type: ignore[attr-defined]
    chart.wait_for(timeout=15_000)
    page.evaluate("window.__noReload = 1")  # type: ignore[attr-defined]
    n0 = int(chart.get_attribute("data-n"))
    page.wait_for_function(  # type: ignore[attr-defined]
        f"""() => +document.querySelector('.chart[data-series="env.temperature"]')
                .dataset.n > {n0}""",
        timeout=15_000,
    )
    assert page.evaluate("window.__noReload") == 1  # type: ignore[attr-defined]
    cert = page.locator("#kit-cert")  # type: ignore[attr-defined]
    assert cert.get_attribute("data-revoked") == "unknown"
    assert f"{NOT_HERE}: certificates live in the cloud's registry" in cert.inner_text()
    assert page.is_disabled("#revoke")  # type: ignore[attr-defined]
    assert page.inner_text("#kit-console").startswith(f"Console: {NOT_HERE}")  # type: ignore[attr-defined]
    assert f"cancelling: {NOT_HERE}" in page.inner_text("#kit-jobs")  # type: ignore[attr-defined]
    page.wait_for_selector('.shadow[data-shadow="classic"]')  # type: ignore[attr-defined]
    page.screenshot(path=str(SHOTS / "remote-kit.png"), full_page=True)  # type: ignore[attr-defined]


@pytest.mark.slow
def test_remote_desired_value_reaches_the_kit(page: object, rig: dict) -> None:
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
    doc = rig["obs"].shadow_get(THING)
    assert doc["state"]["reported"]["settings"]["telemetry_interval_s"] == 3


@pytest.mark.slow
def test_a_pending_job_shows_from_its_notification(page: object, rig: dict) -> None:
    from host_tools.bench.jobs_service import JobsOperator

    page.goto(rig["url"] + f"#/kit/{FAKE}")  # type: ignore[attr-defined]
    page.wait_for_selector("#link.live")  # type: ignore[attr-defined]
    with JobsOperator(rig["bench"]) as ops:  # the cloud's control plane, not the view
        ops.create_job("rv1", {"operation": "thingkit.ota", "version": "9.9.9"}, [FAKE])
    page.wait_for_selector('#kit-jobs tr[data-job="rv1"]', timeout=10_000)  # type: ignore[attr-defined]
    assert "QUEUED" in page.inner_text('#kit-jobs tr[data-job="rv1"]')  # type: ignore[attr-defined]
    assert page.locator("#kit-jobs button.cancel").count() == 0  # type: ignore[attr-defined]


@pytest.mark.slow
def test_remote_power_cut_turns_the_kit_offline(page: object, rig: dict) -> None:
    obs, kit = rig["obs"], rig["kit"]
    page.goto(rig["url"])  # type: ignore[attr-defined]
    page.locator(f'tr[data-thing="{THING}"][data-online="true"]').wait_for(timeout=15_000)  # type: ignore[attr-defined]
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
    assert (m := will.json()) and m["reason"] == "connection_lost"
    lag = seen - will.t
    print(f"offline on the remote page {lag:.2f} s after the Last Will")
    assert lag <= 2.0, f"offline on the page {lag:.2f} s after the Last Will"
    assert page.evaluate("window.__noReload") == 1  # type: ignore[attr-defined]
    # The lifecycle event (subscribed by name) gives the broker's account.
    page.wait_for_function(  # type: ignore[attr-defined]
        f"""() => document.querySelector('tr[data-thing="{THING}"]').textContent
                .includes('Last Will (connection lost) · connection lost (no DISCONNECT)')""",
        timeout=5_000,
    )
    page.screenshot(path=str(SHOTS / "remote-power-cut.png"))  # type: ignore[attr-defined]


@pytest.mark.slow
def test_the_remote_view_follows_a_broker_restart(page: object, rig: dict) -> None:
    """After the broker restarts, the view connects again, subscribes again and asks the
    shadows again: the kit powered on afterwards shows online without a reload."""
    bench, kit = rig["bench"], rig["kit"]
    kit.power_off()  # off whatever ran before (a no-op after the power-cut test)
    page.goto(rig["url"])  # type: ignore[attr-defined]
    page.locator(f'tr[data-thing="{THING}"][data-online="false"]').wait_for(timeout=15_000)  # type: ignore[attr-defined]
    page.evaluate("window.__noReload = 1")  # type: ignore[attr-defined]
    bench.restart_broker()
    kit.power_on()
    page.locator(f'tr[data-thing="{THING}"][data-online="true"]').wait_for(timeout=90_000)  # type: ignore[attr-defined]
    assert page.evaluate("window.__noReload") == 1  # type: ignore[attr-defined]
    assert rig["proc"].poll() is None
