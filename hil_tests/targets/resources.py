"""Resources: passive data about a bench with real boards, from the command line or an
environment file. Drivers (console, power, reset, flasher, deployer) act on them.

An environment file is TOML::

    # bench.toml: one CI runner with two boards
    [bench]
    device_address = "192.0.2.1"     # where the boards reach this host (Wi-Fi AP side)
    endpoint = "192.0.2.1"           # optional: the broker name in the boards' config
                                        # (default: device_address; a DNS name must
                                        # resolve to it on the boards' network)

    [[board]]
    name = "devkitc-a"
    board = "esp32-devkitc-bme280"      # boards/<id>.json
    port = "/dev/serial/by-id/usb-Silicon_Labs_CP2102N_USB_to_UART_Bridge_Controller_0001-if00-port0"
    firmware = "/srv/firmware/ESP32_GENERIC-thingkit.bin"   # optional: flash first
    reset = "rts"                       # rts (EN through RTS) | none
    power = "command"                   # rts (hold EN low) | command | none
    power_on = ["uhubctl", "-l", "1-1", "-p", "2", "-a", "on"]
    power_off = ["uhubctl", "-l", "1-1", "-p", "2", "-a", "off"]
    deps = "mip"                        # mip | pinned | none
    mip_index = "/srv/mip-mirror"       # optional: a local mirror of micropython-lib

Wi-Fi credentials never go in the file: they come from the environment variables named
by ``wifi_ssid_env`` / ``wifi_psk_env`` (default ``THINGKIT_WIFI_SSID`` /
``THINGKIT_WIFI_PSK``), e.g. CI secrets.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from host_tools.errors import UserError


@dataclass(frozen=True)
class BoardResource:
    name: str
    board: str
    port: str
    baud: int = 115200
    firmware: Path | None = None
    reset: str = "rts"
    power: str = "rts"
    power_on: tuple[str, ...] = ()
    power_off: tuple[str, ...] = ()
    deps: str = "pinned"
    mip_index: str | None = None
    check_platform: bool = True
    wifi_ssid_env: str = "THINGKIT_WIFI_SSID"
    wifi_psk_env: str = "THINGKIT_WIFI_PSK"

    def wifi(self) -> dict | None:
        ssid = os.environ.get(self.wifi_ssid_env)
        return {"ssid": ssid, "psk": os.environ.get(self.wifi_psk_env, "")} if ssid else None


@dataclass(frozen=True)
class BenchResource:
    """Where boards reach this host, and the broker name they use (default: the address
    itself; Mbed TLS checks it against the broker certificate's IP names)."""

    device_address: str = "127.0.0.1"
    endpoint: str | None = None

    @property
    def endpoint_name(self) -> str:
        return self.endpoint or self.device_address

    @property
    def on_loopback(self) -> bool:
        return self.device_address in ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Environment:
    bench: BenchResource
    boards: tuple[BoardResource, ...] = field(default_factory=tuple)


_CHOICES = {
    "reset": ("rts", "none"),
    "power": ("rts", "command", "none"),
    "deps": ("mip", "pinned", "none"),
}


def _board(raw: dict, where: str, base: Path) -> BoardResource:
    known = {f.name for f in fields(BoardResource)}
    unknown = set(raw) - known
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for key in ("name", "board", "port"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise UserError(f"{where}: '{key}' is required (text)")
    for key, choices in _CHOICES.items():
        if key in raw and raw[key] not in choices:
            raise UserError(f"{where}: {key} must be one of {', '.join(choices)}")
    args = dict(raw)
    if "firmware" in args:
        p = Path(args["firmware"])
        args["firmware"] = p if p.is_absolute() else base / p
    for key in ("power_on", "power_off"):
        if key in args:
            if not isinstance(args[key], list) or not all(isinstance(a, str) for a in args[key]):
                raise UserError(f"{where}: {key} must be a list of strings (argv)")
            args[key] = tuple(args[key])
    if args.get("power") == "command" and not (args.get("power_on") and args.get("power_off")):
        raise UserError(f"{where}: power = 'command' needs power_on and power_off")
    return BoardResource(**args)


def load_env(path: Path) -> Environment:
    """Read an environment file.

    Raises:
        UserError: unreadable TOML, a missing field, or a value out of its choices.
    """
    try:
        doc = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read environment file {path}", str(exc)) from exc
    bench_raw = doc.get("bench", {})
    unknown = set(bench_raw) - {f.name for f in fields(BenchResource)}
    if unknown:
        raise UserError(f"{path} [bench]: unknown field(s) {', '.join(sorted(unknown))}")
    bench = BenchResource(**bench_raw)
    raws = doc.get("board", [])
    if not raws:
        raise UserError(f"{path} describes no [[board]]", where="docs_hil.md")
    boards = tuple(
        _board(r, f"{path} board {r.get('name', i)}", Path(path).parent) for i, r in enumerate(raws)
    )
    names = [b.name for b in boards]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: board names must be unique")
    return Environment(bench, boards)
