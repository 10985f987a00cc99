"""Bad config and corrupt credentials: a clear console error, no crash loop, recovery."""

from __future__ import annotations

import json
import time

import pytest

from hil_tests.helpers import wait_connected

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("where", ["mqtt", "top"])
def test_bad_config_idles_with_clear_error_then_recovers(bench, make_kit, observer, where):
    kit = make_kit(bench)
    cfg_path = kit.flash / "config.json"
    good = cfg_path.read_text()
    doc = json.loads(good)
    # Only certificates are credentials, wherever in the file another one is written.
    (doc["mqtt"] if where == "mqtt" else doc)["password"] = "hunter2"
    cfg_path.write_text(json.dumps(doc))
    kit.power_on()
    field = "mqtt\\.password" if where == "mqtt" else "password"
    kit.wait_for(
        rf"E main: config: {field}: a credential other than the TLS certificate; only "
        r"certificates are accepted",
        10,
    )
    time.sleep(2)
    assert kit.is_running(), "a bad config must not stop the device"
    assert "Traceback" not in kit.console()
    assert "connecting to" not in kit.console()

    t_fix = time.time()
    cfg_path.write_text(good)
    assert wait_connected(observer, kit.thing, True, 20, since=t_fix), kit.console()


def test_unparsable_config_is_reported(bench, make_kit):
    kit = make_kit(bench)
    (kit.flash / "config.json").write_text("{not json")
    kit.power_on()
    kit.wait_for(r"E main: config: config\.json is not valid JSON", 10)
    assert kit.is_running()


def test_corrupt_certificate_keeps_retrying_without_crash(bench, make_kit):
    kit = make_kit(bench, backoff_base_ms=200, backoff_cap_ms=800)
    (kit.flash / "certs/device.crt.der").write_bytes(b"\x30\x82garbage")
    kit.power_on()
    kit.wait_for(r"reconnect in \d+ ms \(attempt 3,", 20)
    assert kit.is_running()
    assert "session ended" in kit.console()
