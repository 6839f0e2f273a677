# Frozen-firmware manifest for an ESP32 build (make BOARD=ESP32_GENERIC
# FROZEN_MANIFEST=<this file>): the lock's modules go to flash, so their
# bytecode and constant tables (the P-256 G table) cost no RAM.
include("$(PORT_DIR)/boards/manifest.py")
package("trust", base_path="../../firmware")
package("coap", base_path="../../firmware")
package("lock", base_path="../../firmware")
module("board.py")
module("actuator_gpio.py")
