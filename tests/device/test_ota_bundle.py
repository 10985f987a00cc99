"""tk.ota_bundle on the MicroPython unix port, fed real bundles built and signed on the host.

Each case runs an agent-like driver (DRIVER below) in a fresh MicroPython process: it
reads the bundle in blocks as the MQTT file delivery would hand them over, checks the
header, writes the payload into ``slot/`` through a file writer, and reports the outcome.
The host then looks at the bytes in ``slot/``: refusals before the payload leave no slot
at all; an accepted bundle leaves exactly the compiled files, which then import and run.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from host_tools.ota import bundle, keys

DRIVER = r"""
import json, os
from tk import ota_bundle as ob
from tkfakes import out


def mkdirs(path):
    cur = ""
    for part in path.split("/"):
        cur = part if not cur else cur + "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass


class Writer:
    # Files under root, written in place (a resume rewrites from any offset).
    def __init__(self, root):
        self.root = root
        self.writes = 0

    def write(self, path, at, data):
        self.writes += 1
        full = self.root + "/" + path
        mkdirs(full.rpartition("/")[0])
        try:
            os.stat(full)
        except OSError:
            open(full, "wb").close()
        with open(full, "r+b") as f:
            f.seek(at)
            f.write(data)

    def read(self, path, at, buf):
        try:
            f = open(self.root + "/" + path, "rb")
        except OSError:
            return 0
        with f:
            f.seek(at)
            return f.readinto(buf) or 0


a = json.load(open("args.json"))
blk_size = a.get("block", 1024)
w = Writer("slot")
h = ob.Header(open("certs/ota-signing.der", "rb").read())
res = {"writes": 0}
try:
    f = open(a["bundle"], "rb")
    rest = None
    while rest is None:
        blk = f.read(blk_size)
        if not blk:
            raise ob.Refused("truncated", "the bundle ended inside its header")
        rest = h.feed(blk)
    m = h.check(a.get("board", "sim"), a.get("chip", "sim"), a.get("running", "1.0.0"),
                a.get("capacity", 512 * 1024), tuple(a.get("kinds", ["app", "firmware"])),
                a.get("size"))
    p = ob.Payload(m, w)
    start = a.get("resume", 0)
    if start:
        p.resume(start)
    pos = (h.length + start) // blk_size * blk_size  # the block holding the resume point
    f.seek(pos)
    stop = a.get("stop_at")
    while True:
        blk = f.read(blk_size)
        if not blk:
            break
        at = pos - h.length
        if at < 0:
            blk, at = blk[-at:], 0
        pos += blk_size
        if stop is not None and at + len(blk) > stop:
            # Power cut: the agent persisted `stop`; `torn` more bytes reached flash.
            end = max(stop + a.get("torn", 0) - at, 0)
            p.feed(blk[:end], at=at)
            res.update(stopped=stop, offset=p.offset)
            break
        p.feed(blk, at=at)
    if stop is not None:
        res.update(stopped=stop, offset=p.offset)  # the cut came after the last byte
    else:
        p.finish()
        res.update(ok=True, offset=p.offset, version=m["version"])
except ob.Refused as e:
    res.update(ok=False, reason=e.reason, detail=e.detail, text=str(e))
res["writes"] = w.writes
res["header_verified"] = h.manifest is not None
out(res)
"""

SOURCE = {
    "tk/__init__.py": "",
    "tk/version.py": '# Firmware version.\nVERSION = "0.0.0"\n',
    "tk/hello.py": "from tk.version import VERSION\n\ndef hi():\n    return 'hi from ' + VERSION\n",
    "tk/big.py": "WORDS = [\n"
    + "".join(f"    'word number {i} of the big module',\n" for i in range(160))
    + "]\n",
    "hal/__init__.py": "NAME = 'sim'\n",
    "main.py": "import tk.main\n",
}


@pytest.fixture(scope="module")
def keyset() -> dict[str, ec.EllipticCurvePrivateKey]:
    return {
        "good": ec.generate_private_key(ec.SECP256R1()),
        "other": ec.generate_private_key(ec.SECP256R1()),
    }


@pytest.fixture(scope="module")
def app_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    src = tmp_path_factory.mktemp("src")
    for rel, text in SOURCE.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    return bundle.compile_app(src, "1.2.0")


def signed(files: dict[str, bytes], key, **kw) -> bytes:
    args = {"version": "1.2.0", "min_version": "1.0.0", "boards": ["sim", "esp32-devkitc"]}
    args.update(kw)
    return bundle.sign(bundle.build(files, **args), key)


def sign_manifest(manifest: dict, payload: bytes, key) -> bytes:
    """A bundle whose manifest is signed as given (even one the host would refuse)."""
    mb = bundle.canonical_json(manifest)
    sig = keys.sign_digest(key, hashlib.sha256(mb).digest())
    return bundle.MAGIC + struct.pack(">I", len(mb)) + mb + sig + payload


class Device:
    """The device filesystem of one test (mpy's cwd) with the good key provisioned."""

    def __init__(self, mpy, key) -> None:
        self.mpy = mpy
        self.root: Path = mpy.cwd
        mpy.write("certs/ota-signing.der", keys.public_der(key))

    def install(self, data: bytes, timeout: float = 60, **args: object) -> dict:
        self.mpy.write("bundle.bin", data)
        self.mpy.write("args.json", json.dumps({"bundle": "bundle.bin", **args}))
        return self.mpy.one(DRIVER, timeout=timeout)

    def slot(self) -> dict[str, bytes]:
        base = self.root / "slot"
        if not base.exists():
            return {}
        return {
            p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()
        }


@pytest.fixture
def dev(mpy, keyset) -> Device:
    return Device(mpy, keyset["good"])


# -- accepted --------------------------------------------------------------------------
@pytest.mark.parametrize("block", [7, 256, 1024, 1 << 20])
def test_signed_bundle_installs_the_exact_files(dev: Device, app_files, keyset, block: int) -> None:
    data = signed(app_files, keyset["good"])
    r = dev.install(data, block=block)
    assert r["ok"] is True, r
    assert r["offset"] == sum(len(d) for d in app_files.values())
    assert dev.slot() == app_files
    assert "main.mpy" not in app_files and "main.py" not in app_files


def test_installed_modules_run_and_report_the_bundle_version(
    dev: Device, app_files, keyset
) -> None:
    assert dev.install(signed(app_files, keyset["good"]))["ok"]
    got = dev.mpy.one("""
        import sys
        sys.path.insert(0, "slot")
        from tkfakes import out
        import tk.hello
        out([tk.hello.hi(), tk.hello.__file__])
    """)
    assert got == ["hi from 1.2.0", "slot/tk/hello.mpy"]


def test_boundaries_are_accepted(dev: Device, app_files, keyset) -> None:
    data = signed(app_files, keyset["good"])
    size = sum(len(d) for d in app_files.values())
    # running == min_version, slot exactly the payload size, the job's size exact.
    r = dev.install(data, running="1.0.0", capacity=size, size=len(data))
    assert r["ok"], r


def test_empty_files_and_firmware_kind(dev: Device, keyset) -> None:
    files = {"a.mpy": b"", "tk/b.mpy": bytes(range(256)) * 9, "z.mpy": b""}
    r = dev.install(signed(files, keyset["good"]), block=100)
    assert r["ok"], r
    assert dev.slot() == files
    image = random.Random(1).randbytes(5000)
    fw = signed({"firmware.bin": image}, keyset["good"], kind="firmware", chips=["sim"])
    (dev.root / "slot").rename(dev.root / "slot.old")
    r = dev.install(fw, kinds=["firmware"])
    assert r["ok"], r
    assert dev.slot() == {"firmware.bin": image}


# -- refused before any payload byte ----------------------------------------------------
def _flip(data: bytes, pos: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 0x01
    return bytes(b)


def header_refusals(files: dict[str, bytes], keyset) -> dict[str, tuple[bytes, dict, str]]:
    good = signed(files, keyset["good"])
    b = bundle.parse(good)
    mstart = 12
    vpos = mstart + b.manifest_bytes.index(b'"version":"1.2.0"') + len('"version":"1.2.')
    sig_pos = mstart + len(b.manifest_bytes) + 10
    payload = b.payload
    m = dict(b.manifest)
    traversal = dict(m, files=[dict(m["files"][0], path="../main.mpy"), *m["files"][1:]])
    not_mpy = dict(m, files=[dict(m["files"][0], path="tk/evil.py"), *m["files"][1:]])
    sizes = dict(m, payload_size=m["payload_size"] + 1)
    not_object = dict(m, files=[m["files"][0]["path"], *m["files"][1:]])
    huge = bundle.MAGIC + struct.pack(">I", bundle.MAX_MANIFEST + 1) + bytes(100)
    return {
        "unsigned": (bundle.build(files, version="1.2.0", boards=["sim"]), {}, "unsigned"),
        "wrong_key": (signed(files, keyset["other"]), {}, "wrong_key"),
        "manifest_edited": (good[:vpos] + b"9" + good[vpos + 1 :], {}, "bad_signature"),
        "signature_bit": (_flip(good, sig_pos), {}, "bad_signature"),
        "wrong_board": (good, {"board": "m5stack-core2", "chip": "esp32"}, "wrong_board"),
        "wrong_chip": (
            signed(files, keyset["good"], chips=["esp32"]),
            {"board": "sim", "chip": "sim"},
            "wrong_board",
        ),
        "wrong_kind": (good, {"kinds": ["firmware"]}, "wrong_kind"),
        "same_version": (good, {"running": "1.2.0"}, "same_version"),
        "downgrade": (good, {"running": "1.10.0"}, "downgrade"),
        "below_min_version": (good, {"running": "0.9.9"}, "min_version"),
        "too_large": (good, {"capacity": len(payload) - 1}, "too_large"),
        "truncated_per_job_size": (good[:-1], {"size": len(good) - 1}, "truncated"),
        "truncated_header": (good[: mstart + 40], {}, "truncated"),
        "bad_magic": (b"TKOTA2\n\0" + good[8:], {}, "bad_format"),
        "manifest_too_large": (huge, {}, "bad_format"),
        "signed_path_traversal": (
            sign_manifest(traversal, payload, keyset["good"]),
            {},
            "bad_format",
        ),
        "signed_non_mpy": (sign_manifest(not_mpy, payload, keyset["good"]), {}, "bad_format"),
        "signed_bad_sizes": (sign_manifest(sizes, payload, keyset["good"]), {}, "bad_format"),
        "signed_entry_not_object": (
            sign_manifest(not_object, payload, keyset["good"]),
            {},
            "bad_format",
        ),
    }


CASES = [
    "unsigned",
    "wrong_key",
    "manifest_edited",
    "signature_bit",
    "wrong_board",
    "wrong_chip",
    "wrong_kind",
    "same_version",
    "downgrade",
    "below_min_version",
    "too_large",
    "truncated_per_job_size",
    "truncated_header",
    "bad_magic",
    "manifest_too_large",
    "signed_path_traversal",
    "signed_non_mpy",
    "signed_bad_sizes",
    "signed_entry_not_object",
]


@pytest.mark.parametrize("case", CASES)
def test_refused_before_the_payload(dev: Device, app_files, keyset, case: str) -> None:
    data, args, reason = header_refusals(app_files, keyset)[case]
    r = dev.install(data, **args)
    assert r["ok"] is False and r["reason"] == reason, r
    assert r["text"].startswith(reason + ": ") and len(r["text"]) < 200
    assert r["writes"] == 0 and dev.slot() == {}, "a refused bundle touched the slot"
    # Signature, key and format refusals happen before the manifest is trusted.
    untrusted = ("unsigned", "wrong_key", "bad_signature", "bad_format")
    assert r["header_verified"] is not (reason in untrusted or case == "truncated_header")


# -- refused while streaming ------------------------------------------------------------
def test_payload_corrupted_after_signing(dev: Device, app_files, keyset) -> None:
    data = signed(app_files, keyset["good"])
    b = bundle.parse(data)
    paths = list(app_files)
    victim = 2
    at = b.header_len + sum(len(app_files[p]) for p in paths[:victim]) + 5
    r = dev.install(_flip(data, at))
    assert (r["ok"], r["reason"]) == (False, "corrupt"), r
    assert paths[victim] in r["detail"]
    # Refused at the end of the damaged file: nothing after it was written.
    assert set(dev.slot()) == set(paths[: victim + 1])


def test_payload_truncated_without_job_size(dev: Device, app_files, keyset) -> None:
    data = signed(app_files, keyset["good"])
    r = dev.install(data[:-100])
    assert (r["ok"], r["reason"]) == (False, "truncated"), r
    size = sum(len(d) for d in app_files.values())
    assert r["detail"] == f"payload ended at {size - 100} of {size} bytes"


def test_trailing_bytes_are_refused(dev: Device, app_files, keyset) -> None:
    r = dev.install(signed(app_files, keyset["good"]) + b"extra")
    assert (r["ok"], r["reason"]) == (False, "too_large"), r


# -- resume -------------------------------------------------------------------------------
def resume_points(files: dict[str, bytes]) -> list[int]:
    sizes = [len(d) for d in files.values()]
    ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    total = ends[-1]
    return [1, sizes[0] // 2, ends[0], ends[1] + 3, ends[-2], total - 1, total]


@pytest.mark.parametrize("torn", [0, 37])
@pytest.mark.parametrize("block", [1024, 333])
def test_resume_after_interruption(mpy, keyset, app_files, block: int, torn: int) -> None:
    data = signed(app_files, keyset["good"])
    for k, stop in enumerate(resume_points(app_files)):
        dev = Device(mpy, keyset["good"])
        slot = dev.root / "slot"
        if slot.exists():
            for p in sorted(slot.rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            slot.rmdir()
        first = dev.install(data, block=block, stop_at=stop, torn=torn)
        assert first.get("stopped") == stop and first["offset"] <= stop + torn, (k, first)
        second = dev.install(data, block=block, resume=stop)
        assert second["ok"] is True, (stop, second)
        assert dev.slot() == app_files, f"slot differs after resuming at {stop}"


def test_resume_notices_a_slot_changed_behind_its_back(dev: Device, app_files, keyset) -> None:
    data = signed(app_files, keyset["good"])
    paths = list(app_files)
    stop = len(app_files[paths[0]]) + len(app_files[paths[1]]) + 10
    assert dev.install(data, stop_at=stop)["stopped"] == stop
    victim = dev.root / "slot" / paths[1]
    victim.write_bytes(_flip(victim.read_bytes(), 3))
    r = dev.install(data, resume=stop)
    assert (r["ok"], r["reason"]) == (False, "slot_changed"), r
    assert paths[1] in r["detail"] and r["text"].count("slot_changed") == 1
    victim.unlink()
    r = dev.install(data, resume=stop)
    assert (r["ok"], r["reason"]) == (False, "slot_changed"), r


# -- the real firmware --------------------------------------------------------------------
def test_whole_firmware_app_bundle_and_its_header_heap(dev: Device, keyset) -> None:
    files = bundle.compile_app(version="2.0.0")
    data = signed(files, keyset["good"], version="2.0.0")
    r = dev.install(data, timeout=120)
    assert r["ok"], r
    assert dev.slot() == files
    dev.mpy.write("header.bin", data[: bundle.parse(data).header_len])
    got = dev.mpy.one("""
        import gc
        from tk import ota_bundle as ob
        from tkfakes import out
        key = open("certs/ota-signing.der", "rb").read()
        data = open("header.bin", "rb").read()
        gc.collect()
        before = gc.mem_alloc()
        h = ob.Header(key)
        h.feed(data)
        gc.collect()
        out({"held": gc.mem_alloc() - before, "files": len(h.manifest["files"])})
    """)
    assert got["files"] == len(files)
    print(f"manifest of {len(files)} files held in {got['held']} bytes of heap (unix port)")
    assert got["held"] < 32 * 1024
