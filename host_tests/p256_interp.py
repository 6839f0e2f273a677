"""The two interpreters the P-256 tests run on, and the firmware as .mpy.

- `build/mp/micropython`, the simulator's (32-bit word, firmware frozen);
- `build/mp64/micropython`, a 64-bit unix build of the same pinned source
  (build/mp/src) with nothing frozen: the firmware is loaded as `.mpy`
  compiled with `-march=x64`. Built here on first use (about a minute on 2
  cores, once; flock-protected, cached while its variant text is the same).

Viper's `int` is the machine word, so field-arithmetic overflows that pass on
64 bits fail on 32: the tests run on both.
"""
import fcntl
import os
import shutil
import subprocess

from mp import ROOT, mpy_cross_exe, run_mp

OUT64 = os.path.join(ROOT, "build", "mp64")
SRC = os.path.join(ROOT, "build", "mp", "src")
VARIANT_H = """\
// 64-bit unix build of the simulator's MicroPython source, for the P-256
// tests (host_tests/p256_interp.py). Nothing frozen.
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)
#include "variants/mpconfigvariant_common.h"
"""
VARIANT_MK = """\
MICROPY_PY_FFI = 0
MICROPY_PY_BTREE = 0
MICROPY_PY_BLUETOOTH = 0
FROZEN_MANIFEST =
"""


def micropython64():
    """Path of the 64-bit interpreter, building it if needed."""
    os.makedirs(OUT64, exist_ok=True)
    exe = os.path.join(OUT64, "micropython")
    stamp = os.path.join(OUT64, "variant.stamp")
    want = VARIANT_H + VARIANT_MK
    with open(os.path.join(OUT64, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(exe) and os.path.exists(stamp) and open(stamp).read() == want:
            return exe
        vdir = os.path.join(OUT64, "variant")
        os.makedirs(vdir, exist_ok=True)
        with open(os.path.join(vdir, "mpconfigvariant.h"), "w") as f:
            f.write(VARIANT_H)
        with open(os.path.join(vdir, "mpconfigvariant.mk"), "w") as f:
            f.write(VARIANT_MK)
        build = os.path.join(OUT64, "build")
        log = os.path.join(OUT64, "build.log")
        with open(log, "w") as out:
            r = subprocess.run(["make", "-C", os.path.join(SRC, "ports", "unix"), "-j",
                                str(max(2, os.cpu_count() or 2)), "VARIANT_DIR=" + vdir,
                                "VARIANT=p256x64", "BUILD=" + build],
                               stdout=out, stderr=subprocess.STDOUT)
        if r.returncode:
            raise AssertionError("64-bit build failed, log %s:\n%s" % (log, open(log).read()[-3000:]))
        shutil.copy2(os.path.join(build, "micropython"), exe + ".tmp")
        os.replace(exe + ".tmp", exe)
        with open(stamp, "w") as f:
            f.write(want)
        return exe


def trust_mpy(out_dir, march):
    """firmware/trust compiled to out_dir/trust/*.mpy for `march`; returns out_dir."""
    src = os.path.join(ROOT, "firmware", "trust")
    dst = os.path.join(out_dir, "trust")
    os.makedirs(dst, exist_ok=True)
    for f in sorted(os.listdir(src)):
        if f.endswith(".py"):
            subprocess.run([mpy_cross_exe(), "-march=" + march, "-O1", "-o",
                            os.path.join(dst, f[:-3] + ".mpy"), os.path.join(src, f)], check=True)
    return out_dir


def run_on(word, script_args, tmp_path, stdin=None, timeout=600):
    """Run a driver on the 32-bit simulator (firmware frozen) or on the
    64-bit build (firmware as x64 .mpy from tmp_path)."""
    if word == 32:
        return run_mp(script_args, stdin=stdin, timeout=timeout)
    lib = trust_mpy(str(tmp_path / "mpy64"), "x64")
    env = dict(os.environ)
    env["MICROPYPATH"] = lib + ":" + os.path.join(ROOT, "host_tests", "dual")
    return subprocess.run([micropython64(), "-X", "heapsize=2M"] + list(script_args), input=stdin,
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
