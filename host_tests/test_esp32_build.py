"""ESP32 code is real: every firmware and board module compiles with
mpy-cross for xtensawin, and the GPIO actuator runs on the unix port
against a stand-in `machine` with the documented Pin API."""
import os
import subprocess

import pytest

from mp import ROOT, mpy_cross_exe, run_mp

SOURCES = []
for base in ("firmware", os.path.join("boards", "esp32")):
    for dirpath, _, files in os.walk(os.path.join(ROOT, base)):
        for f in sorted(files):
            if f.endswith(".py") and f != "manifest.py":
                SOURCES.append(os.path.relpath(os.path.join(dirpath, f), ROOT))


def test_sources_found():
    assert any(s.endswith("p256.py") for s in SOURCES) and any(s.endswith("app.py") for s in SOURCES)


@pytest.mark.parametrize("src", SOURCES)
def test_compiles_for_xtensawin(src, tmp_path):
    out = tmp_path / "m.mpy"
    r = subprocess.run([mpy_cross_exe(), "-march=xtensawin", "-O1", "-o", str(out), os.path.join(ROOT, src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 0


GPIO_SCRIPT = r"""
import machine
from actuator_gpio import GpioActuator
t = [0]
a = GpioActuator(lambda: t[0], 1000, 26, True, 27, {"trunk": 33})
assert machine.Pin(26).value() == 0, "boots with the relay released (locked)"
machine.set_input(27, 0)             # bolt thrown
assert a.ready() is None
a.unlock()
assert machine.Pin(26).value() == 1
machine.set_input(27, 1)             # bolt retracted
t[0] = 999; a.poll(); assert a.state() == "unlocked"
t[0] = 1000; a.poll(); assert a.state() == "locked" and machine.Pin(26).value() == 0
# The bolt switch disagrees with the command: fault latched, no movement.
assert a.ready() is not None and a.fault
try:
    a.unlock()
    raise SystemExit("moved with a fault")
except Exception as e:
    assert "fault" in str(type(e).__name__).lower() or a.fault
assert machine.Pin(26).value() == 0
a.clear_fault(); machine.set_input(27, 0)
a.pulse("trunk", 1)
assert (33, 1) in machine.LOG and machine.LOG[-1] == (33, 0)
print("GPIO OK")
"""


def test_gpio_actuator_on_unix_with_machine_stand_in(tmp_path):
    script = tmp_path / "gpio.py"
    script.write_text(GPIO_SCRIPT)
    extra = os.path.join(ROOT, "host_tests", "shims", "esp32") + ":" + os.path.join(ROOT, "boards", "esp32")
    r = run_mp([str(script)], extra_path=extra)
    assert "GPIO OK" in r.stdout, r.stdout + r.stderr
