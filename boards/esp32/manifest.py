# Frozen-firmware manifest for an ESP32 build (make BOARD=ESP32_GENERIC
# FROZEN_MANIFEST=<this file>): the lock's modules go to flash, so their
# bytecode and constant tables (the P-256 G table) cost no RAM.
# The port's own manifest brings asyncio; the firmware list is shared with
# the simulator (boards/firmware_manifest.py).
include("$(PORT_DIR)/boards/manifest.py")
include("../firmware_manifest.py")
module("board.py")
module("actuator_gpio.py")
