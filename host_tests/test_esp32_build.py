"""ESP32 code is real: every firmware and board module (boards/common, the
code every board shares) compiles with mpy-cross for xtensawin, and the
viper P-256 loads as .mpy. The board code on the simulator (GPIO actuator,
fail-secure start, Wi-Fi, watchdog) and the other profiles are
test_boards.py's."""
import os
import subprocess

import pytest

from mp import ROOT, mpy_cross_exe, run_mp

SOURCES = []
for base in ("firmware", os.path.join("boards", "common")):
    for dirpath, _, files in os.walk(os.path.join(ROOT, base)):
        for f in sorted(files):
            if f.endswith(".py") and f != "manifest.py":
                SOURCES.append(os.path.relpath(os.path.join(dirpath, f), ROOT))


def test_sources_found():
    assert any(s.endswith("p256.py") for s in SOURCES) and any(s.endswith("app.py") for s in SOURCES)
    assert any(s.endswith("lockmain.py") for s in SOURCES) and any(s.endswith("boot.py") for s in SOURCES)


@pytest.mark.parametrize("src", SOURCES)
def test_compiles_for_xtensawin(src, tmp_path):
    out = tmp_path / "m.mpy"
    r = subprocess.run([mpy_cross_exe(), "-march=xtensawin", "-O1", "-o", str(out), os.path.join(ROOT, src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 0


MPY_SCRIPT = r"""
import hashlib
from trust import p256
assert p256.__file__.endswith(".mpy") and not p256.__file__.startswith(".frozen"), p256.__file__
pub = bytes.fromhex("0460FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
                    "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299")
sig = bytes.fromhex("EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
                    "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8")
assert p256.verify(pub, hashlib.sha256(b"sample").digest(), sig)
assert not p256.verify(pub, hashlib.sha256(b"test").digest(), sig)
print("MPY OK", p256.__file__)
"""


def test_p256_with_viper_loads_as_mpy_on_the_unix_port(tmp_path):
    """The viper field arithmetic cannot be compiled on the board (too big);
    it ships frozen or as .mpy. Here: firmware/trust compiled for the
    simulator's CPU (x86) and imported from .mpy files, not the frozen set
    (the 64-bit build does the same with x64, see p256_interp.py)."""
    from p256_interp import trust_mpy
    lib = trust_mpy(str(tmp_path / "lib"), "x86")
    script = tmp_path / "mpy_p256.py"
    script.write_text(MPY_SCRIPT)
    r = run_mp([str(script)], mpypath=lib + ":.frozen")
    assert "MPY OK" in r.stdout and "/lib/trust/p256.mpy" in r.stdout, r.stdout + r.stderr
