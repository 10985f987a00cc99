"""ESP-IDF app images (a MicroPython ``.app-bin``): check one, read its version, make one.

A ``firmware`` update bundle carries one ESP-IDF app image: what MicroPython publishes as
``ESP32_GENERIC-OTA-<date>-v1.28.0.app-bin`` for the ``-OTA`` board variant (the
interpreter only; thingkit's own code is files on littlefs and is updated by ``app``
bundles). The image is parsed with esptool's own image loader; its version is the one in
the app descriptor (``esp_app_desc_t``, magic 0xABCD5432 at the start of the first DROM
segment), the same field ESP-IDF's ``esp_ota_get_partition_description`` reads::

    info = read_app_image(Path("ESP32_GENERIC-OTA-20250415-v1.28.0.app-bin").read_bytes())
    info.version, info.project_name, info.chip      # "v1.28.0", "micropython", "esp32"

No MicroPython image can be downloaded here (package registries only), so tests and the
virtual kit use :func:`stand_in_image`: a minimal ELF built in Python, turned into a real
app image by esptool's ``elf2image``, whose descriptor names the version asked for. It is
a valid image to every check a bootloader makes, and runs nothing.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
from dataclasses import dataclass

from host_tools.errors import UserError

APP_DESC_MAGIC = 0xABCD5432
# The image header (24 bytes) and the first segment's header (8 bytes) come before the
# app descriptor: esp_ota_get_partition_description reads it at this offset.
APP_DESC_OFFSET = 0x20
ROMFS_MAGIC = b"\xd2\xcd\x31"  # a ROMFS image (mpremote romfs), what the sim used to ship
_VERSION_RE = re.compile(r"^v?(\d{1,6})\.(\d{1,6})\.(\d{1,6})")
# The chips of thingkit's boards, by the chip id in the image's extended header.
_CHIPS = {0: "esp32", 9: "esp32s3", 5: "esp32c3", 2: "esp32s2"}


@dataclass(frozen=True)
class AppImage:
    """What an app image says about itself (all checks passed)."""

    chip: str
    version: str  # the descriptor's version string, e.g. "v1.28.0"
    project_name: str  # e.g. "micropython"
    idf_ver: str
    segments: int
    size: int
    sha256_appended: bool

    @property
    def semver(self) -> str:
        """The version as MAJOR.MINOR.PATCH ("v1.28.0-preview" -> "1.28.0")."""
        return semver(self.version)


def semver(version: str) -> str:
    """``"v1.28.0"`` -> ``"1.28.0"``; the bundle manifest's form of a runtime version.

    Raises:
        UserError: no vMAJOR.MINOR.PATCH at the start of ``version``.
    """
    m = _VERSION_RE.match(version or "")
    if not m:
        raise UserError(
            f"app image version {version!r} is not vMAJOR.MINOR.PATCH",
            "a MicroPython release image (v1.24.1 ... v1.28.0)",
        )
    return f"{int(m[1])}.{int(m[2])}.{int(m[3])}"


def read_app_image(data: bytes, where: str = "image") -> AppImage:
    """Check ``data`` is an ESP-IDF app image and read its descriptor (esptool's parser).

    Checked as ESP-IDF checks an image before booting it: magic 0xE9, segment headers and
    lengths, the checksum, the appended SHA-256 when the header says one follows, and an
    app descriptor in the first segment.

    Raises:
        UserError: one line saying what the file is instead (a ROMFS image, garbage, a
            corrupt or truncated image, an image without an app descriptor).
    """
    from esptool.bin_image import LoadFirmwareImage
    from esptool.cmds import _parse_app_info

    data = bytes(data)
    if data[:3] == ROMFS_MAGIC:
        raise UserError(
            f"{where} is a ROMFS image, not an ESP-IDF app image",
            "firmware bundles take MicroPython's .app-bin (the -OTA board variant)",
        )
    if len(data) < 24 or data[0] != 0xE9:
        raise UserError(
            f"{where} is not an ESP-IDF app image (first byte {data[:1].hex() or 'none'}, "
            "an app image starts with e9)",
            "firmware bundles take MicroPython's .app-bin (the -OTA board variant)",
        )
    chip = _CHIPS.get(struct.unpack_from("<H", data, 12)[0])
    if chip is None:
        raise UserError(f"{where}: app image for an unsupported chip id {data[12]}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            img = LoadFirmwareImage(chip, data)
    except Exception as exc:  # noqa: BLE001 - esptool's FatalError and struct errors
        raise UserError(f"{where} is not a valid ESP-IDF app image: {exc}") from None
    if img.checksum != img.calculate_checksum():
        raise UserError(f"{where}: app image checksum does not match (corrupt image)")
    if img.append_digest and img.stored_digest != img.calc_digest:
        raise UserError(f"{where}: app image SHA-256 does not match (corrupt image)")
    desc = _parse_app_info(img.segments[0].data) if img.segments else None
    if not desc:
        raise UserError(
            f"{where}: app image has no app descriptor (magic {APP_DESC_MAGIC:#x})",
            "not an ESP-IDF application (a bootloader?)",
        )
    end = img.data_length if hasattr(img, "data_length") else len(data)
    return AppImage(
        chip=chip,
        version=desc["version"],
        project_name=desc["project_name"],
        idf_ver=desc["idf_ver"],
        segments=len(img.segments),
        size=end,
        sha256_appended=bool(img.append_digest),
    )


# -- a stand-in image ------------------------------------------------------------------
_SHT_PROGBITS, _SHT_STRTAB = 1, 3
_SHF_WRITE_ALLOC, _SHF_ALLOC_EXEC = 0x3, 0x6
# ESP32 addresses: flash-mapped data (DROM) after the image and segment headers,
# and instruction RAM (the entry point lives there).
_DROM_APPDESC = 0x3F400020
_IRAM = 0x40080000


def _app_desc(version: str, project: str, idf_ver: str) -> bytes:
    """A 256-byte esp_app_desc_t (ESP-IDF's app_image_format documentation)."""

    def field(text: str, n: int) -> bytes:
        raw = text.encode()[: n - 1]
        return raw + bytes(n - len(raw))

    return (
        struct.pack("<II", APP_DESC_MAGIC, 0)
        + bytes(8)
        + field(version, 32)
        + field(project, 32)
        + field("00:00:00", 16)
        + field("Jan  1 2025", 16)
        + field(idf_ver, 32)
        + bytes(32)  # app_elf_sha256 (elf2image fills it in)
        + bytes(80)
    )


def _elf(sections: list[tuple[str, int, int, bytes]], entry: int) -> bytes:
    """A minimal ELF32 Xtensa executable with the given (name, address, flags, data)
    sections and no program headers (esptool's elf2image takes sections)."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n, *_ in sections) + b".shstrtab\0"
    body = b""
    headers = [bytes(40)]  # section 0: SHT_NULL
    off = 52
    name_at = 1
    for name, addr, flags, data in sections:
        headers.append(
            struct.pack(
                "<10I", name_at, _SHT_PROGBITS, flags, addr, off + len(body), len(data), 0, 0, 4, 0
            )
        )
        name_at += len(name) + 1
        body += data + bytes(-len(data) % 4)
    strtab_off = off + len(body)
    headers.append(
        struct.pack("<10I", name_at, _SHT_STRTAB, 0, 0, strtab_off, len(names), 0, 0, 1, 0)
    )
    body += names + bytes(-len(names) % 4)
    shoff = off + len(body)
    ident = b"\x7fELF\x01\x01\x01" + bytes(9)
    head = ident + struct.pack(
        "<HHIIIIIHHHHHH", 2, 0x5E, 1, entry, 0, shoff, 0x300, 52, 32, 0, 40, len(headers),
        len(headers) - 1,
    )  # fmt: skip
    return head + body + b"".join(headers)


def stand_in_image(
    version: str = "v1.28.0",
    project: str = "micropython",
    idf_ver: str = "v5.4.1",
    padding: int = 0,
) -> bytes:
    """An ESP32 app image made by esptool's ``elf2image`` from a generated ELF, whose
    app descriptor says ``version`` and ``project``. ``padding`` bytes of constant data
    make it larger (a long download). It runs nothing: for tests and the virtual kit."""
    from esptool.cmds import elf2image

    rodata = _app_desc(version, project, idf_ver) + bytes(range(256)) * (padding // 256 + 1)
    rodata = rodata[: 256 + max(padding, 256)]
    elf = _elf(
        [
            (".flash.appdesc", _DROM_APPDESC, _SHF_WRITE_ALLOC, rodata),
            (".iram0.text", _IRAM, _SHF_ALLOC_EXEC, b"\x36\x41\x00\x1d\xf0\x00\x00\x00" * 8),
        ],
        entry=_IRAM,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        out = elf2image(elf, "esp32", output=None, flash_mode="dio", flash_size="4MB")
    assert isinstance(out, bytes)
    return out


__all__ = ["AppImage", "read_app_image", "semver", "stand_in_image"]
