"""What a board receives never holds the virtual kit's image (its board layer and
emulators, the port and frozen stand-ins): deploy's payload and OTA app bundles."""

from __future__ import annotations

from host_tools.board_tools.deploy import firmware_payload
from host_tools.ota import bundle
from host_tools.paths import FIRMWARE, SIM_IMAGE


def _sim_like(path: str) -> bool:
    parts = path.split("/")
    return (
        parts[0] in ("sim_board", "port", "frozen")
        or any(p.startswith("sim_") or p.split(".")[0] == "sim" for p in parts)
        or (parts[0] == "hal" and parts[-1].split(".")[0] not in ("__init__", "esp32", "esp32_hw"))
    )


def test_the_sim_board_lives_outside_the_firmware() -> None:
    assert not list(FIRMWARE.rglob("sim*.py"))
    assert sorted(p.name for p in (FIRMWARE / "hal").glob("*.py")) == [
        "__init__.py",
        "esp32.py",
        "esp32_hw.py",
    ]
    assert (SIM_IMAGE / "sim_board" / "__init__.py").is_file()


def test_deploy_payload_has_no_sim_file() -> None:
    files = firmware_payload(FIRMWARE, mpy=True, with_pinned=True)
    assert "main.py" in files and "tk/mqtt.mpy" in files and "hal/esp32.mpy" in files
    assert "lib/umqtt/simple.mpy" in files
    bad = [p for p in files if _sim_like(p)]
    assert not bad, bad


def test_ota_app_bundle_has_no_sim_file() -> None:
    files = bundle.compile_app(FIRMWARE, "9.9.9")
    assert "tk/device.mpy" in files
    bad = [p for p in files if _sim_like(p)]
    assert not bad, bad


def test_the_check_would_see_a_sim_file() -> None:
    # The predicate the two tests use catches every kind of file the image holds.
    assert all(_sim_like(p) for p in ("hal/sim.mpy", "hal/sim_hw.mpy", "sim_board/hw.mpy"))
    assert all(_sim_like(p) for p in ("port/time.mpy", "frozen/umqtt/simple.mpy"))
    assert not any(_sim_like(p) for p in ("tk/device.mpy", "lib/umqtt/simple.mpy", "hal/esp32.mpy"))
