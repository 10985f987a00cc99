"""One bundle download: blocks in, header verified first, payload written as it comes.

The checks are tk.ota_bundle's (signature, manifest, per-file and whole SHA-256). What
survives a power cut is ``ota/job.json`` (written atomically after every window of
blocks): the payload offset reached and the target. A resumed download fetches the
header again (a few blocks; the signature is verified again), re-hashes the bytes already
in the slot (ota_bundle.Payload.resume) and asks for blocks from where it stopped.

    dl = Download(hal, cfg, client, thing, job_id, job_document)   # may raise Refused
    client.subscribe_many(dl.topics(), 1)
    while not dl.step(): client.poll(100)                          # may raise Refused
    dl.switch()                                                    # then reboot
"""
import gc
import time

from tk import ota_slot, slots
from tk.log import Logger
from tk.ota_boot import JOB_FILE
from tk.streams import Stream
from tk.version import VERSION

_log = Logger("ota")
# Block size: 1 KiB on a small heap (an ESP32 without PSRAM), 4 KiB when the heap has
# room for it (PSRAM boards; ~5.5 KB per MQTT message, JSON and base64, under the
# client's 6 KiB limit): a quarter of the messages, the per-message path being most of
# an update's time. Chosen per download from the free heap when the job is taken.
BLOCK, BIG_BLOCK = 1024, 4096
BIG_FREE = 65536  # free heap (after a collection) that takes 4 KiB blocks
IN_FLIGHT = 8192  # bytes per request: a round trip per 8 KiB
_SECTOR = 4096
_TIMEOUT_MS = 4000
# ota_bundle's refusals that are a policy answer (REJECTED); the rest mean a bad bundle.
_POLICY = ("wrong_kind", "wrong_board", "same_version", "downgrade", "min_version",
           "too_large")


class Refused(Exception):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status  # "FAILED" or "REJECTED"
        self.reason = reason


def _refused(e):
    return Refused("REJECTED" if e.reason in _POLICY else "FAILED", str(e))


class SlotFiles:
    """ota_bundle's writer for an app slot directory. The file being written stays open
    across blocks; :meth:`flush` closes it (before the offset is persisted)."""

    def __init__(self, slot):
        self.w = ota_slot.SlotWriter(slot, ())
        self.path = None
        self.f = None

    def write(self, path, at, data):
        if path != self.path:
            self.flush()
            self.w._put(path, at, b"")  # creates it (and its directory) if needed
            self.f = open(self.w.root + "/" + path, "r+b")
            self.path = path
        self.f.seek(at)
        self.f.write(data)

    def flush(self):
        if self.f is not None:
            self.f.close()
        self.f = self.path = None

    def read(self, path, at, buf):
        self.flush()
        with open(self.w.root + "/" + path, "rb") as f:
            f.seek(at)
            return f.readinto(buf)


class PartitionFile:
    """ota_bundle's writer for a firmware partition: erase each sector as it starts."""

    def __init__(self, part):
        self.part = part

    def write(self, path, p, mv):
        while len(mv):
            blk, o = divmod(p, _SECTOR)
            n = min(_SECTOR - o, len(mv))
            if o == 0:
                self.part.ioctl(6, blk)
            self.part.writeblocks(blk, mv[:n], o)
            p += n
            mv = mv[n:]

    def read(self, path, at, buf):
        self.part.readblocks(at // _SECTOR, buf, at % _SECTOR)
        return len(buf)

    def flush(self):
        pass


class Download:
    def __init__(self, hal, cfg, client, thing, job_id, doc):
        from tk import ota_bundle  # the verifier: loaded only when a job arrives
        self.ob = ota_bundle
        self.hal = hal
        self.cfg = cfg
        self.job_id = job_id
        j = slots.read_json(JOB_FILE)
        if not j or j.get("id") != job_id or j.get("st") == "sw":
            j = self._new(doc)
        self.j = j
        self.version, self.size, self.target = j["ver"], j["size"], j["slot"]
        if j["kind"] == "firmware":
            self.part = hal.partition()(j["slot"])
            self.writer = PartitionFile(self.part)
            j["po"] -= j["po"] % _SECTOR  # resume at a sector start (erased again)
        else:
            self.part = None
            self.writer = SlotFiles(self.target)
        self.header = ota_bundle.Header(ota_slot.read_bytes(cfg.ota_pubkey))
        self.payload = None
        self.at = 0  # bundle offset of the next block wanted
        self.want = None
        self.asked = 0
        self.retries = 0
        self.pct = -1
        self.verify_ms = None
        gc.collect()
        self.low = self.start_free = gc.mem_free()  # live heap before, and at worst
        # A resumed download starts again at block 0 of the header and realigns its
        # offset to this block size, so it may differ from the interrupted one's.
        self.block = BIG_BLOCK if self.start_free >= BIG_FREE else BLOCK
        self.window = IN_FLIGHT // self.block
        self.stream = Stream(client, thing, j["sid"], j["fid"], self.block,
                             2 * self.window)
        self.sent = 0  # progress (percent) last reported to the job
        self.windows = 0

    @property
    def off(self):
        return self.j["po"]

    def _new(self, doc):
        """Checks that need only the job document (and, for a firmware update, the
        partition table): before any block is asked for. A fresh state."""
        kind = doc.get("kind")
        if kind not in ("app", "firmware"):
            raise Refused("REJECTED", "wrong_kind: unknown bundle kind %r" % (kind,))
        running = VERSION  # an app update replaces thingkit's code: the app's version
        if kind == "firmware":
            # A MicroPython image goes to the next OTA partition: none on a stock
            # ESP32_GENERIC table (get_next_update raises ENOENT there).
            from tk import ota_image
            nxt = ota_image.next_partition(self.hal)
            if nxt is None:
                raise Refused("FAILED", "no_ota_partitions: firmware updates need the -OTA "
                              "image's partition table (ota_0/ota_1); this board runs %s "
                              "from a table without OTA partitions: flash "
                              "ESP32_GENERIC-OTA or use an app update"
                              % ota_image.running_label(self.hal))
            target, cap = nxt.info()[4], nxt.info()[3]
            # It replaces the interpreter: compared with the runtime's version.
            from tk.ota import runtime_version
            running = ota_image.semver(runtime_version(self.hal)) or "0.0.0"
        ver = doc.get("version")
        try:
            if self.ob.version(ver) <= self.ob.version(running):
                why = "same_version" if ver == running else "downgrade"
                raise Refused("REJECTED", "%s: version %s, running %s" % (why, ver, running))
        except ValueError as e:
            raise Refused("REJECTED", "bad_format: %s" % e)
        size, sid = doc.get("size"), doc.get("streamId")
        if not isinstance(size, int) or size <= 0 or not isinstance(sid, str):
            raise Refused("FAILED", "bad_format: job document needs streamId and size")
        if kind == "app":
            target = slots.inactive()
            cap = slots.SLOT_BYTES
            ota_slot.remove_tree(slots.slot_dir(target))
        if size > cap + 8192 + 76:
            raise Refused("REJECTED", "too_large: bundle of %d bytes, slot holds %d"
                          % (size, cap))
        j = {"id": self.job_id, "st": "dl", "po": 0, "kind": kind, "ver": ver, "sid": sid,
             "fid": doc.get("fileId", 0), "size": size, "slot": target, "cap": cap,
             "run": running, "confirm_s": self.cfg.ota_confirm_s}
        slots.write_json(JOB_FILE, j)
        return j

    def topics(self):
        return self.stream.topics()

    def progress(self):
        self.sent = max(0, self.pct)
        return {"step": "download", "offset": self.j["po"], "size": self.size,
                "pct": self.sent}

    def heap_report(self):
        """(peak live bytes, live bytes when the job was taken, budget) of the GC heap,
        without what only the sim spends (hal.heap_reserved)."""
        total = gc.mem_free() + gc.mem_alloc()
        budget = total - self.hal.heap_reserved()
        return budget - self.low, budget - self.start_free, budget

    # -- blocks --------------------------------------------------------------------------
    def step(self):
        """Ask for or take one window of blocks. True when the whole bundle is in and
        checked; raises Refused when it must not be installed."""
        B, W = self.block, self.window
        if self.want is None:
            if self.at >= self.size:
                try:
                    self.payload.finish()
                except self.ob.Refused as e:
                    raise _refused(e)
                return True
            first = self.at // B
            n = min(W, (self.size + B - 1) // B - first)
            self.want = (first, n)
            self.asked = time.ticks_ms()
            self.stream.request(first, n)
            return False
        first, n = self.want
        err = self.stream.error
        if err is not None:
            if err[0] == "OffsetOutOfBounds":
                raise Refused("FAILED", "truncated: block %d is past the bundle's end" % first)
            raise Refused("FAILED", "stream %s: %s %s" % (self.j["sid"], err[0], err[1]))
        for i in range(first, first + n):
            if i not in self.stream.blocks:
                if time.ticks_diff(time.ticks_ms(), self.asked) > _TIMEOUT_MS:
                    self.retries += 1
                    if self.retries > 5:
                        raise OSError("stream: no blocks after %d requests" % self.retries)
                    _log.warn("blocks %d+%d late; asking again", first, n)
                    self.want = None
                return False
        # The window is in. Ask for the next one now (pipelined: the service sends it
        # while this one is written); the header's end decides where that is, so not
        # before the payload has started.
        nxt = None
        end = first + n
        if self.payload is not None and end * B < self.size:
            nxt = (end, min(W, (self.size + B - 1) // B - end))
            self.stream.request(nxt[0], nxt[1])
        self.windows += 1
        if self.windows % 4 == 1:  # the most this update holds at once: live heap
            gc.collect()
            free = gc.mem_free()
            if free < self.low:
                self.low = free
        try:
            for i in range(first, end):
                self._consume(i * B, self.stream.take(i))
        except self.ob.Refused as e:
            raise _refused(e)
        finally:
            self.writer.flush()  # on flash before the offset says so
        self.want = nxt
        self.asked = time.ticks_ms()
        self.retries = 0
        if self.payload is not None:
            self.j["po"] = self.payload.offset
            slots.write_json(JOB_FILE, self.j)
            pct = self.payload.offset * 100 // max(1, self.payload.size)
            if pct // 25 != self.pct // 25:
                self.pct = pct
                _log.info("download %d%% (%d bytes)", pct, self.payload.offset)
        if nxt is None:
            return self.step()  # ask for the next window now, not after the next poll
        return False

    def _consume(self, at, data):
        B = self.block
        end = min(self.size, at + B)
        if len(data) != end - at:
            raise Refused("FAILED", "truncated: block at %d has %d bytes" % (at, len(data)))
        if self.payload is None:
            t0 = time.ticks_ms()
            rest = self.header.feed(data)
            if rest is None:
                self.at = at + len(data)
                return
            self.verify_ms = time.ticks_diff(time.ticks_ms(), t0)
            _log.info("bundle signature verified in %d ms", self.verify_ms)
            self._start_payload()
            self.payload.feed(rest, at=0)  # skips what a resume already has
            # Next: the block holding the first payload byte not taken yet.
            self.at = max(at + len(data), (self.header.length + self.payload.offset)
                          // B * B)
            return
        self.payload.feed(data[max(0, self.header.length - at):],
                          at=max(0, at - self.header.length))
        self.at = max(self.at, at + len(data))  # never back before a resume point

    def _start_payload(self):
        ob, j = self.ob, self.j
        h = self.header
        board = ota_slot.board_id(self.hal)
        m = h.check(board=board[0], chip=board[1], running=j.get("run") or VERSION,
                    capacity=j["cap"],
                    kinds=(j["kind"],), size=self.size)
        if m["version"] != j["ver"]:
            raise Refused("FAILED", "bad_format: job says %s, manifest %s" % (j["ver"],
                                                                            m["version"]))
        self.header = h  # keeps h.length; its buffers were freed by the check
        gc.collect()
        self.payload = ob.Payload(m, self.writer)
        if j["po"]:
            try:
                self.payload.resume(j["po"])
                _log.info("resuming at payload offset %d", j["po"])
            except ob.Refused:
                _log.warn("slot changed since the last attempt: starting over")
                self.payload = ob.Payload(m, self.writer)
                j["po"] = 0

    # -- the end ---------------------------------------------------------------------------
    def switch(self):
        j = self.j
        j["st"] = "sw"
        if j["kind"] == "firmware":
            st = slots.state()
            j["prev_run"] = st.get("run") or "factory"
            slots.write_json(JOB_FILE, j)
            if j["prev_run"] != "factory":  # the new firmware runs its own app
                st["run"] = "factory"
                slots.write_json(slots.BOOT_FILE, st)
            try:
                # ESP-IDF verifies the image here: anything but an app image is refused.
                self.part.set_boot()
            except OSError as e:
                st["run"] = j["prev_run"]
                slots.write_json(slots.BOOT_FILE, st)
                raise Refused("FAILED", "bad_image: set_boot refused what was written to "
                              "%s (OSError %s): not a bootable ESP-IDF app image"
                              % (j["slot"], " ".join([str(a) for a in e.args])))
        else:
            slots.write_json(JOB_FILE, j)
            slots.switch(self.target, self.job_id, self.version, j["confirm_s"])

    def discard(self):
        """Abandon: forget the stream, the state and the partial slot."""
        from tk import ota_boot
        self.writer.flush()
        self.stream.forget()
        if self.part is None:
            ota_slot.remove_tree(slots.slot_dir(self.target))
        else:
            from tk.ota_image import release
            release(type(self.part))
            self.part = self.writer = None
        ota_boot.done()
