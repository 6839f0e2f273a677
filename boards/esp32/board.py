"""ESP32 board definition: pins and where the lock keeps its files.

Pin numbers are for a generic ESP32-DevKitC wired as in README.md
("Deploy to a board"); change them here for another wiring.
"""
from micropython import const

RELAY_PIN = const(26)          # drives the lock relay / motor driver
RELAY_ACTIVE_HIGH = True       # relay energized = bolt retracted (unlocked)
BOLT_SENSOR_PIN = const(27)    # bolt position switch, to GND when thrown (locked)
DOOR_SENSOR_PIN = const(25)    # reed switch, to GND when the door is closed
LED_PIN = const(2)
EXTRA_OUTPUTS = {"trunk": 33}  # channels for configured extra resources

ROOT = "/lock"                 # on the internal littlefs (the default VFS)
BUNDLE = "/bundle"             # lock.json, lock-key.der, lock-cert.der
WIFI = "/wifi.json"            # {"ssid": ..., "password": ...}
