# The virtual kit's stand-in for what MicroPython's C runtime does on an ESP32 built with
# ROMFS before main.py: mount the ROMFS partition at /rom and put /rom and /rom/lib on
# sys.path. Runs on the MicroPython unix port; argv: ROMFS image, flash directory[, script].
# Which app partition boots (and its rollback) is the emulated bootloader's step
# (host_tools/kit/bootloader.py), run before this in the kit's reset loop.
#
# On a board the ROMFS partition is memory-mapped flash and costs no heap. Here the
# image is read into the process first, as one block; the kit runner raises the heap
# cap by exactly that block, so the firmware sees the heap it would have on a board.
import sys
import vfs

_img_path, _flash = sys.argv[1], sys.argv[2]
with open(_img_path, "rb") as _f:
    _img = _f.read()
vfs.mount(vfs.VfsRom(_img), "/rom")
sys.path[:0] = ["/rom", "/rom/lib"]
del _f, _img_path
_script = sys.argv[3] if len(sys.argv) > 3 else "main.py"
sys.argv[:] = [_script]
with open(_script) as _f:
    _src = _f.read()
del _f
exec(compile(_src, _script, "exec"), {"__name__": "__main__"})
