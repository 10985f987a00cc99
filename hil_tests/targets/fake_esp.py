"""A stand-in ESP32-class chip in its serial bootloader, on ``socket://127.0.0.1:PORT``.

esptool's own code talks to it exactly as to a board (pyserial URL, SLIP frames, the ROM
loader's commands, the flasher stub upload and the stub's commands), so ``thingkit
flash`` can be tested without hardware. It keeps a flash array and a register file:

- chip detection: the magic register (ESP32) or GET_SECURITY_INFO's chip id (S3, C3);
- SPI flash id through the SPI peripheral registers (``detect_flash_size``);
- stub upload (MEM_BEGIN/DATA/END, then ``OHAI``), ERASE_FLASH, compressed and plain
  writes, SPI_FLASH_MD5;
- ``corrupt_writes``: flip a bit of every written block (a bad flash or cable), so the
  verify step has something to catch.

Everything it was asked is kept in ``log`` (command names) for tests to check.

    with FakeEsp("esp32", flash_size="4MB") as chip:
        flash(chip.url, board, image)
        assert chip.flash[0x1000:0x1000 + len(image)] == image
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import zlib
from typing import Self

from esptool.loader import ESPLoader
from esptool.targets import CHIP_DEFS

_CMD_NAMES = {v: k for k, v in ESPLoader.ESP_CMDS.items()}
_SIZE_IDS = {"1MB": 0x14, "2MB": 0x15, "4MB": 0x16, "8MB": 0x17, "16MB": 0x18}
_MB = 1024 * 1024


class FakeEsp:
    def __init__(self, chip: str = "esp32", flash_size: str = "4MB", corrupt_writes: bool = False):
        self.chip = chip
        self.cls = CHIP_DEFS[chip]
        self.flash = bytearray(b"\xff" * int(flash_size.removesuffix("MB")) * _MB)
        self.size_id = _SIZE_IDS[flash_size]
        self.corrupt_writes = corrupt_writes
        self.regs: dict[int, int] = {}
        self.log: list[str] = []
        self.stub = False
        self._write: dict | None = None
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(2)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fake-esp")
        self._thread.start()

    # -- transport ----------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(0.2)
            self.stub = False  # a new connection finds the chip in its ROM loader
            try:
                self._session(conn)
            finally:
                conn.close()

    def _session(self, conn: socket.socket) -> None:
        buf, frame, in_frame, esc = b"", bytearray(), False, False
        while not self._stop.is_set():
            try:
                buf = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not buf:
                return
            for b in buf:
                if b == 0xC0:
                    if in_frame and frame:
                        for reply in self._command(bytes(frame)):
                            conn.sendall(_slip(reply))
                    frame, in_frame = bytearray(), True
                elif in_frame:
                    if esc:
                        frame.append({0xDC: 0xC0, 0xDD: 0xDB}[b])
                        esc = False
                    elif b == 0xDB:
                        esc = True
                    else:
                        frame.append(b)

    # -- the loader ---------------------------------------------------------------------
    def _reply(self, op: int, val: int = 0, data: bytes = b"", status: int = 0, err: int = 0):
        body = data + bytes([status, err]) + (b"" if self.stub else b"\0\0")
        return struct.pack("<BBHI", 1, op, len(body), val) + body

    def _command(self, pkt: bytes) -> list[bytes]:
        _, op, size, _chk = struct.unpack("<BBHI", pkt[:8])
        data = pkt[8 : 8 + size]
        name = _CMD_NAMES.get(op, f"0x{op:02x}")
        self.log.append(name)
        handler = getattr(self, f"_do_{name.lower()}", None)
        if handler is None:
            return [self._reply(op)]
        return handler(op, data)

    def _do_sync(self, op: int, data: bytes) -> list[bytes]:
        return [self._reply(op, 0 if self.stub else 0x20120707) for _ in range(8)]

    def _do_read_reg(self, op: int, data: bytes) -> list[bytes]:
        (addr,) = struct.unpack("<I", data[:4])
        if addr == ESPLoader.CHIP_DETECT_MAGIC_REG_ADDR and self.cls.USES_MAGIC_VALUE:
            return [self._reply(op, self.cls.MAGIC_VALUE)]
        return [self._reply(op, self.regs.get(addr, 0))]

    def _do_write_reg(self, op: int, data: bytes) -> list[bytes]:
        addr, value, _mask, _delay = struct.unpack("<IIII", data[:16])
        self.regs[addr] = value
        base = self.cls.SPI_REG_BASE
        if addr == base and value & (1 << 18):  # SPI_CMD_USR: run the user command
            cmd = self.regs.get(base + self.cls.SPI_USR2_OFFS, 0) & 0xFFFF
            w0 = base + self.cls.SPI_W0_OFFS
            self.regs[w0] = (self.size_id << 16) | (0x40 << 8) | 0xC8 if cmd == 0x9F else 0
            self.regs[addr] = 0
        return [self._reply(op)]

    def _do_get_security_info(self, op: int, data: bytes) -> list[bytes]:
        if self.cls.USES_MAGIC_VALUE:  # ESP32's ROM does not know this command
            return [self._reply(op, status=1, err=5)]
        info = struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, self.cls.IMAGE_CHIP_ID, 0)
        return [self._reply(op, data=info)]

    def _do_mem_begin(self, op: int, data: bytes) -> list[bytes]:
        return [self._reply(op)]

    def _do_mem_data(self, op: int, data: bytes) -> list[bytes]:
        return [self._reply(op)]

    def _do_mem_end(self, op: int, data: bytes) -> list[bytes]:
        out = [self._reply(op)]
        self.stub = True
        return out + [b"OHAI"]

    def _do_erase_flash(self, op: int, data: bytes) -> list[bytes]:
        self.flash[:] = b"\xff" * len(self.flash)
        return [self._reply(op)]

    def _do_erase_region(self, op: int, data: bytes) -> list[bytes]:
        offset, size = struct.unpack("<II", data[:8])
        self.flash[offset : offset + size] = b"\xff" * size
        return [self._reply(op)]

    def _begin(self, op: int, data: bytes, compressed: bool) -> list[bytes]:
        size, _blocks, _bs, offset = struct.unpack("<IIII", data[:16])
        if offset + size > len(self.flash):
            return [self._reply(op, status=1, err=0xC1)]
        self._write = {
            "offset": offset,
            "pos": offset,
            "z": zlib.decompressobj() if compressed else None,
        }
        return [self._reply(op)]

    def _data(self, op: int, data: bytes) -> list[bytes]:
        if self._write is None:
            return [self._reply(op, status=1, err=0xC2)]
        length = struct.unpack("<I", data[:4])[0]
        block = data[16 : 16 + length]
        w = self._write
        raw = w["z"].decompress(block) if w["z"] is not None else block
        if self.corrupt_writes and raw:
            raw = bytes([raw[0] ^ 0x01]) + raw[1:]
        self.flash[w["pos"] : w["pos"] + len(raw)] = raw
        w["pos"] += len(raw)
        return [self._reply(op)]

    def _do_flash_defl_begin(self, op: int, data: bytes) -> list[bytes]:
        return self._begin(op, data, compressed=True)

    def _do_flash_defl_data(self, op: int, data: bytes) -> list[bytes]:
        return self._data(op, data)

    def _do_flash_begin(self, op: int, data: bytes) -> list[bytes]:
        return self._begin(op, data, compressed=False)

    def _do_flash_data(self, op: int, data: bytes) -> list[bytes]:
        return self._data(op, data)

    def _do_spi_flash_md5(self, op: int, data: bytes) -> list[bytes]:
        addr, size = struct.unpack("<II", data[:8])
        digest = hashlib.md5(self.flash[addr : addr + size])
        body = digest.digest() if self.stub else digest.hexdigest().encode()
        return [self._reply(op, data=body)]

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _slip(pkt: bytes) -> bytes:
    return b"\xc0" + pkt.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"
