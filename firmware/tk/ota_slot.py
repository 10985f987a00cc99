"""Writing an app slot's files (tk.ota_slot; loaded only while an update runs; see tk.slots).

    w = SlotWriter("b", [("tk/x.mpy", 1234), ...])
    w.write(payload_offset, data)
"""
import os

from tk.slots import _exists, _mkdirs, read_json, slot_dir


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def board_id(hal):
    """(board id, chip) from board.json, else the board layer's name for both."""
    d = read_json("board.json") or {}
    return d.get("id") or hal.NAME, d.get("chip") or hal.NAME


def remove_tree(path):
    """Delete a directory and everything under it (a discarded slot)."""
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:
            remove_tree(p)
        else:
            os.remove(p)
    os.rmdir(path)


class SlotWriter:
    """Writes an app bundle's payload into a slot directory, file by file.

    ``files`` is the manifest's list of (path, size). ``write(pos, data)`` takes payload
    bytes at payload offset ``pos``; a resumed download rewrites from any offset
    (files are opened "r+b" and written in place, never truncated, never past their
    size), so bytes written before a power cut are simply written again.
    """

    def __init__(self, slot, files):
        self.root = slot_dir(slot)
        self.files = files

    def clear(self):
        remove_tree(self.root)

    def write(self, pos, data):
        start = 0
        mv = memoryview(data)
        for path, size in self.files:
            end = start + size
            if pos < end and len(mv):
                n = min(end - pos, len(mv))
                self._put(path, pos - start, mv[:n])
                mv = mv[n:]
                pos += n
            start = end

    def _put(self, path, at, data):
        full = self.root + "/" + path
        if not _exists(full):
            _mkdirs(full.rpartition("/")[0])
            open(full, "wb").close()
        with open(full, "r+b") as f:
            f.seek(at)
            f.write(data)

    def digest(self, path, buf):
        """SHA-256 of a written file (read back from flash)."""
        import hashlib
        h = hashlib.sha256()
        with open(self.root + "/" + path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(memoryview(buf)[:n])
        return h.digest()
