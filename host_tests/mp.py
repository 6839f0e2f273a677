"""Running firmware code in the simulator's MicroPython from pytest.

The interpreter is build/mp/micropython (tools/build_mp.py): 32-bit, float32,
with the firmware frozen in. The firmware is therefore never on
MICROPYPATH: what a test runs is what the interpreter carries, as on a board.
"""
import os
import subprocess

from lockctl.interp import ESP32_HEAP_BYTES, ROOT, micropython_exe, mpy_cross_exe  # noqa: F401

FIRMWARE = os.path.join(ROOT, "firmware")
DUAL = os.path.join(ROOT, "host_tests", "dual")
BOARD_UNIX = os.path.join(ROOT, "boards", "unix")
MPYPATH = ":".join([".frozen", DUAL, BOARD_UNIX])
# Test drivers, their case tables and RAM-backed flash images live in the GC
# heap, where a board would hold none of them; they get room for that. The lock itself
# (the simulator, SimLock) always runs on ESP32_HEAP_BYTES.
TEST_HEAP = "2M"


def run_mp(args, stdin=None, heapsize=None, timeout=600, cwd=None, extra_path=None, mpypath=None):
    """Run `micropython -X heapsize=H ARGS` (H defaults to TEST_HEAP) with the
    dual tests and the board directory on its path (or `mpypath` instead).
    Returns the CompletedProcess (text mode)."""
    cmd = [micropython_exe(), "-X", "heapsize=%s" % (heapsize or TEST_HEAP)] + list(args)
    env = dict(os.environ)
    env["MICROPYPATH"] = (mpypath or MPYPATH) + (":" + extra_path if extra_path else "")
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd or ROOT)
