"""A littlefs filesystem image of a device bundle, ready to flash at the board's
filesystem offset.

The image is what MicroPython's esp32 port mounts at ``/`` from the ``vfs`` partition:
littlefs v2 (``vfs.VfsLfs2``), block size 4096 (the flash sector, ``esp32.Partition``'s
block size), and MicroPython's defaults for the rest (``extmod/vfs_lfs.c``: read size 32,
prog size 32, lookahead 32; ``vfs_lfsx.c``: block_cycles 100, cache 4 x 32). The disk
format is littlefs 2.0, which every MicroPython with littlefs v2 mounts.

The superblock records the whole partition (``block_count`` = partition size / 4096), and
MicroPython mounts with the block count of the partition it finds, so the size must be
exactly the board's filesystem partition: take offset and size from the board definition
(``Board.filesystem_offset()``/``filesystem_size()``), never a constant. On the stock
v1.26+ tables that partition is not in the table: MicroPython creates ``vfs`` at boot from
the end of the app partition to the end of flash (0x200000 + 2 MiB on a 4 MB board with
the plain image, 0x310000 + 960 KiB with the -OTA image), which is where the v1.24/v1.25
tables put it on 4 MB boards too.

The files are laid out in the first few blocks and the image stops after the last block
in use (tens of KiB, not the whole partition): littlefs erases a block before it writes
one, so whatever the rest of the partition holds is free space to it. ``full=True`` pads
the image to the partition size with 0xFF (erased flash) instead.

Flash it with (esp32-devkitc, stock ESP32_GENERIC image)::

    esptool --chip esp32 write-flash 0x200000 acme-0001.littlefs.bin

Example::

    board = load_board("esp32-devkitc")
    files = {"config.json": b"...", "certs/device.crt.der": b"..."}
    image = build_image(files, partition_size=board.filesystem_size())
"""

from __future__ import annotations

from collections.abc import Mapping

from littlefs import LittleFS

from provisioning.errors import ProvisioningError

BLOCK_SIZE = 4096
# MicroPython's VfsLfs2 defaults (extmod/vfs_lfs.c, extmod/vfs_lfsx.c).
READ_SIZE = 32
PROG_SIZE = 32
LOOKAHEAD = 32
BLOCK_CYCLES = 100
CACHE_SIZE = 4 * max(READ_SIZE, PROG_SIZE)
NAME_MAX = 255
DISK_VERSION = 0x00020000


class ImageError(ProvisioningError, ValueError):
    """The files do not fit, or the partition cannot hold a littlefs filesystem."""


def _blocks_needed(files: Mapping[str, bytes]) -> int:
    # Superblock pair + one metadata pair per directory + each file's blocks (+1 for the
    # CTZ skip-list pointers of larger files), doubled for littlefs's copy-on-write.
    dirs = {p.rsplit("/", 1)[0] for p in files if "/" in p}
    data = sum(-(-len(b) // (BLOCK_SIZE - 64)) for b in files.values())
    return 2 * (2 + 2 * len(dirs) + data) + 4


def build_image(files: Mapping[str, bytes], partition_size: int, full: bool = False) -> bytes:
    """A littlefs image holding ``files`` (path relative to ``/`` -> content).

    Args:
        files: device paths (``certs/device.crt.der``) and their bytes.
        partition_size: the filesystem partition's size in bytes (multiple of 4096).
        full: pad to the partition size with 0xFF (default: stop after the last used block).

    Raises:
        ImageError: bad partition size, or the files do not fit.
    """
    if partition_size <= 0 or partition_size % BLOCK_SIZE:
        raise ImageError(f"partition size {partition_size:#x} is not a multiple of {BLOCK_SIZE}")
    total = partition_size // BLOCK_SIZE
    build = min(total, _blocks_needed(files))
    if build < 2:
        raise ImageError(f"partition of {partition_size} bytes is too small for littlefs")
    fs = LittleFS(
        block_size=BLOCK_SIZE,
        block_count=build,
        read_size=READ_SIZE,
        prog_size=PROG_SIZE,
        lookahead_size=LOOKAHEAD,
        cache_size=CACHE_SIZE,
        block_cycles=BLOCK_CYCLES,
        name_max=NAME_MAX,
        disk_version=DISK_VERSION,
    )
    made: set[str] = set()
    try:
        for path in sorted(files):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in made:
                    fs.mkdir(d)
                    made.add(d)
            with fs.open("/".join(parts), "wb") as f:
                f.write(files[path])
        if build < total:
            fs.fs_grow(total)
        fs.unmount()
    except Exception as exc:  # littlefs raises LittleFSError (NOSPC, ...)
        raise ImageError(f"files do not fit in the filesystem image: {exc}") from exc
    buf = bytes(fs.context.buffer)
    if full:
        return buf + b"\xff" * (partition_size - len(buf))
    erased = b"\xff" * BLOCK_SIZE
    last = 0
    for i in range(len(buf) // BLOCK_SIZE):
        if buf[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE] != erased:
            last = i
    return buf[: (last + 1) * BLOCK_SIZE]


def read_image(image: bytes, partition_size: int) -> dict[str, bytes]:
    """Every file in a littlefs image (for checks and tests); pads a trimmed image."""
    data = bytearray(image) + b"\xff" * (partition_size - len(image))
    fs = LittleFS(
        block_size=BLOCK_SIZE,
        block_count=partition_size // BLOCK_SIZE,
        read_size=READ_SIZE,
        prog_size=PROG_SIZE,
        lookahead_size=LOOKAHEAD,
        cache_size=CACHE_SIZE,
        block_cycles=BLOCK_CYCLES,
        mount=False,
    )
    fs.context.buffer[:] = data
    fs.mount()
    out: dict[str, bytes] = {}
    for root, _dirs, names in fs.walk("/"):
        for n in names:
            p = f"{root.rstrip('/')}/{n}".lstrip("/")
            with fs.open(p, "rb") as f:
                out[p] = f.read()
    fs.unmount()
    return out
