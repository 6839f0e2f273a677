# Frozen-firmware manifest of this board (in the port: make
# BOARD=<board.json "idf_board"> FROZEN_MANIFEST=<this file>): the port's own
# modules (asyncio among them), the lock's firmware (the list the simulator
# freezes too) and the board code; the lock's modules go to flash, so their
# bytecode and constant tables (the P-256 G table) cost no RAM. The same
# text for every board: what differs is board.json.
include("$(PORT_DIR)/boards/manifest.py")
include("../firmware_manifest.py")
include("../common/manifest.py")
