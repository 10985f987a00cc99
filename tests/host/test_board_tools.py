"""``thingkit flash``, ``deploy`` and ``console`` against what stands in for a board.

- flash: esptool's own code, over a real pyserial ``socket://`` URL, talking to a fake
  chip in its serial bootloader (hil_tests/targets/fake_esp.py: SLIP, ROM commands, stub
  upload, erase, compressed writes, MD5);
- deploy: mpremote's own transport over ``socket://`` to the MicroPython unix port behind
  a raw REPL (hil_tests/targets/fake_board.py), so every snippet runs in real MicroPython;
- console: pyserial's ``loop://`` and ``socket://``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
import serial
from esptool import cmds as esptool_cmds
from serial.urlhandler.protocol_loop import Serial as LoopSerial

from hil_tests.targets.fake_board import FakeBoard
from hil_tests.targets.fake_esp import FakeEsp
from host_tools import device_deps
from host_tools.board_tools import NotSupportedError, cli
from host_tools.board_tools import console as con
from host_tools.board_tools.deploy import deploy, firmware_payload, mpy_version
from host_tools.board_tools.flash import flash, plan_flash
from host_tools.board_tools.images import (
    BOOTLOADER_OFFSET,
    differences,
    image_chip,
    image_header,
    parse_table,
    table_bin,
    table_in_merged,
)
from host_tools.boards import stock
from host_tools.boards.partitions import Partition
from host_tools.boards.registry import all_boards, load_board
from host_tools.errors import UserError
from host_tools.kit.sim import micropython_binary
from provisioning.bundle import DeviceConfig
from provisioning.ca import CertificateAuthority
from provisioning.device import provision_device

BOARD = "esp32-devkitc"
STOCK = stock.tables()
# thingkit's former custom layout (ota_0 at 0x20000, vfs at 0x320000): matches no stock image.
OLD_CUSTOM_TABLE = [
    Partition("nvs", "data", "nvs", 0x9000, 0x6000),
    Partition("otadata", "data", "ota", 0xF000, 0x2000),
    Partition("ota_0", "app", "ota_0", 0x20000, 0x180000),
    Partition("ota_1", "app", "ota_1", 0x1A0000, 0x180000),
    Partition("vfs", "data", "fat", 0x320000, 0xE0000),
]


def _app(chip: str, n: int = 70_000) -> bytes:
    return image_header(chip) + bytes(i % 251 for i in range(n))


def merged_image(board, table=None, chip: str | None = None) -> bytes:
    """A stand-in for MicroPython's merged downloads, made by esptool's own ``merge_bin``:
    a bootloader at the chip's bootloader offset, the binary partition table at 0x8000 and
    an app image at the table's first app partition."""
    chip = chip or board.chip
    parts = list(table or board.partitions)
    base = BOOTLOADER_OFFSET[chip]
    app_at = next(p.offset for p in parts if p.type == "app")
    pairs = [
        (base, image_header(chip) + b"\x11" * 4000),
        (0x8000, table_bin(parts)),
        (app_at, _app(chip)),
    ]
    return esptool_cmds.merge_bin(pairs, chip, target_offset=base)


@pytest.fixture
def board():
    return load_board(BOARD)


@pytest.fixture
def image(tmp_path: Path, board) -> Path:
    p = tmp_path / "fw.bin"
    p.write_bytes(merged_image(board))
    return p


# -- images ------------------------------------------------------------------------------
@pytest.mark.parametrize("b", all_boards(), ids=lambda b: b.id)
def test_partition_table_round_trip_for_every_board(b) -> None:
    parsed = parse_table(table_bin(b.partitions))
    assert parsed == list(b.partitions)
    assert differences(parsed, b.partitions) == []


def test_image_chip_and_merged_table(board) -> None:
    img = merged_image(board)
    assert image_chip(img) == "esp32"
    assert image_chip(_app("esp32s3")) == "esp32s3"
    assert image_chip(b"\x00" * 64) is None
    assert table_in_merged(img, "esp32") == list(board.partitions)
    assert table_in_merged(_app("esp32"), "esp32") is None


def test_table_with_bad_md5_is_not_a_table(board) -> None:
    raw = bytearray(table_bin(board.partitions))
    raw[5] ^= 0xFF
    assert parse_table(bytes(raw)) is None


# -- flash: plan (offline) ------------------------------------------------------------------
def test_plan_merged_image_goes_at_the_bootloader_offset(board, image) -> None:
    plan = plan_flash(board, image)
    assert [(r.offset, len(r.data)) for r in plan.regions] == [(0x1000, image.stat().st_size)]
    assert plan.checks[1].startswith(
        "partition table partitions-4MiBplus.csv (v1.26.0/v1.27.0/v1.28.0 ESP32_GENERIC"
    )
    assert plan.checks[1].endswith(
        "accepted for board esp32-devkitc; filesystem vfs 0x200000+0x200000 (created at boot)"
    )
    assert plan.erase


def test_plan_refuses_image_for_another_chip(tmp_path, board) -> None:
    p = tmp_path / "s3.bin"
    p.write_bytes(merged_image(load_board("esp32-s3-devkitc-1")))
    with pytest.raises(UserError, match="built for esp32s3, board esp32-devkitc is esp32"):
        plan_flash(board, p)


def test_plan_refuses_a_table_that_is_no_stock_table(tmp_path, board) -> None:
    p = tmp_path / "old.bin"
    p.write_bytes(merged_image(board, OLD_CUSTOM_TABLE))
    with pytest.raises(UserError) as e:
        plan_flash(board, p)
    line = str(e.value)
    assert "\n" not in line
    assert line.startswith("this image has a partition table that is none of MicroPython's")
    assert "vfs 0x320000+0xe0000" in line
    assert line.endswith(
        "board esp32-devkitc needs the image without OTA slots: "
        "flash ESP32_GENERIC-<date>-v1.28.0.bin from micropython.org"
    )
    plan = plan_flash(board, p, force=True)
    assert any("flashed anyway (--force)" in c for c in plan.checks)


def test_plan_app_only_image_needs_no_erase_and_brings_the_boards_table(tmp_path, board) -> None:
    p = tmp_path / "app.bin"
    p.write_bytes(_app("esp32"))
    with pytest.raises(UserError, match="app-only image"):
        plan_flash(board, p)
    plan = plan_flash(board, p, erase=False)
    where = {r.offset: r.what for r in plan.regions}
    assert where[0x8000].startswith("partition table")
    assert where[0x10000].startswith("app.bin (app) in 'factory'")
    assert parse_table(plan.regions[0].data) == list(STOCK["4MiBplus"].partitions)
    # The -OTA board: the app goes to ota_0 and otadata is cleared so ota_0 boots.
    plan = plan_flash(load_board("esp32-devkitc-ota"), p, erase=False)
    where = {r.offset: r.what for r in plan.regions}
    assert where[0x10000].startswith("app.bin (app) in 'ota_0'")
    assert "'otadata' cleared" in where[0xD000]


def test_plan_from_an_esp_idf_build(tmp_path, board) -> None:
    build = tmp_path / "build"
    (build / "bootloader").mkdir(parents=True)
    (build / "partition_table").mkdir()
    (build / "bootloader/bootloader.bin").write_bytes(image_header("esp32") + b"b" * 100)
    (build / "partition_table/partition-table.bin").write_bytes(table_bin(board.partitions))
    (build / "micropython.bin").write_bytes(_app("esp32"))
    (build / "flasher_args.json").write_text(
        json.dumps(
            {
                "flash_files": {
                    "0x1000": "bootloader/bootloader.bin",
                    "0x8000": "partition_table/partition-table.bin",
                    "0x10000": "micropython.bin",
                },
                "extra_esptool_args": {"chip": "esp32"},
            }
        )
    )
    plan = plan_flash(board, build)
    assert [r.offset for r in plan.regions] == [0x1000, 0x8000, 0x10000]
    assert any("accepted for board esp32-devkitc" in c for c in plan.checks)


def test_plan_refuses_the_virtual_kit(image) -> None:
    with pytest.raises(NotSupportedError, match="board sim cannot be flashed"):
        plan_flash(load_board("sim"), image)


# -- flash: MicroPython's stock images ---------------------------------------------------------
def _stock_image(tmp_path: Path, key: str, chip: str = "esp32") -> Path:
    """A merged image with stock table ``key`` as a micropython.org download carries it."""
    p = tmp_path / f"{key}.bin"
    p.write_bytes(merged_image(None, list(STOCK[key].partitions), chip))
    return p


def test_stock_tables_round_trip_and_are_identified() -> None:
    for key, t in STOCK.items():
        parsed = parse_table(table_bin(t.partitions))
        assert stock.table_key(parsed) == key
    labels = [u.label() for u in stock.identify(list(STOCK["4MiB"].partitions))]
    assert "v1.24.1 ESP32_GENERIC" in labels and "v1.25.0 ESP32_GENERIC_C3" in labels
    assert [u.label() for u in stock.identify(list(STOCK["4MiB-ota"].partitions))] == [
        "v1.26.0 ESP32_GENERIC-OTA",
        "v1.27.0 ESP32_GENERIC-OTA",
        "v1.28.0 ESP32_GENERIC-OTA",
    ]
    assert stock.identify(OLD_CUSTOM_TABLE) == []


def test_merged_image_has_the_table_at_0x8000(tmp_path) -> None:
    esp32 = _stock_image(tmp_path, "4MiB").read_bytes()
    assert image_chip(esp32) == "esp32"
    assert parse_table(esp32[0x8000 - 0x1000 :][:0xC00]) == list(STOCK["4MiB"].partitions)
    s3 = _stock_image(tmp_path, "8MiB", "esp32s3").read_bytes()
    assert parse_table(s3[0x8000:][:0xC00]) == list(STOCK["8MiB"].partitions)
    assert table_in_merged(s3, "esp32s3") == list(STOCK["8MiB"].partitions)


# (board, stock table, accepted): v1.24.1/v1.25.0 and v1.26.0+ tables, plain and -OTA.
STOCK_CASES = [
    ("esp32-devkitc", "4MiB", True),
    ("esp32-devkitc", "4MiBplus", True),
    ("esp32-devkitc", "4MiB-ota-v1.24", False),
    ("esp32-devkitc", "4MiB-ota", False),
    ("esp32-devkitc-ota", "4MiB-ota-v1.24", True),
    ("esp32-devkitc-ota", "4MiB-ota", True),
    ("esp32-devkitc-ota", "4MiB", False),
    ("esp32-devkitc-ota", "4MiBplus", False),
    ("m5stack-atom-matrix", "4MiBplus", True),
    ("m5stack-core2", "4MiBplus", True),
    ("m5stack-core2", "4MiB", False),  # v1.24/v1.25 put a 2 MiB vfs on the 16 MB flash
]


@pytest.mark.parametrize(("board_id", "key", "ok"), STOCK_CASES)
def test_plan_stock_image(tmp_path, board_id, key, ok) -> None:
    b = load_board(board_id)
    p = _stock_image(tmp_path, key)
    if ok:
        plan = plan_flash(b, p)
        assert plan.regions[0].offset == 0x1000
        assert any(f"accepted for board {board_id}" in c for c in plan.checks), plan.checks
    else:
        with pytest.raises(UserError, match=f"^this image has {STOCK[key].csv} "):
            plan_flash(b, p)


def test_plan_stock_s3_and_c3(tmp_path) -> None:
    s3 = load_board("esp32-s3-devkitc-1")
    for key in ("8MiB", "4MiBplus"):
        plan = plan_flash(s3, _stock_image(tmp_path, key, "esp32s3"))
        assert plan.regions[0].offset == 0
        assert any("filesystem vfs 0x200000+0x600000" in c for c in plan.checks)
    c3 = load_board("esp32-c3-devkitm-1")
    plan = plan_flash(c3, _stock_image(tmp_path, "4MiB", "esp32c3"))
    assert plan.regions[0].offset == 0
    with pytest.raises(
        UserError, match="needs the image without OTA slots: flash ESP32_GENERIC_C3-"
    ):
        plan_flash(c3, _stock_image(tmp_path, "4MiB-ota", "esp32c3"))


def test_refusal_says_which_image_to_flash(tmp_path) -> None:
    with pytest.raises(UserError) as e:
        plan_flash(load_board("esp32-devkitc-ota"), _stock_image(tmp_path, "4MiB"))
    assert str(e.value) == (
        "this image has partitions-4MiB.csv (v1.24.1/v1.25.0 ESP32_GENERIC and 2 other "
        "board(s)); board esp32-devkitc-ota needs the -OTA image: "
        "flash ESP32_GENERIC-OTA-<date>-v1.28.0.bin from micropython.org"
    )
    with pytest.raises(UserError) as e:
        plan_flash(load_board(BOARD), _stock_image(tmp_path, "4MiB-ota"))
    assert str(e.value) == (
        "this image has partitions-4MiB-ota.csv (v1.26.0/v1.27.0/v1.28.0 ESP32_GENERIC-OTA); "
        "board esp32-devkitc needs the image without OTA slots: "
        "flash ESP32_GENERIC-<date>-v1.28.0.bin from micropython.org"
    )
    with pytest.raises(UserError) as e:
        plan_flash(load_board("m5stack-core2"), _stock_image(tmp_path, "4MiB"))
    assert "its filesystem is 0x200000+0x200000, board m5stack-core2's is 0x200000+0xe00000" in (
        str(e.value)
    )
    assert str(e.value).endswith(
        "flash ESP32_GENERIC-SPIRAM-<date>-v1.28.0.bin from micropython.org"
    )


def test_flash_writes_a_stock_ota_image(tmp_path) -> None:
    b = load_board("esp32-devkitc-ota")
    p = _stock_image(tmp_path, "4MiB-ota")
    with FakeEsp("esp32", "4MB") as chip:
        result = flash(chip.url, b, p)
        assert parse_table(bytes(chip.flash[0x8000:0x8C00])) == list(STOCK["4MiB-ota"].partitions)
    assert result.verified
    assert any("filesystem vfs 0x310000+0xf0000 (created at boot)" in c for c in result.plan.checks)


# -- flash: through esptool to a fake chip ----------------------------------------------------
def test_flash_erases_writes_verifies_and_resets(board, image) -> None:
    with FakeEsp("esp32", "4MB") as chip:
        chip.flash[0x300000:0x300004] = b"OLD!"
        result = flash(chip.url, board, image)
        data = image.read_bytes()
        assert chip.flash[0x1000 : 0x1000 + len(data)] == data
        assert chip.flash[0x300000:0x300004] == b"\xff" * 4, "the flash was not erased"
        for cmd in ("MEM_END", "ERASE_FLASH", "FLASH_DEFL_DATA", "SPI_FLASH_MD5"):
            assert cmd in chip.log, cmd
    assert result.chip == "ESP32" and result.flash_size == "4MB" and result.verified
    assert result.bytes_written == len(data)
    assert "verified" in result.summary() and "chip on the port: ESP32" in result.plan.checks


def test_flash_refuses_another_chip_before_erasing(board, image) -> None:
    with FakeEsp("esp32c3") as chip:
        chip.flash[0:4] = b"KEEP"
        with pytest.raises(UserError, match="is ESP32-C3, board esp32-devkitc is esp32"):
            flash(chip.url, board, image)
        assert chip.flash[0:4] == b"KEEP"
        assert "ERASE_FLASH" not in chip.log and "MEM_BEGIN" not in chip.log


def test_flash_detects_s3_by_chip_id(tmp_path) -> None:
    s3 = load_board("esp32-s3-devkitc-1")
    p = tmp_path / "s3.bin"
    p.write_bytes(merged_image(s3))
    with FakeEsp("esp32s3", s3.flash_size) as chip:
        result = flash(chip.url, s3, p)
        assert chip.flash[0 : p.stat().st_size] == p.read_bytes()  # S3: merged image at 0
    assert result.chip == "ESP32-S3"


def test_flash_refuses_a_smaller_flash(board, image) -> None:
    with FakeEsp("esp32", "2MB") as chip:
        with pytest.raises(UserError, match="has 2MB of flash, board esp32-devkitc has 4MB"):
            flash(chip.url, board, image)
        assert "ERASE_FLASH" not in chip.log


def test_flash_verify_catches_a_bad_write(board, image) -> None:
    with FakeEsp("esp32", corrupt_writes=True) as chip, pytest.raises(UserError, match="failed"):
        flash(chip.url, board, image)


def test_flash_app_only_without_erase(tmp_path, board) -> None:
    p = tmp_path / "app.bin"
    p.write_bytes(_app("esp32"))
    with FakeEsp("esp32") as chip:
        flash(chip.url, board, p, erase=False)
        assert parse_table(bytes(chip.flash[0x8000:0x8C00])) == list(board.partitions)
        assert chip.flash[0x10000 : 0x10000 + p.stat().st_size] == p.read_bytes()
        assert "ERASE_FLASH" not in chip.log


def test_flash_with_nothing_on_the_port(board, image) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=f"no ESP chip answered on socket://127.0.0.1:{port}"):
        flash(f"socket://127.0.0.1:{port}", board, image)


# -- flash: the command line -------------------------------------------------------------------
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """The three commands on a parser of their own (as host_tools/cli.py wires them)."""
    p = argparse.ArgumentParser(prog="thingkit")
    cli.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(list(argv))
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_flash_dry_run_and_json(capsys, image) -> None:
    rc, out, _ = run_cli(
        capsys,
        "flash",
        "--board",
        BOARD,
        "--port",
        "/dev/null",
        "--firmware",
        str(image),
        "--dry-run",
    )
    assert rc == 0 and "would write to /dev/null" in out and "0x001000" in out
    with FakeEsp("esp32") as chip:
        rc, out, _ = run_cli(
            capsys,
            "flash",
            "--board",
            BOARD,
            "--port",
            chip.url,
            "--firmware",
            str(image),
            "--json",
        )
    doc = json.loads(out)
    assert rc == 0 and doc["chip"] == "ESP32" and doc["verified"] is True
    assert doc["regions"][0]["offset"] == "0x1000"


# -- deploy ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    ca = CertificateAuthority.create(root / "ca", "test fleet")
    cfg = DeviceConfig(thing_name="kit-deploy", endpoint="192.0.2.1", port=8883)
    provision_device(ca, cfg, root / "fs", b"server-ca-der")
    return root / "fs"


@pytest.fixture(scope="module")
def packages() -> None:
    device_deps.fetch()


def _import_on_unix_port(fs: Path, stmt: str) -> str:
    """Run ``stmt`` on the MicroPython unix port with the deployed filesystem."""
    done = subprocess.run(
        [micropython_binary(), "-c", stmt],
        cwd=fs,
        env={"MICROPYPATH": f"{fs}:{fs}/lib:.frozen"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout + done.stderr


def test_deploy_firmware_packages_identity_and_config(tmp_path, board, bundle, packages) -> None:
    with FakeBoard(tmp_path / "board") as fake:
        fs = fake.fs
        result = deploy(
            fake.url,
            board,
            bundle=bundle,
            wifi={"ssid": "bench-ap", "psk": "<wifi-passphrase>"},
            deps="pinned",
            check_platform=False,
        )
        assert fake.soft_resets == 1, "deploy did not restart the firmware"
        # Firmware: main.py as source, modules as .mpy that this MicroPython loads.
        assert (fs / "main.py").read_bytes() == Path("firmware/main.py").read_bytes()
        assert (fs / "tk/device.mpy").exists() and not (fs / "tk/device.py").exists()
        assert mpy_version((fs / "tk/device.mpy").read_bytes()) == 6
        out = _import_on_unix_port(fs, "import tk.version, umqtt.simple; print(tk.version.VERSION)")
        assert "0.1.0" in out, out
        # Identity, config (with Wi-Fi), board file.
        for rel in ("certs/device.crt.der", "certs/device.key.der", "certs/server-ca.der"):
            assert (fs / rel).read_bytes() == (bundle / rel).read_bytes()
        cfg = json.loads((fs / "config.json").read_text())
        assert cfg["thing_name"] == "kit-deploy"
        assert cfg["wifi"] == {"ssid": "bench-ap", "psk": "<wifi-passphrase>"}
        assert json.loads((fs / "board.json").read_text())["id"] == BOARD
        assert "umqtt.simple 1.3.4 (pinned)" in result.packages
        assert len(result.written) == len(firmware_payload(with_pinned=True)) + 5

        # Again: nothing changed, nothing written; a stale module is removed.
        (fs / "tk/old_module.mpy").write_bytes(b"M\x06stale")
        again = deploy(fake.url, board, bundle=bundle, deps="pinned", check_platform=False)
        assert again.written == ["config.json"]  # only the Wi-Fi merge differs
        assert again.removed == ["tk/old_module.mpy"] and not (fs / "tk/old_module.mpy").exists()


def test_deploy_installs_packages_with_mip_from_a_local_index(tmp_path, board, packages) -> None:
    """A local mirror of the mip index (what a bench without internet uses)."""
    src = device_deps.device_files()["lib/umqtt/simple.py"].read_bytes()
    short = hashlib.sha256(src).hexdigest()[:8]
    index = tmp_path / "index"
    pkg = index / "package/6/umqtt.simple/latest.json"
    pkg.parent.mkdir(parents=True)
    pkg.write_text(
        json.dumps({"hashes": [["umqtt/simple.py", short]], "deps": [], "version": "1.4.0"})
    )
    (index / "file" / short[:2]).mkdir(parents=True)
    (index / "file" / short[:2] / short).write_bytes(src)
    with FakeBoard(tmp_path / "board") as fake:
        result = deploy(fake.url, board, deps="mip", mip_index=str(index), check_platform=False)
        assert (fake.fs / "lib/umqtt/simple.py").read_bytes() == src
        assert not (fake.fs / "lib/umqtt/simple.mpy").exists()
    assert result.packages == ["umqtt.simple"]


def test_deploy_refuses_a_device_that_is_not_the_boards_platform(tmp_path, board) -> None:
    with FakeBoard(tmp_path / "board") as fake:
        with pytest.raises(UserError, match="runs MicroPython for 'linux', board esp32-devkitc"):
            deploy(fake.url, board, deps="none")
        assert not (fake.fs / "main.py").exists()


def test_deploy_with_nothing_on_the_port(board) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="cannot open socket://"):
        deploy(f"socket://127.0.0.1:{port}", board, deps="none")


def test_deploy_refuses_a_bundle_without_identity(tmp_path, board) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="has no certs/device.crt.der"):
        deploy("socket://127.0.0.1:1", board, bundle=tmp_path, deps="none")


# -- console ---------------------------------------------------------------------------------
def test_console_reads_into_its_log_and_waits_for_a_pattern(tmp_path) -> None:
    log = tmp_path / "console.log"
    with con.SerialConsole("loop://", log) as c:
        c.write(b"1 I main: thingkit 0.1.0 on esp32\r\n")
        c.wait_for(r"I main: thingkit", 2)
        c.mark("power on")
        assert "thingkit" not in c.text()
        c.write(b"87 I device: shadow synced: connected=true\r\n")
        m = c.wait_for(r"shadow synced: connected=(\w+)", 2)
        assert m.group(1) == "true"
        with pytest.raises(TimeoutError, match=r"no output matching 'never' within 0 s; console"):
            c.wait_for("never", 0.2)
    text = log.read_text()
    assert "--- power on host time" in text and text.index("main:") < text.index("synced")


class RecordingLoop(LoopSerial):
    """loop:// that records every change of the reset lines."""

    lines: ClassVar[list[tuple[str, bool]]] = []

    def _update_rts_state(self) -> None:
        self.lines.append(("rts", self._rts_state))

    def _update_dtr_state(self) -> None:
        self.lines.append(("dtr", self._dtr_state))


def test_console_reset_pulses_en_with_boot_pin_released(tmp_path) -> None:
    def factory(url, **kw):
        p = RecordingLoop(None, **{k: v for k, v in kw.items() if k != "do_not_open"})
        p.port = url
        return p

    RecordingLoop.lines = []
    with con.SerialConsole("loop://", tmp_path / "c.log", factory=factory) as c:
        assert ("rts", True) not in RecordingLoop.lines, "opening the port reset the board"
        RecordingLoop.lines.clear()
        c.reset()
        assert RecordingLoop.lines == [("dtr", False), ("rts", True), ("rts", False)]
        RecordingLoop.lines.clear()
        c.hold()
        assert RecordingLoop.lines[-1] == ("rts", True)
        c.release()
        assert RecordingLoop.lines[-1] == ("rts", False)


class LineServer:
    """socket:// stand-in: sends ``lines`` to whoever connects, one every 50 ms."""

    def __init__(self, lines: list[bytes]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.url = f"socket://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._run, args=(lines,), daemon=True)
        self.thread.start()

    def _run(self, lines: list[bytes]) -> None:
        conn, _ = self.sock.accept()
        with conn:
            # pyserial's socket:// clears its input on open, as a board's output before
            # the port opens is lost: start talking a moment after the connection.
            time.sleep(0.3)
            for ln in lines:
                conn.sendall(ln)
                time.sleep(0.05)
            time.sleep(1.0)

    def close(self) -> None:
        self.thread.join(3)
        self.sock.close()


def test_cli_console_until_a_line_over_a_socket(tmp_path, capsys) -> None:
    srv = LineServer([b"1 I main: thingkit\r\n", b"80 I device: mqtt connected\r\n"])
    try:
        rc, out, _ = run_cli(
            capsys,
            "console",
            "--port",
            srv.url,
            "--until",
            "mqtt connected",
            "--timeout",
            "5",
            "--log",
            str(tmp_path / "c.log"),
        )
    finally:
        srv.close()
    assert rc == 0 and "mqtt connected" in out
    assert "I main: thingkit" in (tmp_path / "c.log").read_text()


def test_cli_console_fails_when_the_line_never_comes(tmp_path, capsys) -> None:
    srv = LineServer([b"1 I main: thingkit\r\n"])
    try:
        rc, _, err = run_cli(
            capsys,
            "console",
            "--port",
            srv.url,
            "--until",
            "shadow synced",
            "--timeout",
            "0.5",
            "--log",
            str(tmp_path / "c.log"),
            "--quiet",
        )
    finally:
        srv.close()
    assert rc == 1
    assert "'shadow synced' not seen within 0 s" in err


def test_console_on_a_missing_port_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="cannot open serial port /dev/ttyTHINGKIT-NONE"):
        con.SerialConsole("/dev/ttyTHINGKIT-NONE", tmp_path / "c.log").start()


def test_default_console_log_is_named_after_the_port() -> None:
    assert cli.default_log("/dev/serial/by-id/usb-X").name == "dev_serial_by-id_usb-X.log"
    assert isinstance(serial.serial_for_url("loop://", do_not_open=True), LoopSerial)
