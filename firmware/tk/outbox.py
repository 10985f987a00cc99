"""Durable FIFO of telemetry records on the device filesystem (store and forward).

Every record App #2 takes goes here first; the session publishes from the front at QoS 1
and a record leaves only once its PUBACK came. Power may be cut at any point: a torn
write is found by its length and CRC and skipped, never a crash.

    ob = Outbox("outbox", max_records=512)
    ob.append(b'{"seq": 1, ...}')   # on flash when it returns
    rec = ob.peek()                  # the oldest record (bytes), or None
    client.publish(topic, rec, False, 1)
    ob.pop()                         # acknowledged: it may leave
    ob.save()                        # persist the head (once per batch)

Files in ``outbox/``::

    sNNNNNNNN   a segment: up to seg_records frames, appended in order (NNNNNNNN hex)
    tNNNNNNNN   the same segment after downsampling (written aside, then renamed)
    head        28 bytes, replaced by rename: b"TKH1", u32 segment, u32 offset of the
                oldest unsent frame, u32 dropped, u32 downsampled, u32 0, CRC-32 of the 24

Frame: ``A5 5A``, u16 LE payload length, u32 LE CRC-32 of (length bytes + payload),
payload. Only the newest segment is ever appended to. A bad frame with an intact header
is skipped; any other bad frame (torn write, bad magic or length) ends its segment, and
a segment that ends that way is never appended to again.

When full (``max_records``): first the oldest segment not yet downsampled (never the
one being sent or the one being written) loses every other record (``downsampled``
counts them); once every such segment has been halved, the oldest record is dropped
(``dropped``). Both counters live in the head, across reboots; ``corrupt`` counts the
bad frames found since boot. RAM: a few words per segment; records are read one at a
time.
"""
import os
import struct
from micropython import const

from tk.log import Logger

try:
    from binascii import crc32
except ImportError:  # a build without binascii.crc32: slow, but the same CRC
    def crc32(data, crc=0):
        crc ^= 0xFFFFFFFF
        for b in data:
            crc ^= b
            for _ in range(8):
                crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
        return crc ^ 0xFFFFFFFF

_log = Logger("outbox")

MAX_RECORD = const(4096)  # bytes of one record (a telemetry message is a few hundred)
_HDR = const(8)
_MAGIC0 = const(0xA5)
_MAGIC1 = const(0x5A)
_HEAD_MAGIC = b"TKH1"
_GOOD = const(0)
_BADCRC = const(1)  # header intact, payload bad: skip this frame
_END = const(2)  # end of the segment's readable frames (EOF, torn write, garbage)
# Per-segment entry: [number, records not yet sent, flags, records written]
_THIN = const(1)  # downsampled (a t-file)
_SEALED = const(2)  # no more appends (full, torn, or downsampled)


def _name(num, thin=False):
    return "%s%08x" % ("t" if thin else "s", num)


class Outbox:
    def __init__(self, path="outbox", max_records=512, seg_records=None):
        self.dir = path
        self.max = max_records
        self.seg_records = seg_records or max(2, min(32, max_records // 8))
        self.size = 0
        self.dropped = 0
        self.downsampled = 0
        self.corrupt = 0
        self.segs = []
        self.off = 0  # byte offset of the oldest unsent frame in segs[0]
        self._next = 0  # number of the next new segment
        self._hb = bytearray(_HDR)
        self._cur = None  # (payload, next offset) of the frame peek() returned
        self._dirty = False
        try:
            self._load()
        except Exception as e:  # a bug or a broken filesystem: start empty, never loop
            _log.error("cannot read %s (%r): starting it empty", path, e)
            self._wipe()
        if self.size:
            _log.info("%d records queued in %d segments", self.size, len(self.segs))

    # -- paths and the head file -------------------------------------------------------
    def _path(self, num, thin=False):
        return self.dir + "/" + _name(num, thin)

    def _seg_path(self, s):
        return self._path(s[0], s[2] & _THIN)

    def _read_head(self):
        for name in ("head", "head.tmp"):
            try:
                with open(self.dir + "/" + name, "rb") as f:
                    b = f.read(28)
            except OSError:
                continue
            if len(b) == 28 and b[:4] == _HEAD_MAGIC and \
                    struct.unpack("<I", b[24:])[0] == crc32(b[:24]):
                return struct.unpack("<IIIII", b[4:24])
        return None

    def save(self):
        """Write the head (where sending resumes, counters) if it changed: a 28-byte
        file written aside and renamed over the old one."""
        if not self._dirty:
            return
        seg = self.segs[0][0] if self.segs else self._next
        b = _HEAD_MAGIC + struct.pack("<IIIII", seg, self.off, self.dropped,
                                      self.downsampled, 0)
        b += struct.pack("<I", crc32(b))
        head, tmp = self.dir + "/head", self.dir + "/head.tmp"
        with open(tmp, "wb") as f:
            f.write(b)
        try:
            os.rename(tmp, head)
        except OSError:  # FAT: rename does not replace; the reader falls back to head.tmp
            os.remove(head)
            os.rename(tmp, head)
        self._dirty = False

    # -- opening: scan what is on flash ----------------------------------------------
    def _load(self):
        try:
            os.mkdir(self.dir)
        except OSError:
            pass
        found = {}  # segment number -> _THIN or 0
        for ent in os.ilistdir(self.dir):
            name = ent[0]
            if name.endswith(".tmp") and name != "head.tmp":
                os.remove(self.dir + "/" + name)  # a downsampling cut short
                continue
            if len(name) != 9 or name[0] not in "st":
                continue  # not ours: left alone
            try:
                num = int(name[1:], 16)
            except ValueError:
                continue
            if num in found:  # both s and t: the t-file is complete, the s-file stale
                os.remove(self._path(num))
            if name[0] == "t" or num not in found:
                found[num] = _THIN if name[0] == "t" else 0
        nums = sorted(found)
        head = self._read_head()
        hseg, hoff = -1, 0
        if head is not None:
            hseg, hoff, self.dropped, self.downsampled, _ = head
            self._next = hseg
            for num in nums:
                if num < hseg:  # all sent; its removal was cut short
                    os.remove(self._path(num, found[num]))
            nums = [n for n in nums if n >= hseg]
        elif nums:
            _log.warn("no valid head: sending again from the oldest record")
        for num in nums:
            s = [num, 0, found[num], 0]
            start = hoff if num == hseg else 0
            n, total, clean = self._scan(self._seg_path(s), start)
            s[1], s[3] = n, total
            if not clean or total >= self.seg_records:
                s[2] |= _SEALED
            if n:
                if not self.segs:
                    self.off = start
                self.segs.append(s)
                self.size += n
            else:
                os.remove(self._seg_path(s))  # nothing left to send in it
        if nums:
            self._next = max(self._next, nums[-1] + 1)
        self._dirty = True
        self.save()

    def _frame(self, f, off):
        """Read the frame at ``off`` of the open file: (status, payload, next offset)."""
        f.seek(off)
        hb = self._hb
        if f.readinto(hb) != _HDR or hb[0] != _MAGIC0 or hb[1] != _MAGIC1:
            return _END, None, off
        n = hb[2] | hb[3] << 8
        if n == 0 or n > MAX_RECORD:
            return _END, None, off
        data = f.read(n)
        if len(data) != n:
            return _END, None, off
        if crc32(data, crc32(memoryview(hb)[2:4])) != struct.unpack("<I", hb[4:])[0]:
            return _BADCRC, None, off + _HDR + n
        return _GOOD, data, off + _HDR + n

    def _scan(self, path, start):
        """(good frames at or after ``start``, frames in the file, ended at EOF)."""
        good = total = off = 0
        with open(path, "rb") as f:
            while True:
                st, data, nxt = self._frame(f, off)
                data = None
                if st == _END:
                    f.seek(off)
                    if f.read(1):  # something that is not a frame: a torn write
                        if off >= start:
                            self.corrupt += 1
                        _log.warn("%s: bad frame at %d; rest of the segment skipped",
                                  path, off)
                        return good, total, False
                    return good, total, True
                total += 1
                if off >= start:
                    if st == _GOOD:
                        good += 1
                    else:
                        self.corrupt += 1
                        _log.warn("%s: bad CRC at %d; record skipped", path, off)
                off = nxt

    def _wipe(self):
        self.segs, self.size, self.off, self._cur = [], 0, 0, None
        self.corrupt += 1
        try:
            for ent in os.ilistdir(self.dir):
                try:
                    os.remove(self.dir + "/" + ent[0])
                except OSError:
                    pass
        except OSError:
            pass
        self._dirty = True
        try:
            self.save()
        except OSError:
            pass

    # -- writing -------------------------------------------------------------------------
    def reserve(self):
        """Make room for one more record (the full policy); call before stamping the
        counters into a record, so they include what its append costs."""
        while self.size >= self.max and self.size:
            try:
                thinned = self._thin_one()
            except OSError as e:  # flash full or failing: drop instead
                _log.error("downsampling failed (%r)", e)
                thinned = False
            if not thinned:
                self._drop_oldest()

    def append(self, payload):
        """Store one record (bytes, 1..MAX_RECORD). Durable when it returns."""
        n = len(payload)
        if not 0 < n <= MAX_RECORD:
            raise ValueError("record of %d bytes" % n)
        self.reserve()
        t = self.segs[-1] if self.segs else None
        if t is None or t[2] & _SEALED or t[3] >= self.seg_records:
            if t is not None:
                t[2] |= _SEALED
            t = [self._next, 0, 0, 0]
            self._next += 1
            if not self.segs:
                self.off = 0
                self._dirty = True  # the head now names this segment
            self.segs.append(t)
        hdr = bytearray(_HDR)
        hdr[0], hdr[1], hdr[2], hdr[3] = _MAGIC0, _MAGIC1, n & 0xFF, n >> 8
        struct.pack_into("<I", hdr, 4, crc32(payload, crc32(memoryview(hdr)[2:4])))
        try:
            with open(self._seg_path(t), "ab") as f:
                f.write(hdr)
                f.write(payload)
        except OSError as e:  # flash full or failing: count it, keep going
            t[2] |= _SEALED
            if not t[1]:
                self.segs.pop()
            self.dropped += 1
            self._dirty = True
            _log.error("write failed (%r): record dropped", e)
            return
        t[1] += 1
        t[3] += 1
        self.size += 1
        if t[3] >= self.seg_records:
            t[2] |= _SEALED

    def _thin_one(self):
        """Downsample the oldest eligible segment: keep records 0, 2, 4, ..."""
        for i in range(1, len(self.segs) - 1):
            s = self.segs[i]
            if s[2] & _THIN or s[1] < 2:
                continue
            src, dst = self._seg_path(s), self._path(s[0], True)
            kept = seen = 0
            with open(src, "rb") as f, open(dst + ".tmp", "wb") as g:
                off = 0
                while True:
                    st, data, nxt = self._frame(f, off)
                    if st == _END:
                        break
                    if st == _GOOD:
                        if seen % 2 == 0:
                            g.write(self._hb)  # this frame's header, as read
                            g.write(data)
                            kept += 1
                        seen += 1
                    data = None
                    off = nxt
            os.rename(dst + ".tmp", dst)
            os.remove(src)
            if seen < s[1]:
                self.corrupt += s[1] - seen
            self.downsampled += seen - kept
            self.size -= s[1] - kept
            s[1] = s[3] = kept
            s[2] |= _THIN | _SEALED
            self._dirty = True
            self.save()
            return True
        return False

    def _drop_oldest(self):
        if self.peek() is None:
            self.size = 0  # nothing readable is left
            return
        self._advance()
        self.dropped += 1
        self.save()

    # -- reading -------------------------------------------------------------------------
    def peek(self):
        """The oldest record not yet acknowledged (bytes), or None when empty."""
        if self._cur is not None:
            return self._cur[0]
        while self.segs:
            s = self.segs[0]
            if s[1] > 0:
                try:
                    with open(self._seg_path(s), "rb") as f:
                        st, data, nxt = self._frame(f, self.off)
                except OSError:  # the file is gone: its records with it
                    st, data, nxt = _END, None, self.off
                if st == _GOOD:
                    self._cur = (data, nxt)
                    return data
                if st == _BADCRC:
                    self.off = nxt
                    continue
                _log.warn("%d records of segment %x unreadable", s[1], s[0])
                self.corrupt += s[1]
                self.size -= s[1]
                s[1] = 0
            self._retire()
        self.size = 0
        return None

    def pop(self):
        """The record peek() returned was acknowledged: it leaves the queue."""
        if self._cur is None:
            self.peek()
            if self._cur is None:
                return
        self._advance()

    def _advance(self):
        s = self.segs[0]
        self.off = self._cur[1]
        self._cur = None
        s[1] -= 1
        self.size -= 1
        self._dirty = True
        if s[1] == 0:
            # All sent (even the segment being written: the next append starts a new
            # one, so an empty queue holds no segment files).
            self._retire()

    def _retire(self):
        """Remove segs[0]: first the head moves past it, then the file goes."""
        s = self.segs.pop(0)
        self.off = 0
        self._cur = None
        if not self.segs:
            self._next = max(self._next, s[0] + 1)
        self._dirty = True
        self.save()
        try:
            os.remove(self._seg_path(s))
        except OSError:
            pass

    def stats(self):
        return {"queued": self.size, "dropped": self.dropped,
                "downsampled": self.downsampled, "corrupt": self.corrupt}
