"""Update bundles on the device: verify the signed manifest, then stream the payload.

Format (docs/ota_bundles.rst, "Format"; host side host_tools/ota/bundle.py)::

    b"TKOTA1\\n\\0" | u32 BE M | M bytes manifest JSON | 64 bytes sig r||s | payload

The signature (ECDSA P-256 over SHA-256 of the manifest bytes) is checked with the
provisioned key as soon as the header is in, before one payload byte is accepted.

API for the update agent::

    from tk import ota_bundle as ob
    h = ob.Header(open("certs/ota-signing.der", "rb").read())  # p256.BadKey if invalid
    while True:
        rest = h.feed(block)        # None: header incomplete, send the next block
        if rest is not None:        # verified; rest = payload bytes of this block
            break
    m = h.check(board="sim", chip="sim", running="1.0.0", capacity=SLOT_BYTES,
                kinds=("app",), size=job_doc_size)   # the manifest dict, or Refused
    p = ob.Payload(m, writer)
    p.feed(rest)                    # payload bytes, in order (or feed(data, at=pos))
    ...                             # persist p.offset after each write you flushed
    p.finish()                      # every byte in, every SHA-256 right, or Refused

``writer`` has two methods: ``write(path, at, data)`` stores ``data`` (a memoryview) at
byte ``at`` of file ``path`` (empty data for an empty file), and
``read(path, at, buf) -> n`` reads back up to len(buf) bytes (for a resume).

Resume after a reboot: download and check the header again (h.length bytes), make a
Payload and call ``p.resume(offset)`` with the persisted payload offset: it re-hashes
those bytes from the slot through ``writer.read`` (hash state cannot be saved). Then
ask for bundle bytes from ``h.length + offset`` and ``feed(data, at=...)`` (bytes
before p.offset are skipped). If resume raises Refused("slot_changed") start over
with a fresh Payload at offset 0.

Every refusal is ``Refused(reason, detail)``; ``str(e)`` = "reason: detail" fits a job's
statusDetails. Reasons: bad_format, unsigned, wrong_key, bad_signature, wrong_kind,
wrong_board, same_version, downgrade, min_version, too_large, truncated, corrupt,
slot_changed. Versions are MAJOR.MINOR.PATCH compared as integer tuples: a bundle is
taken only if version > running and running >= min_version.
"""
import hashlib
import json
import struct
from binascii import hexlify, unhexlify

from tk import p256

MAGIC = b"TKOTA1\n\0"
MAX_MANIFEST = 8192
_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"


class Refused(Exception):
    """A bundle this device will not take: ``reason`` (a code) and ``detail``."""

    def __init__(self, reason, detail=""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self):
        return self.reason + ": " + self.detail if self.detail else self.reason


def version(text):
    """"1.2.0" -> (1, 2, 0); ValueError if not MAJOR.MINOR.PATCH."""
    parts = text.split(".") if isinstance(text, str) else ()
    if len(parts) != 3 or not all(p.isdigit() and len(p) < 7 for p in parts):
        raise ValueError("bad version %r" % (text,))
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def _path_ok(path, kind):
    if not isinstance(path, str) or not 0 < len(path) <= 96:
        return False
    for part in path.split("/"):
        if part in ("", ".", "..") or any(c not in _SAFE for c in part):
            return False
    if kind == "app":
        return path.endswith(".mpy")
    return path == "firmware.bin"


def _manifest_problem(m):
    if not isinstance(m, dict) or m.get("format") != 1:
        return "manifest format is not 1"
    for k in ("kind", "version", "min_version", "key_id", "payload_sha256"):
        if not isinstance(m.get(k), str):
            return "manifest field %s missing" % k
    if not isinstance(m.get("boards"), list) or not isinstance(m.get("files"), list):
        return "manifest boards/files missing"
    try:
        version(m["version"])
        version(m["min_version"])
    except ValueError as e:
        return str(e)
    total = 0
    for f in m["files"]:
        if not isinstance(f, dict):
            return "a file entry is not an object"
        path = f.get("path")
        if not _path_ok(path, m["kind"]):
            return "unsafe or unexpected file path %r" % (path,)
        size, digest = f.get("size"), f.get("sha256")
        if not isinstance(size, int) or size < 0 or not isinstance(digest, str) \
                or len(digest) != 64:
            return "file %s has no valid size/sha256" % path
        total += size
    if total != m.get("payload_size") or len(m["payload_sha256"]) != 64:
        return "file sizes do not add up to payload_size"
    return None


class Header:
    """Collects the header from the first bytes of a bundle and verifies its signature."""

    def __init__(self, pubkey_der):
        self.key = p256.load_pubkey(pubkey_der)
        self.key_id = hexlify(hashlib.sha256(bytes(pubkey_der)).digest()[:8]).decode()
        self._head = bytearray()  # magic + length, then manifest + signature
        self._buf = None
        self._n = 0
        self.length = None  # bytes before the payload, once the first 12 are in
        self.manifest = None  # set only once the signature verified

    def feed(self, data):
        """Take the next bytes; None while incomplete, else the payload part of ``data``.

        Raises Refused: bad_format, unsigned, wrong_key, bad_signature.
        """
        mv = memoryview(data)
        if self.manifest is not None:
            return mv
        if self._buf is None:
            n = min(12 - len(self._head), len(mv))
            self._head += mv[:n]
            mv = mv[n:]
            if len(self._head) < 12:
                return None
            if bytes(self._head[:8]) != MAGIC:
                raise Refused("bad_format", "not an OTA bundle (bad magic)")
            mlen = struct.unpack(">I", self._head[8:12])[0]
            if mlen > MAX_MANIFEST:
                raise Refused("bad_format", "manifest of %d bytes is over %d"
                              % (mlen, MAX_MANIFEST))
            self._buf = bytearray(mlen + 64)
            self.length = 12 + mlen + 64
        n = min(len(self._buf) - self._n, len(mv))
        self._buf[self._n : self._n + n] = mv[:n]
        self._n += n
        if self._n < len(self._buf):
            return None
        self._verify()
        return mv[n:]

    def _verify(self):
        buf = self._buf
        mlen = len(buf) - 64
        sig = memoryview(buf)[mlen:]
        if not any(sig):
            raise Refused("unsigned", "the bundle has no signature")
        ok = p256.verify(self.key, hashlib.sha256(memoryview(buf)[:mlen]).digest(), sig)
        try:
            m = json.loads(memoryview(buf)[:mlen])
        except ValueError:
            m = None
        if not ok:
            kid = m.get("key_id") if isinstance(m, dict) else None
            if isinstance(kid, str) and kid != self.key_id:
                raise Refused("wrong_key", "signed by key %s, this device trusts %s"
                              % (kid, self.key_id))
            raise Refused("bad_signature", "the manifest signature does not verify")
        problem = _manifest_problem(m)
        if problem:
            raise Refused("bad_format", problem)
        if m["key_id"] != self.key_id:
            raise Refused("wrong_key", "manifest names key %s" % m["key_id"])
        self._buf = self._head = None
        self.manifest = m

    def check(self, board, chip, running, capacity, kinds=("app", "firmware"), size=None):
        """Refuse a verified bundle this device must not take; return its manifest.

        ``running``: the running version; ``capacity``: bytes the target slot holds;
        ``size``: the whole bundle's length if known (the job document's ``size``).
        """
        m = self.manifest
        if m is None:
            raise Refused("truncated", "the header is incomplete")
        if m["kind"] not in kinds:
            raise Refused("wrong_kind", "kind %s is not one of %s" % (m["kind"], ",".join(kinds)))
        if board not in m["boards"]:
            raise Refused("wrong_board", "for boards %s, this is %s"
                          % (",".join(m["boards"]), board))
        chips = m.get("chips")
        if chips and chip not in chips:
            raise Refused("wrong_board", "for chips %s, this is %s" % (",".join(chips), chip))
        v, r = version(m["version"]), version(running)
        if v == r:
            raise Refused("same_version", "version %s is already running" % running)
        if v < r:
            raise Refused("downgrade", "version %s is older than running %s"
                          % (m["version"], running))
        if r < version(m["min_version"]):
            raise Refused("min_version", "needs %s or later, running %s"
                          % (m["min_version"], running))
        psize = m["payload_size"]
        if psize > capacity:
            raise Refused("too_large", "payload %d bytes, slot holds %d" % (psize, capacity))
        whole = self.length + psize
        if size is not None and size != whole:
            raise Refused("truncated" if size < whole else "too_large",
                          "bundle is %d bytes, manifest says %d" % (size, whole))
        return m


class Payload:
    """Routes payload bytes to per-file writes and checks each file's and the whole SHA-256."""

    def __init__(self, manifest, writer):
        self.files = manifest["files"]
        self.size = manifest["payload_size"]
        self._want = manifest["payload_sha256"]
        self.writer = writer
        self.offset = 0  # payload bytes taken (written and hashed)
        self._i = 0  # index of the file being written
        self._at = 0  # bytes of it written
        self._h = hashlib.sha256()
        self._ph = hashlib.sha256()
        self._empty_files()

    def _empty_files(self):
        files = self.files
        while self._i < len(files) and files[self._i]["size"] == 0:
            self.writer.write(files[self._i]["path"], 0, memoryview(b""))
            self._file_done()

    def _file_done(self):
        f = self.files[self._i]
        got = hexlify(self._h.digest()).decode()
        if got != f["sha256"]:
            raise Refused("corrupt", "file %s: sha256 does not match the manifest" % f["path"])
        self._i += 1
        self._at = 0
        self._h = hashlib.sha256()

    def _take(self, mv, write):
        # mv: payload bytes at self.offset; written (if write) and hashed, file by file.
        while len(mv):
            f = self.files[self._i]
            n = min(f["size"] - self._at, len(mv))
            part = mv[:n]
            if write:
                self.writer.write(f["path"], self._at, part)
            self._h.update(part)
            self._ph.update(part)
            self._at += n
            self.offset += n
            mv = mv[n:]
            if self._at == f["size"]:
                self._file_done()
                self._empty_files()

    def feed(self, data, at=None):
        """Take payload bytes in order.

        ``at`` (optional): the payload offset of data[0]; bytes before ``offset`` (a
        block sent again, or the start of the block a resume begins in) are skipped.
        """
        mv = memoryview(data)
        if at is not None:
            if at > self.offset:
                raise ValueError("payload gap: have %d, got data at %d" % (self.offset, at))
            mv = mv[min(self.offset - at, len(mv)) :]
        if self.offset + len(mv) > self.size:
            raise Refused("too_large", "more than the %d payload bytes" % self.size)
        self._take(mv, True)

    def resume(self, offset, buf=None):
        """Re-hash the first ``offset`` payload bytes from the slot (after a reboot)."""
        if self.offset or not 0 <= offset <= self.size:
            raise ValueError("resume(%d) at %d of %d" % (offset, self.offset, self.size))
        buf = buf or bytearray(512)
        try:
            while self.offset < offset:
                f = self.files[self._i]
                want = min(len(buf), f["size"] - self._at, offset - self.offset)
                n = self.writer.read(f["path"], self._at, memoryview(buf)[:want])
                if not n:
                    raise Refused("slot_changed", "file %s is shorter than written"
                                  % f["path"])
                self._take(memoryview(buf)[:n], False)
        except OSError as e:
            raise Refused("slot_changed", "cannot read the slot back: %s" % e)
        except Refused as e:
            if e.reason == "slot_changed":
                raise
            raise Refused("slot_changed", e.detail)

    def finish(self):
        """Every byte in and the whole payload's SHA-256 right, else Refused."""
        if self.offset < self.size:
            raise Refused("truncated", "payload ended at %d of %d bytes"
                          % (self.offset, self.size))
        if hexlify(self._ph.digest()).decode() != self._want:
            raise Refused("corrupt", "payload sha256 does not match the manifest")
        return True
