"""Real boards on serial ports as a HIL target.

Chosen by ``--target serial --port URL --board ID`` (one board) or ``--env-file FILE``
(a bench: boards, ports, reset and power; see :mod:`hil_tests.targets.resources`).

Drivers, over the board tooling of ``thingkit flash|deploy|console``:

- console: :class:`~host_tools.board_tools.console.SerialConsole` reads the port into
  ``<kit>/console.log`` for the whole test; it lets go of the port while esptool or
  mpremote need it;
- power: ``rts`` holds the chip in reset through RTS (EN low: no radio, no TCP: a cut as
  far as the cloud can tell) and releases it; ``command`` runs the bench's switch
  commands (a USB hub port with uhubctl, a relay); ``none`` only stops the firmware;
- reset: an RTS pulse (``rts``) or a soft reset through the REPL (``none``);
- flasher: :func:`~host_tools.board_tools.flash.flash` with the board's image (if the
  resource names one; otherwise the MicroPython on the board is kept);
- deployer: :func:`~host_tools.board_tools.deploy.deploy`: firmware, packages, identity
  and config. The identity and config are provisioned on the host into ``<kit>/fs``,
  which ``read_file``/``write_file`` use; files written there are pushed to the board at
  the next power-on (the firmware reads them at boot).

The bench listens on 127.0.0.1; when the boards reach this host at another address, TCP
and UDP relays on that address forward MQTT and NTP, and the broker certificate gets
that address (or the configured name) so the boards' TLS name check passes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import ipaddress
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hil_tests.targets import TargetOptions
from hil_tests.targets.base import Dut, Endpoint, Step, Target, TargetInfo
from hil_tests.targets.relay import TcpRelay, UdpRelay
from hil_tests.targets.resources import BenchResource, BoardResource, Environment, load_env
from host_tools.bench.layout import BenchLayout
from host_tools.bench.pki import BROKER_CN
from host_tools.board_tools import console as console_mod
from host_tools.board_tools import deploy as deploy_mod
from host_tools.board_tools import flash as flash_mod
from host_tools.boards.registry import Board, load_board
from host_tools.errors import UserError
from provisioning.bundle import DeviceConfig
from provisioning.ca import CertificateAuthority, KeyPair, new_key
from provisioning.device import provision_device

# Provisioning knobs only the virtual kit has.
SIM_ONLY = ("heap", "mode")


class _Console:
    def __init__(self, con: console_mod.SerialConsole) -> None:
        self.con = con

    @property
    def log_path(self) -> Path:
        return self.con.log_path

    def text(self, since_boot: bool = True) -> str:
        return self.con.text(since_boot)

    def mark_boot(self, note: str) -> None:
        self.con.mark(note)


class _RtsPower:
    """EN held low through RTS: the chip is in reset."""

    can_cut = True

    def __init__(self, dut: SerialDut) -> None:
        self.dut = dut

    def on(self) -> None:
        self.dut.console_driver.con.release()

    def off(self) -> None:
        self.dut.console_driver.con.hold()


class _CommandPower:
    """The bench's power switch, as commands (uhubctl, a relay CLI, ...)."""

    can_cut = True

    def __init__(self, dut: SerialDut, on: tuple[str, ...], off: tuple[str, ...]) -> None:
        self.dut, self.on_cmd, self.off_cmd = dut, on, off

    def _run(self, argv: tuple[str, ...]) -> None:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise UserError(
                f"power command failed: {' '.join(argv)}", (done.stderr or done.stdout).strip()
            )

    def on(self) -> None:
        self._run(self.on_cmd)

    def off(self) -> None:
        self._run(self.off_cmd)


class _NoPower:
    """No switch: the board stays powered; "off" only stops the firmware."""

    can_cut = False

    def __init__(self, dut: SerialDut) -> None:
        self.dut = dut

    def on(self) -> None:
        pass

    def off(self) -> None:
        pass


class SerialDut(Dut):
    """A board on a serial port. It is ``off``, ``halted`` (powered, firmware stopped at
    the REPL: where files are written) or ``running``."""

    def __init__(self, res: BoardResource, board: Board, root: Path, thing: str) -> None:
        self.res = res
        self.board = board
        self.thing = thing
        self.artifacts_name = thing
        self.root = root
        self.mirror = root / "fs"  # identity and config as provisioned (what read_file reads)
        self.state = "off"
        root.mkdir(parents=True, exist_ok=True)
        con = console_mod.SerialConsole(res.port, root / "console.log", res.baud)
        self.console_driver = _Console(con)
        if res.power == "command":
            self.power_driver = _CommandPower(self, res.power_on, res.power_off)
        elif res.power == "rts":
            self.power_driver = _RtsPower(self)
        else:
            self.power_driver = _NoPower(self)
        self.reset_driver = self
        self.deployer = self
        self.on_close: Callable[[], None] | None = None
        con.start()

    # -- states ------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.state == "running"

    @contextlib.contextmanager
    def _paused(self) -> Iterator[None]:
        """The console lets go of the port (for esptool or mpremote)."""
        con = self.console_driver.con
        con.pause()
        try:
            yield
        finally:
            con.resume()

    @contextlib.contextmanager
    def halted(self) -> Iterator[deploy_mod.Device]:
        """The board powered with its firmware stopped, in raw REPL (mpremote)."""
        if self.state == "off":
            self.power_driver.on()
        with self._paused(), deploy_mod.connect(self.res.port, self.res.baud) as dev:
            self.state = "halted"
            yield dev

    def power_on(self) -> None:  # type: ignore[override]
        """Boot the firmware from the files on the board: a power cycle where the bench
        can cut the power (a cold start: RTC at its reset value), else a soft reset."""
        self.console_driver.mark_boot("power on")
        if self.state == "halted" and self.power_driver.can_cut:
            self.power_driver.off()
            self.state = "off"
        if self.state == "off":
            self.power_driver.on()
        else:
            self._soft_reset_on_console()
        self.state = "running"

    def power_off(self) -> None:  # type: ignore[override]
        if self.power_driver.can_cut:
            self.power_driver.off()
            self.state = "off"
        elif self.state == "running":
            with self.halted():
                pass

    def reset(self) -> None:  # type: ignore[override]
        self.console_driver.mark_boot("reset")
        if self.res.reset == "rts":
            self.console_driver.con.reset()
        else:
            self._soft_reset_on_console()
        self.state = "running"

    def _soft_reset_on_console(self) -> None:
        """ctrl-C (stop whatever runs), ctrl-B (friendly REPL), ctrl-D (soft reset: main.py
        runs), sent through the console so it sees the whole boot."""
        con = self.console_driver.con
        con.write(b"\r\x03\x03")
        time.sleep(0.2)
        con.write(b"\x02")
        time.sleep(0.1)
        con.write(b"\x04")

    # -- files -----------------------------------------------------------------------------
    def read_file(self, path: str) -> bytes:  # type: ignore[override]
        p = self.mirror / path
        if p.exists():
            return p.read_bytes()
        with self.halted() as dev:
            return dev.read(path)

    def write_file(self, path: str, data: bytes) -> None:  # type: ignore[override]
        """Write to the board now (its firmware is stopped for it: power it on after)."""
        p = self.mirror / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        with self.halted() as dev:
            dev.write(path, data)

    def deploy_firmware(self) -> str:
        with self._paused():
            return deploy_mod.deploy(
                self.res.port,
                self.board,
                deps=self.res.deps,
                mip_index=self.res.mip_index,
                check_platform=self.res.check_platform,
                restart=False,
                baud=self.res.baud,
            ).summary()

    def close(self) -> None:
        self.console_driver.con.stop()
        if self.on_close is not None:
            self.on_close()
            self.on_close = None


class SerialTarget(Target):
    name = "serial"

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.board = load_board(env.boards[0].board)
        caps = {"power_cut"} if env.boards[0].power in ("rts", "command") else set()
        self.capabilities = frozenset(caps)
        self._busy: set[str] = set()
        self._relays: dict[Path, tuple[TcpRelay, UdpRelay]] = {}

    @classmethod
    def from_options(cls, o: TargetOptions) -> SerialTarget:
        if o.env_file is not None:
            env = load_env(o.env_file)
            boards = list(env.boards)
            if o.env_board:
                first = [b for b in boards if b.name == o.env_board]
                if not first:
                    names = ", ".join(b.name for b in boards)
                    raise UserError(f"no board {o.env_board!r} in {o.env_file}", f"it has {names}")
                boards = first + [b for b in boards if b.name != o.env_board]
            if o.firmware is not None:
                boards[0] = dataclasses.replace(boards[0], firmware=o.firmware)
            return cls(Environment(env.bench, tuple(boards)))
        if not o.port or not o.board:
            raise UserError(
                "the serial target needs --port URL and --board ID (or --env-file FILE)",
                "no board is attached to this run",
                "docs_hil.md (Real boards)",
            )
        res = BoardResource("board", o.board, o.port, firmware=o.firmware)
        if o.port.startswith("socket://"):
            # A network port has no control lines: no RTS reset or power hold (pyserial
            # ignores them there), and the device behind it is a stand-in, not an ESP32.
            res = dataclasses.replace(res, reset="none", power="none", check_platform=False)
        return cls(Environment(BenchResource(), (res,)))

    def info(self) -> TargetInfo:
        first = self.env.boards[0]
        return TargetInfo(
            "serial",
            self.board.id,
            f"real board {first.name} on {first.port} (bench reached at "
            f"{self.env.bench.endpoint_name})",
            self.capabilities,
        )

    # -- the bench as boards reach it ----------------------------------------------------
    def prepare_bench(self, bench_root: Path) -> None:
        b = self.env.bench
        if b.on_loopback and b.endpoint_name in ("localhost", "127.0.0.1"):
            return
        write_broker_identity(BenchLayout(Path(bench_root).resolve()), b)

    def expose(self, bench: Any) -> tuple[Endpoint, Endpoint]:
        b = self.env.bench
        if b.on_loopback:
            return (
                Endpoint(b.endpoint_name, "127.0.0.1", bench.port),
                Endpoint("127.0.0.1", "127.0.0.1", bench.ntp_port),
            )
        key = bench.layout.root
        if key not in self._relays:
            self._relays[key] = (
                TcpRelay((b.device_address, 0), ("127.0.0.1", bench.port)),
                UdpRelay((b.device_address, 0), ("127.0.0.1", bench.ntp_port)),
            )
        tcp, udp = self._relays[key]
        return (
            Endpoint(b.endpoint_name, b.device_address, tcp.port),
            Endpoint(b.device_address, b.device_address, udp.port),
        )

    def device_endpoint(self) -> Endpoint:
        b = self.env.bench
        return Endpoint(b.endpoint_name, b.device_address, 0)

    # -- devices ---------------------------------------------------------------------------
    def _take_board(self) -> BoardResource:
        for res in self.env.boards:
            if res.name not in self._busy:
                self._busy.add(res.name)
                return res
        pytest.skip(
            f"this test needs {len(self._busy) + 1} boards; the bench has "
            f"{len(self.env.boards)} ({', '.join(b.name for b in self.env.boards)})"
        )

    def steps(
        self, dut_root: Path, bench: Any, thing: str, config: dict
    ) -> tuple[SerialDut, list[Step]]:
        config = {k: v for k, v in config.items() if k not in SIM_ONLY}
        board_id = config.pop("board", None)
        res = self._take_board()
        board = load_board(board_id or res.board)
        dut = SerialDut(res, board, dut_root / thing, thing)
        dut.on_close = lambda: self._busy.discard(res.name)

        def provision_step(d: Dut) -> str:
            assert isinstance(d, SerialDut)
            mqtt, ntp = self.expose(bench)
            cfg = DeviceConfig(
                thing_name=thing,
                endpoint=mqtt.name,
                port=mqtt.port,
                ntp_servers=[f"{ntp.name}:{ntp.port}"],
                topic_prefix=bench.topic_prefix,
                **config,
            )
            ident = provision_device(
                bench.fleet_ca(), cfg, d.mirror, bench.layout.server_ca_der.read_bytes()
            )
            bench.register(thing, ident.fingerprint)
            return _deploy_bundle(d, res, board)

        return dut, [
            Step("flashed", self._flash_step(res, board)),
            Step("provisioned", provision_step),
        ]

    def bundle_steps(
        self, dut_root: Path, bundle: Path, thing: str, config: dict
    ) -> tuple[SerialDut, list[Step]]:
        """Like :meth:`steps`, with an identity and config made elsewhere (a device bundle
        from ``thingkit provision`` for a remote cloud): deployed as it is."""
        from hil_tests.targets.sim import copy_bundle

        board_id = config.get("board")
        res = self._take_board()
        board = load_board(board_id or res.board)
        dut = SerialDut(res, board, dut_root / thing, thing)
        dut.on_close = lambda: self._busy.discard(res.name)

        def provision_step(d: Dut) -> str:
            assert isinstance(d, SerialDut)
            copy_bundle(bundle, d.mirror)
            return _deploy_bundle(d, res, board)

        return dut, [
            Step("flashed", self._flash_step(res, board)),
            Step("provisioned", provision_step),
        ]

    @staticmethod
    def _flash_step(res: BoardResource, board: Board) -> Callable[[Dut], str]:
        def flash_step(d: Dut) -> str:
            assert isinstance(d, SerialDut)
            if res.firmware is None:
                return "kept the MicroPython on the board (no firmware image given)"
            if d.state == "off":
                d.power_driver.on()
            with d._paused():
                note = flash_mod.flash(res.port, board, res.firmware).summary()
            d.state = "running"  # esptool's hard reset boots the new MicroPython
            return note

        return flash_step

    def close(self) -> None:
        for tcp, udp in self._relays.values():
            tcp.close()
            udp.close()
        self._relays.clear()


def _deploy_bundle(d: SerialDut, res: BoardResource, board: Board) -> str:
    """Deploy firmware, packages and the bundle in ``d.mirror``; the firmware is left
    stopped in the raw REPL (state ``halted``)."""
    if d.state == "off":
        d.power_driver.on()
    with d._paused():
        result = deploy_mod.deploy(
            res.port,
            board,
            bundle=d.mirror,
            wifi=res.wifi(),
            deps=res.deps,
            mip_index=res.mip_index,
            check_platform=res.check_platform,
            restart=False,
            baud=res.baud,
        )
    d.state = "halted"  # deploy leaves the firmware stopped in the raw REPL
    return result.summary()


def write_broker_identity(layout: BenchLayout, bench: BenchResource) -> None:
    """The broker certificate, before the bench starts, with the names boards use (the
    bench keeps a broker certificate it finds). Same CA and file layout as the bench's
    own (host_tools/bench/pki.py)."""
    ca = CertificateAuthority.open_or_create(layout.server_ca, "thingkit bench server")
    key = new_key()
    dns = {"localhost"}
    ips = {ipaddress.ip_address("127.0.0.1")}
    for name in (bench.endpoint_name, bench.device_address):
        try:
            ips.add(ipaddress.ip_address(name))
        except ValueError:
            dns.add(name)
    now = dt.datetime.now(dt.UTC)
    sans = [x509.DNSName(n) for n in sorted(dns)] + [x509.IPAddress(i) for i in sorted(ips)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_CN)]))
        .issuer_name(ca.issuing.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca.issuing.key, hashes.SHA256())
    )
    pair = KeyPair(key, cert)
    cert_path, key_path = layout.identity(BROKER_CN)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(pair.cert_pem + ca.issuing.cert_pem)
    key_path.touch(mode=0o600)
    key_path.write_bytes(pair.key_pem())
