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


def test_sim_partition_set_boot_and_confirm(mpy) -> None:
    out = mpy.json(
        """
        import json
        from sim_board.partitions import Partition
        from tkfakes import out
        run = Partition(Partition.RUNNING)
        nxt = run.get_next_update()
        nxt.ioctl(6, 0)
        nxt.writeblocks(0, b"hello", 0)
        nxt.writeblocks(1, b"world", 0)
        buf = bytearray(5)
        nxt.readblocks(1, buf)
        nxt.set_boot()
        d1 = json.load(open("otadata.json"))
        Partition.mark_app_valid_cancel_rollback()
        out({"run": run.info()[4], "next": nxt.info()[4], "read": bytes(buf).decode(),
             "after_set_boot": d1, "blocks": nxt.ioctl(4, 0), "bs": nxt.ioctl(5, 0)})
        """,
        env={"TK_SIM_PARTS": str(mpy.cwd)},
    )
    o = out[0]
    assert o["run"] == "ota_0" and o["next"] == "ota_1" and o["read"] == "world"
    assert o["after_set_boot"]["boot"] == "ota_1" and o["after_set_boot"]["state"]["ota_1"] == "new"
    assert o["bs"] == 4096 and o["blocks"] * 4096 == 1024 * 1024
