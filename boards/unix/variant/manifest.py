# Frozen modules of the simulator's interpreter: what an ESP32 build of the
# lock carries in flash (asyncio, as the ESP32 port's own manifest has it,
# and the firmware list shared with boards/esp32/manifest.py), plus the
# simulator's board module (the littlefs block device).
include("$(MPY_DIR)/extmod/asyncio")
include("../../firmware_manifest.py")
module("blockdev.py", base_path="..")
