"""A/B app slots on the MicroPython unix port: tk.slots, tk.ota_slot and the boot
selector (firmware/main.py), with the files they leave on the "flash"."""

from __future__ import annotations

import json
import shutil
import subprocess

from .harness import FIRMWARE

FAKE_MAIN = 'def start():\n    print("STARTED %s")\n'


def _fake_slot(mpy, slot: str, main: str | None = None) -> None:
    mpy.write(f"slot_{slot}/tk/__init__.py", "")
    mpy.write(f"slot_{slot}/tk/main.py", main if main is not None else FAKE_MAIN % slot)


def _boot(mpy) -> subprocess.CompletedProcess:
    """Run the real boot selector (main.py) with the test dir as the filesystem root."""
    shutil.copyfile(FIRMWARE / "main.py", mpy.cwd / "main.py")
    return subprocess.run(
        [mpy.binary, "main.py"],
        cwd=mpy.cwd,
        env=mpy.env(),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def _state(mpy) -> dict:
    return json.loads((mpy.cwd / "ota" / "boot.json").read_text())


def test_switch_confirm_rollback_state(mpy) -> None:
    out = mpy.json(
        """
        from tk import slots
        from tkfakes import out
        out({"run": slots.running(), "inactive": slots.inactive()})
        slots.switch("a", "job-1", "0.2.0", 60)
        out({"run": slots.running(), "pending": slots.pending() is not None})
        slots.confirm()
        out({"run": slots.running(), "inactive": slots.inactive()})
        slots.switch("b", "job-2", "0.3.0", 60)
        slots.rollback("did not confirm")
        out({"run": slots.running(), "result": slots.take_result()})
        """
    )
    assert out[0] == {"run": "factory", "inactive": "a"}
    assert out[1] == {"run": "a", "pending": True}
    assert out[2] == {"run": "a", "inactive": "b"}
    assert out[3]["run"] == "a"
    assert out[3]["result"] == {"job": "job-2", "ver": "0.3.0", "reason": "did not confirm"}
    assert not (mpy.cwd / "ota" / "boot.json.tmp").exists()


def test_boot_selector_counts_boots_then_rolls_back(mpy) -> None:
    _fake_slot(mpy, "a")
    _fake_slot(mpy, "b")
    mpy.write(
        "ota/boot.json",
        json.dumps({"run": "a", "try": "b", "boots": 0, "ver": "0.3.0", "job": "j"}),
    )
    for n in (1, 2, 3):
        r = _boot(mpy)
        assert "STARTED b" in r.stdout, r.stdout + r.stderr
        assert _state(mpy)["boots"] == n
    r = _boot(mpy)  # a 4th boot without confirmation: back to the confirmed slot
    assert "STARTED a" in r.stdout, r.stdout + r.stderr
    st = _state(mpy)
    assert st["try"] is None and st["run"] == "a"
    assert "not confirmed after 3 boots" in st["result"]["reason"]
    assert st["result"]["job"] == "j"


def test_boot_selector_rolls_back_a_slot_that_does_not_load(mpy) -> None:
    _fake_slot(mpy, "a")
    _fake_slot(mpy, "b", main="def start(:\n")  # a syntax error
    mpy.write(
        "ota/boot.json",
        json.dumps({"run": "a", "try": "b", "boots": 0, "ver": "0.3.0", "job": "j"}),
    )
    r = _boot(mpy)
    assert r.returncode == 75, r.stdout + r.stderr  # reboot (the kit restarts the process)
    st = _state(mpy)
    assert st["try"] is None and "does not start" in st["result"]["reason"]
    r = _boot(mpy)
    assert "STARTED a" in r.stdout


def test_slot_writer_rewrites_in_place_on_resume(mpy) -> None:
    out = mpy.json(
        """
        from tk.ota_slot import SlotWriter
        from tkfakes import out
        files = [("tk/x.mpy", 5), ("hal/y.mpy", 7), ("z.mpy", 3)]
        data = b"AAAAABBBBBBBCCC"
        w = SlotWriter("b", files)
        w.write(0, data[:9])          # a power cut after 9 bytes...
        w.write(3, data[3:])          # ...and a resume from an earlier offset
        res = {}
        for p, n in files:
            with open("slot_b/" + p, "rb") as f:
                res[p] = f.read().decode()
        out(res)
        """
    )
    assert out[0] == {"tk/x.mpy": "AAAAA", "hal/y.mpy": "BBBBBBB", "z.mpy": "CCC"}


def _kit_parts(mpy, board: str) -> dict[str, str]:
    """A kit's partition table (board definition) and files, with its factory image."""
    import json

    from host_tools.kit.app_partition import prepare
    from host_tools.paths import BOARDS

    full = (BOARDS / f"{board}.json").read_text()
    mpy.write("board-full.json", full)
    prepare(mpy.cwd, json.loads(full))
    return {"TK_SIM_PARTS": str(mpy.cwd), "TK_SIM_BOARD": str(mpy.cwd / "board-full.json")}


def test_sim_partitions_follow_a_plain_stock_table(mpy) -> None:
    # ESP32_GENERIC (no OTA partitions): RUNNING is factory, get_next_update raises
    # OSError(ENOENT) as esp32_partition_new(NULL) does, an unknown label too.
    out = mpy.one(
        """
        from sim_board.partitions import Partition
        from tkfakes import out
        run = Partition(Partition.RUNNING)
        res = {"run": run.info()}
        for what, f in (("next", run.get_next_update), ("ota_0", lambda: Partition("ota_0"))):
            try:
                f()
            except OSError as e:
                res[what] = e.args
        out(res)
        """,
        env=_kit_parts(mpy, "sim"),
    )
    assert out["run"] == [0, 0, 0x10000, 0x1F0000, "factory", False]
    assert out["next"] == [2] and out["ota_0"] == [2]


def test_sim_partition_set_boot_validates_the_app_image(mpy) -> None:
    from host_tools.ota.app_image import stand_in_image

    env = _kit_parts(mpy, "sim-ota")
    good = stand_in_image("v1.29.0", padding=20000)
    bad = bytearray(good)
    bad[600] ^= 1  # one byte of a segment: the checksum no longer matches
    mpy.write("good.bin", good)
    mpy.write("bad.bin", bytes(bad))
    mpy.write("romfs.bin", b"\xd2\xcd\x31" + bytes(3000))
    out = mpy.json(
        """
        import json
        from sim_board.partitions import Partition
        from tkfakes import out
        run = Partition(Partition.RUNNING)
        nxt = run.get_next_update()
        for name in ("romfs.bin", "bad.bin", "good.bin"):
            data = open(name, "rb").read()
            for blk in range(0, len(data), 4096):
                nxt.ioctl(6, blk // 4096)
                nxt.writeblocks(blk // 4096, data[blk:blk + 4096], 0)
            try:
                nxt.set_boot()
                res = "ok"
            except OSError as e:
                res = e.args
            out({"image": name, "set_boot": res, "otadata": json.load(open("otadata.json"))
                 if "otadata.json" in __import__("os").listdir() else {}})
        buf = bytearray(5)
        nxt.readblocks(1, buf)
        out({"run": run.info()[4], "next": nxt.info()[4], "blocks": nxt.ioctl(4, 0),
             "bs": nxt.ioctl(5, 0), "read": list(buf)})
        """,
        env=env,
    )
    romfs, corrupt, ok, info = out
    for refused in (romfs, corrupt):
        assert refused["set_boot"] == [-5379, "ESP_ERR_OTA_VALIDATE_FAILED"], refused
        assert "boot" not in refused["otadata"], refused
    assert ok["set_boot"] == "ok" and ok["otadata"]["boot"] == "ota_1"
    assert ok["otadata"]["state"]["ota_1"] == "new"
    assert info["run"] == "ota_0" and info["next"] == "ota_1" and info["bs"] == 4096
    assert info["blocks"] * 4096 == 0x180000
    assert info["read"] == list(good[4096:4101])


def test_emulated_bootloader_boots_new_then_rolls_back_unconfirmed(mpy) -> None:
    # host_tools/kit/bootloader.py, run before each boot: new -> pending_verify (booted
    # once) -> aborted at the next boot if not confirmed; the other slot boots again.
    import json

    from host_tools.kit.app_partition import BOOTLOADER
    from host_tools.ota.app_image import stand_in_image

    env = _kit_parts(mpy, "sim-ota")
    (mpy.cwd / "part-ota_1.bin").write_bytes(stand_in_image("v1.29.0"))
    mpy.write("otadata.json", json.dumps({"boot": "ota_1", "running": "ota_0",
                                          "state": {"ota_1": "new"}}))  # fmt: skip
    seen = []
    for _ in range(2):
        log = mpy.run(script=BOOTLOADER, env=env)
        seen.append((json.loads((mpy.cwd / "otadata.json").read_text()), log))
    (first, _), (second, log2) = seen
    assert first["running"] == "ota_1" and first["state"]["ota_1"] == "pending_verify"
    assert second["running"] == "ota_0" and second["state"]["ota_1"] == "aborted"
    assert "bootloader: ota_1 not confirmed; rolling back to ota_0" in log2
    # A confirmed image stays: mark_app_valid_cancel_rollback, then two more boots.
    mpy.write("otadata.json", json.dumps({"boot": "ota_1", "running": "ota_0",
                                          "state": {"ota_1": "new"}}))  # fmt: skip
    mpy.run(script=BOOTLOADER, env=env)
    mpy.run(
        "from sim_board.partitions import Partition\nPartition.mark_app_valid_cancel_rollback()\n",
        env=env,
    )
    for _ in range(2):
        mpy.run(script=BOOTLOADER, env=env)
    d = json.loads((mpy.cwd / "otadata.json").read_text())
    assert d["running"] == "ota_1" and d["state"]["ota_1"] == "valid", d
