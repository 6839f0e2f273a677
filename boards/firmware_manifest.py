# The lock's firmware modules: the one list both boards freeze.
# Included by boards/esp32/manifest.py (the board) and by
# boards/unix/variant/manifest.py (the simulator's interpreter), so the
# simulator runs exactly the modules the board carries in flash.
package("trust", base_path="../firmware")
package("coap", base_path="../firmware")
package("lock", base_path="../firmware")
package("ble", base_path="../firmware")
