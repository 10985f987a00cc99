# Firmware version, reported to the shadow and in diagnostics.
VERSION = "0.1.0"
