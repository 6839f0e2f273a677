"""The BLE transport is ESP32 code: every module of firmware/ble imports only
what the ESP32 port has (its built-in `bluetooth`, `asyncio`, `time`,
`micropython`) and the firmware's own packages, and never the unix port's
extras. (test_esp32_build compiles every firmware module, firmware/ble
included, with mpy-cross -march=xtensawin.)"""
import ast
import os

from mp import ROOT

BLE = os.path.join(ROOT, "firmware", "ble")
# Modules of the ESP32 port (ports/esp32 at the pinned MicroPython: built in
# or frozen by its boards/manifest.py) the BLE transport may use.
ESP32_MODULES = {"asyncio", "bluetooth", "time", "micropython", "gc"}
FIRMWARE = {"ble", "lock", "trust", "coap"}


def _imports(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            yield node.module.split(".")[0]


def test_ble_modules_import_only_what_the_esp32_has():
    files = sorted(f for f in os.listdir(BLE) if f.endswith(".py"))
    assert {"frag.py", "access.py", "peripheral.py"} <= set(files)
    for f in files:
        for mod in _imports(os.path.join(BLE, f)):
            assert mod in ESP32_MODULES | FIRMWARE, "%s imports %s" % (f, mod)


def test_only_the_peripheral_touches_the_radio():
    for f in ("frag.py", "access.py"):
        assert "bluetooth" not in set(_imports(os.path.join(BLE, f))), f
