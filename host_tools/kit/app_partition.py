"""The virtual kit's app partitions before the first boot: the factory image.

A board flashed with a stock MicroPython image has that image (an ESP-IDF app image) in
its first app partition: ``factory`` on the plain ESP32_GENERIC table, ``ota_0`` on the
-OTA one. The virtual kit's emulated bootloader (host_tools/kit/bootloader.py) verifies
and boots that partition, and the firmware reads the running image's app descriptor as
its runtime version. No MicroPython image can be downloaded here, so the kit gets a
stand-in made by esptool (host_tools.ota.app_image.stand_in_image) whose descriptor says
:data:`DEFAULT_RUNTIME`; the interpreter that runs is always the unix port.

    bootloader = prepare(kit.root, kit.board())   # before the kit's reset loop starts
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_RUNTIME = "v1.28.0"  # the runtime version the factory image's descriptor says
BOOTLOADER = Path(__file__).with_name("bootloader.py")


def boot_label(board: dict) -> str:
    """The partition a board boots with erased otadata: factory, else the first OTA slot."""
    apps = [p for p in board.get("partitions") or [] if p.get("type") == "app"]
    for p in apps:
        if p.get("subtype") == "factory":
            return p["name"]
    otas = sorted(p["name"] for p in apps if str(p.get("subtype", "")).startswith("ota_"))
    return otas[0] if otas else "factory"


def prepare(root: Path, board: dict, runtime: str = DEFAULT_RUNTIME) -> Path:
    """Write the factory image into the kit's boot partition if it holds none; return
    the emulated bootloader's script (run before every boot)."""
    from host_tools.ota.app_image import stand_in_image

    part = Path(root) / f"part-{boot_label(board)}.bin"
    if not part.exists():
        part.parent.mkdir(parents=True, exist_ok=True)
        tmp = part.with_suffix(".tmp")
        tmp.write_bytes(stand_in_image(runtime))
        tmp.replace(part)
    return BOOTLOADER
