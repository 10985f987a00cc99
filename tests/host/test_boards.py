"""Tests for boards as data: the shipped board files, the checker's exact messages on planted
bad boards, the registry, and the ``boards`` CLI commands through ``register()``."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import pytest

from host_tools.boards import catalog, schema
from host_tools.boards.cli import register
from host_tools.boards.issues import Issues
from host_tools.boards.registry import (
    all_boards,
    board_files,
    check_boards,
    components,
    load_board,
)
from host_tools.boards.schema import check_data, check_file
from host_tools.errors import UserError
from host_tools.paths import BOARDS

SHIPPED = {
    "esp32-devkitc",
    "esp32-devkitc-ota",
    "esp32-devkitc-bme280",
    "esp32-s3-devkitc-1",
    "esp32-c3-devkitm-1",
    "m5stack-core2",
    "m5stack-atom-matrix",
    "sim",
    "sim-ota",
    "sim-romfs",
}

# A valid ESP32 board that the planted faults below each break in one place.
BASE = {
    "id": "planted",
    "name": "planted test board",
    "chip": "esp32",
    "flash_size": "4MB",
    "psram": False,
    # MicroPython's partitions-4MiB-ota.csv as v1.24.1 ships it (the -OTA image).
    "partitions": [
        {"name": "nvs", "type": "data", "subtype": "nvs", "offset": "0x9000", "size": "0x4000"},
        {"name": "otadata", "type": "data", "subtype": "ota", "offset": "0xd000", "size": "0x2000"},
        {
            "name": "phy_init",
            "type": "data",
            "subtype": "phy",
            "offset": "0xf000",
            "size": "0x1000",
        },
        {
            "name": "ota_0",
            "type": "app",
            "subtype": "ota_0",
            "offset": "0x10000",
            "size": "0x180000",
        },
        {
            "name": "ota_1",
            "type": "app",
            "subtype": "ota_1",
            "offset": "0x190000",
            "size": "0x180000",
        },
        {"name": "vfs", "type": "data", "subtype": "fat", "offset": "0x310000", "size": "0xf0000"},
    ],
    "filesystem": {"partition": "vfs", "type": "littlefs"},
    "buses": {"i2c0": {"kind": "i2c", "id": 0, "sda": 21, "scl": 22, "freq": 400000}},
    "components": [
        {
            "id": "mcu_temp",
            "kind": "mcu_temperature",
            "driver": "mcu_temp",
            "readings": {"raw": {"unit": "raw", "range": [0, 255]}},
        },
        {
            "id": "led",
            "kind": "led",
            "driver": "led",
            "pin": 4,
            "readings": {"on": {"unit": "bool"}},
        },
        {
            "id": "env",
            "kind": "i2c_sensor",
            "driver": "bme280",
            "bus": "i2c0",
            "address": 118,
            "readings": {
                "temperature": {"unit": "C", "range": [-40, 85]},
                "humidity": {"unit": "%RH", "range": [0, 100]},
                "pressure": {"unit": "hPa", "range": [300, 1100]},
            },
        },
    ],
}


def _board(**top) -> dict:
    d = copy.deepcopy(BASE)
    d.update(top)
    return d


def _comp(d: dict, cid: str) -> dict:
    return next(c for c in d["components"] if c["id"] == cid)


def _part(d: dict, name: str) -> dict:
    return next(p for p in d["partitions"] if p["name"] == name)


def _write(tmp_path: Path, d: dict) -> Path:
    path = tmp_path / f"{d['id']}.json"
    path.write_text(json.dumps(d, indent=1))
    return path


# -- shipped boards ------------------------------------------------------------------
def test_shipped_board_set():
    assert {p.stem for p in board_files()} == SHIPPED
    assert {b.id for b in all_boards()} == SHIPPED


@pytest.mark.parametrize("board_id", sorted(SHIPPED))
def test_every_shipped_board_passes_check(board_id):
    issues = check_file(BOARDS / f"{board_id}.json")
    assert [str(i) for i in issues] == []


def test_shipped_boards_use_only_catalogued_drivers_and_notes():
    for b in all_boards():
        assert {c["driver"] for c in b.components} <= catalog.KNOWN_DRIVERS
        assert b.data.get("notes"), b.id


def test_driver_names_are_one_set():
    assert catalog.KNOWN_DRIVERS == {
        "mcu_temp", "button", "led", "neopixel", "adc", "touch",
        "bme280", "sht31", "mpu6886", "axp192", "bm8563",
    }  # fmt: skip


# -- planted bad boards: each breaks one rule, with one exact error ------------------
def _led_on(pin: int):
    def f(d):
        _comp(d, "led")["pin"] = pin

    return f


def _s3(d):
    d["chip"] = "esp32s3"
    d["buses"]["i2c0"].update(sda=8, scl=9)
    _comp(d, "led")["pin"] = 27


def _c3(d):
    d["chip"] = "esp32c3"
    d["buses"]["i2c0"].update(sda=4, scl=5)
    _comp(d, "led")["pin"] = 13


def _bme280_on_gpio6(d):
    d["buses"]["i2c0"]["sda"] = 6


def _duplicate_id(d):
    d["components"].append(
        {"id": "env", "kind": "i2c_sensor", "driver": "sht31", "bus": "i2c0", "address": 0x44,
         "readings": {"humidity": {"unit": "%RH", "range": [0, 100]}}}
    )  # fmt: skip


def _unknown_driver(d):
    _comp(d, "env")["driver"] = "bme680"


def _missing_bus(d):
    _comp(d, "env")["bus"] = "i2c1"


def _duplicate_address(d):
    d["components"].append(
        {"id": "env2", "kind": "i2c_sensor", "driver": "sht31", "bus": "i2c0", "address": "0x76",
         "readings": {"humidity": {"unit": "%RH", "range": [0, 100]}}}
    )  # fmt: skip


def _overlap(d):
    _part(d, "ota_1")["offset"] = "0x180000"


def _misaligned(d):
    _part(d, "ota_1").update(offset="0x191000", size="0x17f000")


def _no_ota_1(d):
    d["partitions"] = [p for p in d["partitions"] if p["name"] != "ota_1"]


def _bad_range(d):
    _comp(d, "env")["readings"]["temperature"]["range"] = [85, -40]


def _no_unit(d):
    del _comp(d, "env")["readings"]["humidity"]["unit"]


def _psram_pin(d):
    d["psram"] = True
    _comp(d, "led")["pin"] = 16


def _octal_pin(d):
    _s3(d)
    d["octal_spi"] = True
    _comp(d, "led")["pin"] = 35


def _sim_input_only(d):
    d["chip"] = "sim"
    _comp(d, "led")["pin"] = 34


def _address_range(d):
    _comp(d, "env")["address"] = 0x78


def _fs_missing(d):
    d["filesystem"]["partition"] = "storage"


def _reserved(d):
    d["reserved_pins"] = [16, 17]
    _comp(d, "led")["pin"] = 17


def _touch(d):
    d["components"].append(
        {"id": "pad", "kind": "touch", "driver": "touch", "pin": 26,
         "readings": {"value": {"unit": "raw", "range": [0, 65535]}}}
    )  # fmt: skip


FLASH = "is an SPI flash pin on"
PLANTED = [
    ("led_on_gpio34", _led_on(34),
     "component 'led': GPIO34 is input-only on esp32; an led needs an output pin"),
    ("bme280_on_flash_pin", _bme280_on_gpio6,
     f"bus 'i2c0': sda: GPIO6 {FLASH} esp32 (GPIO6-11); it cannot be used"),
    ("s3_on_gpio27", _s3,
     "component 'led': GPIO27 is an SPI flash/PSRAM pin on esp32s3 (GPIO26-32); it cannot be used"),
    ("c3_on_gpio13", _c3,
     f"component 'led': GPIO13 {FLASH} esp32c3 (GPIO12-17); it cannot be used"),
    ("duplicate_id", _duplicate_id,
     "component 'env': duplicate component id; ids must be unique on a board"),
    ("unknown_driver", _unknown_driver,
     ("component 'env': unknown driver 'bme680' (known: adc, axp192, bm8563, bme280, button, "
     "led, mcu_temp, mpu6886, neopixel, sht31, touch)")),
    ("missing_bus", _missing_bus, "component 'env': bus 'i2c1' is not in \"buses\""),
    ("duplicate_i2c_address", _duplicate_address,
     "component 'env2': I2C address 0x76 on bus 'i2c0' is already used by component 'env'"),
    ("overlapping_partitions", _overlap,
     "partition 'ota_1': 0x180000-0x2fffff overlaps partition 'ota_0' (0x10000-0x18ffff)"),
    ("app_misaligned", _misaligned,
     "partition 'ota_1': app partition offset 0x191000 is not aligned to 64 KiB (0x10000)"),
    ("no_ota_1", _no_ota_1,
     "partitions: no ota_1 app partition; OTA needs otadata, ota_0 and ota_1"),
    ("range_min_not_below_max", _bad_range,
     "component 'env': reading 'temperature': range [85, -40] needs min < max"),
    ("missing_unit", _no_unit,
     "component 'env': reading 'humidity': no unit; every reading needs one"),
    ("psram_pin", _psram_pin,
     "component 'led': GPIO16 is a PSRAM pin on esp32 with PSRAM (GPIO16-17); it cannot be used"),
    ("octal_pin", _octal_pin,
     ("component 'led': GPIO35 is an octal flash/PSRAM pin on esp32s3 with octal_spi "
     "(GPIO33-37); it cannot be used")),
    ("nonexistent_pin", _led_on(20),
     "component 'led': GPIO20 does not exist on esp32 (GPIO0-19, 21-23, 25-27, 32-39)"),
    ("sim_follows_esp32", _sim_input_only,
     "component 'led': GPIO34 is input-only on sim; an led needs an output pin"),
    ("pin_shared_with_bus", _led_on(21),
     "component 'led': GPIO21 is already used by bus 'i2c0' (sda)"),
    ("i2c_address_range", _address_range,
     "component 'env': I2C address 0x78 is outside 0x08-0x77 (7-bit, not reserved)"),
    ("filesystem_partition_missing", _fs_missing,
     "filesystem: partition 'storage' is not in partitions"),
    ("reserved_pins", _reserved,
     "component 'led': GPIO17 is reserved on this board (reserved_pins); it cannot be used"),
    ("touch_on_non_touch_pin", _touch,
     ("component 'pad': GPIO26 is not a touch pin on esp32 "
     "(touch pins: GPIO0, 2, 4, 12-15, 27, 32-33)")),
]  # fmt: skip


def test_base_board_is_valid(tmp_path):
    assert list(check_file(_write(tmp_path, _board()))) == []


@pytest.mark.parametrize(
    ("mutate", "expected"), [p[1:] for p in PLANTED], ids=[p[0] for p in PLANTED]
)
def test_planted_bad_board_fails_with_exact_message(tmp_path, mutate, expected):
    d = _board()
    mutate(d)
    path = _write(tmp_path, d)
    issues = check_file(path)
    assert [str(i) for i in issues.errors] == [f"{path}: {expected}"]


def test_strapping_pin_warns_but_passes(tmp_path):
    d = _board()
    _comp(d, "led")["pin"] = 2
    path = _write(tmp_path, d)
    issues = check_file(path)
    assert issues.errors == []
    assert [str(i) for i in issues.warnings] == [
        (
            f"{path}: component 'led': GPIO2 is a strapping pin on esp32 (GPIO0, 2, 5, 12, 15); it "
            'must sit at its boot level during reset (set "ignore_strapping_warning": true when the '
            "board is designed for it)"
        )
    ]
    _comp(d, "led")["ignore_strapping_warning"] = True
    assert list(check_file(_write(tmp_path, d))) == []


def test_adc2_pin_warns_about_wifi(tmp_path):
    d = _board()
    d["components"].append(
        {"id": "adc0", "kind": "adc", "driver": "adc", "pin": 25,
         "readings": {"voltage": {"unit": "V", "range": [0, 3.3]}}}
    )  # fmt: skip
    issues = check_file(_write(tmp_path, d))
    assert issues.errors == []
    assert "is on ADC2, which Wi-Fi shares on esp32" in str(issues.warnings[0])


def test_octal_pins_free_without_octal_spi(tmp_path):
    d = _board()
    _s3(d)
    _comp(d, "led")["pin"] = 35
    assert check_file(_write(tmp_path, d)).errors == []


def test_id_must_match_file_name(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps(_board()))
    assert [str(i) for i in check_file(path).errors] == [
        f"{path}: id 'planted' does not match the file name (other.json)"
    ]


def test_invalid_json_is_one_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"id": "broken",\n')
    (err,) = check_file(path).errors
    assert str(err).startswith(f"{path}: not valid JSON: line 2")


def test_partition_beyond_flash(tmp_path):
    d = _board(flash_size="2MB")
    msgs = [str(i) for i in check_file(_write(tmp_path, d)).errors]
    assert any(
        "partition 'vfs': ends at 0x400000, beyond the 2MB flash (0x200000)" in m for m in msgs
    )


# -- the "image" object: boards describe MicroPython's stock images ---------------------
STOCK_OTA = {"micropython_board": "ESP32_GENERIC", "variant": "ota", "romfs": False,
             "frozen": {"umqtt.simple": "1.7.0"}}  # fmt: skip


def _stock_ota(d):
    """BASE as the v1.28.0 -OTA image describes it: no vfs row (made at boot)."""
    d["image"] = copy.deepcopy(STOCK_OTA)
    d["partitions"] = [p for p in d["partitions"] if p["name"] != "vfs"]


def test_stock_ota_board_is_valid_and_its_vfs_is_made_at_boot(tmp_path):
    d = _board()
    _stock_ota(d)
    assert list(check_file(_write(tmp_path, d))) == []
    b = load_board(_write(tmp_path, d))
    assert (b.filesystem_offset(), b.filesystem_size()) == (0x310000, 0xF0000)
    assert b.filesystem_at_runtime() and b.supports("ota-firmware") and b.supports("ota-app")
    assert set(b.accepted_tables()) == {"4MiB-ota-v1.24", "4MiB-ota"}


def _v124_table(d):
    _stock_ota(d)
    d["partitions"].append(
        {"name": "vfs", "type": "data", "subtype": "fat", "offset": "0x310000", "size": "0xf0000"}
    )


def _plain_with_ota_table(d):
    _stock_ota(d)
    d["image"]["variant"] = "plain"


def _ota_variant_without_slots(d):
    _stock_ota(d)
    d["partitions"] = [p for p in d["partitions"] if not p["name"].startswith("ota")]


def _unknown_image(d):
    _stock_ota(d)
    d["image"]["micropython_board"] = "ESP32_CUSTOM"


def _chip_mismatch(d):
    _stock_ota(d)
    d["image"].update(micropython_board="ESP32_GENERIC_S3", variant="plain")
    d["partitions"] = copy.deepcopy(json.loads((BOARDS / "sim.json").read_text())["partitions"])


def _frozen_mismatch(d):
    _stock_ota(d)
    d["image"]["frozen"] = {"umqtt.simple": "1.4.0"}


def _no_s3_ota(d):
    _stock_ota(d)
    d["chip"] = "esp32s3"
    d["buses"]["i2c0"].update(sda=8, scl=9)
    d["image"]["micropython_board"] = "ESP32_GENERIC_S3"


IMAGE_FAULTS = [
    ("v1.24_table_is_not_the_newest", _v124_table,
     ("partitions: must be the table of ESP32_GENERIC-OTA v1.28.0 (partitions-4MiB-ota.csv): "
      "'vfs' is not in the image's table")),
    ("plain_image_with_ota_table", _plain_with_ota_table,
     ("partitions: must be the table of ESP32_GENERIC v1.28.0 (partitions-4MiBplus.csv): "
      "'nvs' is data/nvs 0x9000+0x4000, the image has data/nvs 0x9000+0x6000")),
    ("unknown_micropython_board", _unknown_image,
     ("image: micropython_board 'ESP32_CUSTOM' must be one of ESP32_GENERIC, ESP32_GENERIC_S3, "
      "ESP32_GENERIC_C3, M5STACK_ATOM")),
    ("image_for_another_chip", _chip_mismatch,
     "image: ESP32_GENERIC_S3 is an image for esp32s3, the board is esp32"),
    ("frozen_not_the_stock_images", _frozen_mismatch,
     ('image: frozen must be {"umqtt.simple": "1.7.0"}: what ESP32_GENERIC v1.28.0 freezes that '
      "thingkit also ships")),
    ("no_ota_image_for_s3", _no_s3_ota,
     "image: MicroPython publishes no -OTA image of ESP32_GENERIC_S3"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "expected"), [p[1:] for p in IMAGE_FAULTS], ids=[p[0] for p in IMAGE_FAULTS]
)
def test_image_faults_fail_with_exact_message(tmp_path, mutate, expected):
    d = _board()
    mutate(d)
    path = _write(tmp_path, d)
    assert [str(i) for i in check_file(path).errors] == [f"{path}: {expected}"]


def test_ota_variant_needs_the_ota_slots(tmp_path):
    d = _board()
    _ota_variant_without_slots(d)
    msgs = [str(i).split(": ", 1)[1] for i in check_file(_write(tmp_path, d)).errors]
    assert (
        "partitions: no otadata partition (type data, subtype ota); OTA needs otadata, ota_0 and ota_1"
        in msgs
    )
    assert "partitions: no ota_0 app partition; OTA needs otadata, ota_0 and ota_1" in msgs


def test_shipped_boards_describe_stock_images():
    """Each shipped board's partitions are its image's table at the newest release, and the
    sim boards cover the plain, -OTA and ROMFS images."""
    images = {b.id: b.image for b in all_boards()}
    assert images["sim"] == {"micropython_board": "ESP32_GENERIC", "variant": "plain",
                             "romfs": False, "frozen": {"umqtt.simple": "1.7.0"}}  # fmt: skip
    assert images["sim-ota"]["variant"] == "ota" and images["sim-romfs"]["romfs"] is True
    assert all(i["romfs"] is False for k, i in images.items() if k != "sim-romfs")
    sim, sim_ota = load_board("sim"), load_board("sim-ota")
    assert not any(p.type == "app" and p.subtype.startswith("ota_") for p in sim.partitions)
    assert not sim.supports("ota-firmware") and sim_ota.supports("ota-firmware")
    assert sim.components == sim_ota.components == load_board("sim-romfs").components
    assert (sim.filesystem_offset(), sim.filesystem_size()) == (0x200000, 0x200000)
    assert (sim_ota.filesystem_offset(), sim_ota.filesystem_size()) == (0x310000, 0xF0000)


# -- registry ------------------------------------------------------------------------
def test_load_board_by_id():
    b = load_board("m5stack-core2")
    assert (b.chip, b.flash_bytes, b.psram) == ("esp32", 16 * 1024 * 1024, True)
    # ESP32_GENERIC-SPIRAM v1.26+: no vfs in the table; MicroPython makes it at boot
    # from the end of 'factory' (0x200000) to the end of the 16 MB flash.
    assert b.filesystem_offset() == 0x200000
    assert b.filesystem_size() == 0xE00000
    assert b.filesystem_at_runtime()
    assert b.component("imu")["address"] == 0x68
    assert b.has("mpu6886") and b.has("battery") and not b.has("bme280")


def test_load_board_by_path_and_refuses_errors(tmp_path):
    assert load_board(_write(tmp_path, _board())).id == "planted"
    d = _board()
    _comp(d, "led")["pin"] = 34
    path = _write(tmp_path, d)
    with pytest.raises(UserError, match="GPIO34 is input-only on esp32"):
        load_board(path)
    assert load_board(path, check=False).component("led")["pin"] == 34


def test_load_unknown_board():
    with pytest.raises(UserError, match="no board nope"):
        load_board("nope")


def test_components_resolve_buses():
    comps = {c["id"]: c for c in components("sim")}
    assert list(comps) == ["mcu_temp", "boot_button", "led", "env", "adc0", "imu"]
    assert comps["imu"]["bus"] == {
        "name": "i2c0", "kind": "i2c", "id": 0, "sda": 21, "scl": 22, "freq": 400000,
    }  # fmt: skip
    assert (comps["env"]["address"], comps["imu"]["address"]) == (0x76, 0x68)
    assert comps["boot_button"]["pin"] == 0
    # A copy: changing it leaves the board alone.
    comps["env"]["bus"]["sda"] = 99
    assert load_board("sim").buses["i2c0"]["sda"] == 21


def test_check_boards_accepts_ids_and_paths(tmp_path):
    reports = check_boards(["sim", str(_write(tmp_path, _board()))])
    assert [r.file for r in reports] == ["boards/sim.json", str(tmp_path / "planted.json")]
    assert all(not r for r in reports)


# -- CLI -----------------------------------------------------------------------------
def _run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="thingkit")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.func(args)


def test_cli_check_all_boards(capsys):
    assert _run(["boards", "check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{len(SHIPPED)} boards checked: 0 errors, 0 warnings"


def test_cli_check_bad_file_exits_1(tmp_path, capsys):
    d = _board()
    _comp(d, "led")["pin"] = 34
    path = _write(tmp_path, d)
    assert _run(["boards", "check", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"error: {path}: component 'led': GPIO34 is input-only on esp32; an led needs an output pin",
        "1 boards checked: 1 errors, 0 warnings",
    ]


def test_cli_check_json_warnings_do_not_fail(tmp_path, capsys):
    d = _board()
    _comp(d, "led")["pin"] = 2
    path = _write(tmp_path, d)
    assert _run(["boards", "check", "--json", "sim", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True
    assert doc["summary"] == {"boards": 2, "errors": 0, "warnings": 1}
    assert doc["boards"][1]["file"] == str(path)
    assert "strapping pin" in doc["boards"][1]["warnings"][0]


def test_cli_list(capsys):
    assert _run(["boards", "list"]) == 0
    out = capsys.readouterr().out
    for board_id in SHIPPED:
        assert board_id in out
    line = next(x for x in out.splitlines() if x.startswith("m5stack-core2 "))
    assert line.split()[1:3] == ["esp32", "16MB+PSRAM"]
    assert line.endswith("mcu_temp, imu, battery, rtc")


def test_cli_show(capsys):
    assert _run(["boards", "show", "esp32-devkitc-bme280"]) == 0
    out = capsys.readouterr().out
    assert (
        "filesystem: littlefs on vfs at 0x200000 (2 MiB, created at boot after 'factory' to "
        "the end of flash)"
    ) in out
    assert (
        "image: ESP32_GENERIC (stock, variant plain); download ESP32_GENERIC-<date>-v1.28.0.bin"
        in out
    )
    assert (
        "flash accepts: partitions-4MiB.csv (v1.24.1, v1.25.0); "
        "partitions-4MiBplus.csv (v1.26.0, v1.27.0, v1.28.0)"
    ) in out
    assert "features: ota-firmware no (needs the -OTA image), ota-app yes" in out
    assert "i2c0 0x76" in out
    assert _run(["boards", "show", "esp32-devkitc-ota"]) == 0
    out = capsys.readouterr().out
    assert "download ESP32_GENERIC-OTA-<date>-v1.28.0.bin from micropython.org" in out
    assert "features: ota-firmware yes, ota-app yes" in out
    assert "vfs at 0x310000 (960 KiB, created at boot after 'ota_1' to the end of flash)" in out
    assert _run(["boards", "show", "--json", "sim"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((BOARDS / "sim.json").read_text())


def test_cli_show_unknown_board_is_a_user_error():
    with pytest.raises(UserError, match="no board nope"):
        _run(["boards", "show", "nope"])


def _paths(node, prefix=()):
    """Every (path, value) inside a JSON document."""
    yield prefix, node
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for k, v in items:
        yield from _paths(v, (*prefix, k))


@pytest.mark.parametrize("odd", [None, [], {}, [1], "x", -1, True, 1.5])
def test_checker_never_crashes_on_odd_values(odd):
    """Any field replaced by any JSON value gives issues, never an exception."""
    with_image = copy.deepcopy(BASE)
    _stock_ota(with_image)
    for base in (BASE, with_image):
        _replace_each(base, odd)


def _replace_each(base: dict, odd) -> None:
    for path, _ in list(_paths(base)):
        if not path:
            continue
        d = copy.deepcopy(base)
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = copy.deepcopy(odd)
        check_data(d, Issues("odd.json"), stem="planted")


@pytest.mark.parametrize(
    "chip, reading, problem",
    [
        ("esp32", "temperature", "the original ESP32 has no calibrated temperature sensor"),
        ("esp32", "raw", None),
        ("esp32s3", "temperature", None),
    ],
)
def test_mcu_temperature_reading_follows_the_chip(chip, reading, problem) -> None:
    data = copy.deepcopy(BASE)
    data["chip"] = chip
    data["components"][0]["readings"] = {reading: {"unit": "raw", "range": [0, 255]}}
    issues = schema.check_data(data, Issues("planted.json"))
    found = [i.message for i in issues.errors if "mcu_temp" in i.where]
    assert found[0].startswith(problem) if problem else found == [], found
