# Measures what the virtual kit's simulated hardware costs in the GC heap, so that the
# kit runner can reserve it (as it reserves the ROMFS image): a board spends nothing on
# emulating its own sensors. Runs on the MicroPython unix port (under rom_boot.py for a
# ROMFS kit), with
# the kit's environment; prints one line "SIM_HW_BYTES <n>".
import gc
import json
import os

gc.collect()
a0 = gc.mem_alloc()
import time  # noqa: F401  (the port's stand-in, image/port/time.py, where it is on the path)
import hal

b = hal.load()
with open(os.getenv("TK_SIM_BOARD")) as f:
    board = json.load(f)
buses = board.get("buses", {})
for c in board.get("components", []):
    try:
        if "bus" in c:
            i2c = b.i2c(buses[c["bus"]])
            i2c.readfrom_mem(c["address"], 0, 1)  # brings the device's emulator to life
        elif c.get("kind") == "mcu_temperature":
            b.mcu_temperature()
        elif c.get("kind") == "adc":
            b.adc(c["pin"]).read_uv()
        elif c.get("kind") == "touch":
            b.touch(c["pin"]).read()
        elif c.get("kind") in ("led",):
            b.pin_out(c["pin"]).value(0)
        elif c.get("kind") == "button":
            b.pin_in(c["pin"]).value()
    except Exception:
        pass
del board, buses, c, f
gc.collect()
print("SIM_HW_BYTES", gc.mem_alloc() - a0)
