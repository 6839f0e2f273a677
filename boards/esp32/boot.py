"""ESP32 boot: keep it minimal so a bad main.py never bricks the board."""
import esp

esp.osdebug(None)
