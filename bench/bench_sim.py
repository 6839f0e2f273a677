"""The simulator's interpreter itself: build time and what freezing the
firmware costs.

usage: .venv/bin/python bench/bench_sim.py [--rebuild]

Prints (figures only, nothing asserted):
  - the wall time of a clean build of build/mp/micropython: the one
    tools/build_mp.py recorded in build/mp/clean-build-seconds (source
    unpacked, mpy-cross and the unix port compiled), or with --rebuild a clean
    compile of mpy-cross and the unix port timed now into a temporary build
    directory (the source tree already unpacked, build/mp/ left untouched);
  - the interpreter's size (`size`) and that of its frozen content (every
    frozen module: asyncio, the firmware, the block device);
  - the firmware modules frozen by boards/firmware_manifest.py, compiled by
    build/mp/mpy-cross for x86 (the simulator) and for xtensawin (what the
    ESP32 carries in flash).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from benchutil import ROOT, mpy_size

import build_mp  # noqa: E402 (tools/, on the path through benchutil)

MP_DIR = build_mp.OUT
SRC = os.path.join(MP_DIR, "src")


def size(path):
    """(text, data, bss) of an ELF file."""
    out = subprocess.run(["size", path], capture_output=True, text=True, check=True).stdout
    return tuple(int(v) for v in out.splitlines()[1].split()[:3])


def clean_build_seconds():
    env = dict(os.environ, **build_mp.VERSION_ENV)
    jobs = str(max(2, os.cpu_count() or 2))
    with tempfile.TemporaryDirectory(prefix="mp-bench-build-") as tmp:
        t0 = time.time()
        for cmd in (["make", "-C", os.path.join(SRC, "mpy-cross"), "BUILD=" + os.path.join(tmp, "mpy-cross")],
                    ["make", "-C", os.path.join(SRC, "ports", "unix"), "VARIANT_DIR=" + build_mp.VARIANT_DIR,
                     "VARIANT=" + build_mp.VARIANT, "BUILD=" + os.path.join(tmp, "unix")]):
            subprocess.run(cmd + ["-j", jobs], env=env, check=True, capture_output=True)
        return time.time() - t0


def frozen_firmware():
    """The .py files boards/firmware_manifest.py freezes (its package() calls)."""
    packages = []
    manifest = os.path.join(ROOT, "boards", "firmware_manifest.py")
    with open(manifest) as f:
        exec(f.read(), {"package": lambda name, base_path=".", **kw: packages.append(
            os.path.normpath(os.path.join(os.path.dirname(manifest), base_path, name)))})
    return [os.path.join(d, f) for p in packages for d, _, files in os.walk(p)
            for f in sorted(files) if f.endswith(".py")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rebuild", action="store_true",
                    help="time a clean build now instead of reading the recorded figure")
    a = ap.parse_args()
    print("Simulator interpreter build/mp/micropython (32-bit, float32, firmware frozen)")
    if a.rebuild:
        print("  clean build, timed now (mpy-cross + unix port, %d jobs): %.1f s"
              % (max(2, os.cpu_count() or 2), clean_build_seconds()))
    else:
        with open(os.path.join(MP_DIR, "clean-build-seconds")) as f:
            print("  clean build: %.1f s (recorded by tools/build_mp.py in build/mp/clean-build-seconds; "
                  "--rebuild times one now)" % float(f.read()))
    text, data, bss = size(os.path.join(MP_DIR, "micropython"))
    print("  binary: text %d, data %d, bss %d bytes" % (text, data, bss))
    text, data, _ = size(os.path.join(SRC, "ports", "unix", "build-" + build_mp.VARIANT, "frozen_content.o"))
    print("  frozen content (asyncio, firmware, blockdev), frozen_content.o: %d bytes (text %d, data %d)"
          % (text + data, text, data))
    paths = frozen_firmware()
    for march, what in (("x86", "the simulator"), ("xtensawin", "ESP32 flash")):
        print("  frozen firmware, mpy-cross -march=%-9s %6d bytes (%d modules; %s)"
              % (march, sum(mpy_size(p, march) for p in paths), len(paths), what))
    return 0


if __name__ == "__main__":
    sys.exit(main())
