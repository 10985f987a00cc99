# ruff: noqa: F821  (freeze, include, require, package, module: given by MicroPython)
# MicroPython frozen-module manifest for a custom ESP32 image with thingkit frozen in.
#
# Build (needs ESP-IDF; see docs/custom_image.rst, nothing here was built by thingkit):
#     export THINGKIT_DEVICE_LIB=<dir holding umqtt/simple.py, see the doc>
#     make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=$PWD/boards/custom-image/manifest.py
#
# It freezes what ports/esp32/boards/manifest.py freezes, except umqtt.simple and
# umqtt.robust: a manifest cannot drop a module another manifest required, and the stock
# umqtt.simple (1.7.0 in v1.27/v1.28) is not the one thingkit pins (firmware/deps.json).
# Frozen modules are found before /lib, so the pinned one is frozen here instead.
# Compare this list with ports/esp32/boards/manifest.py of the release you build.
import os

# -- what the esp32 port's own manifest freezes (less umqtt.*) ---------------------------
freeze("$(PORT_DIR)/modules")  # _boot.py, inisetup.py, flashbdev.py, ...
include("$(MPY_DIR)/extmod/asyncio")
require("bundle-networking")
require("aioespnow")
require("dht")
require("ds18x20")
require("neopixel")
require("onewire")
require("upysh")

# -- thingkit -----------------------------------------------------------------------------
# Relative paths are relative to this file: boards/custom-image/ -> firmware/.
package("tk", base_path="../../firmware")
package("hal", base_path="../../firmware")
module("ussl.py", base_path="../../firmware/lib")
# firmware/main.py stays a file on the filesystem (thingkit deploy copies it): MicroPython
# runs main.py from the filesystem, never a frozen one.

# The pinned umqtt.simple (firmware/deps.json), fetched by `thingkit deps fetch`.
_lib = os.environ.get("THINGKIT_DEVICE_LIB")
if not _lib:
    raise SystemExit("set THINGKIT_DEVICE_LIB to the directory holding umqtt/simple.py")
package("umqtt", base_path=_lib)
