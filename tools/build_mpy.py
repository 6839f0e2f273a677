"""Compile the firmware tree to .mpy with mpy-cross.

usage: python tools/build_mpy.py [--out DIR] [--march ARCH] [--boards esp32]

Packages keep their layout (trust/, coap/, lock/), so DIR can go on a
board's /lib or on MICROPYPATH. Default arch: xtensawin (ESP32).
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mpy_cross():
    """build/mp/mpy-cross, built from the same pinned source as the
    simulator's interpreter (tools/build_mp.py)."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from lockctl.interp import mpy_cross_exe
    return mpy_cross_exe()


def build(out, march="xtensawin", boards=(), opt=1):
    """Returns [(relative .mpy path, size)]."""
    made = []
    trees = [("firmware", "")] + [(os.path.join("boards", b), "") for b in boards]
    for base, prefix in trees:
        src_root = os.path.join(ROOT, base)
        for dirpath, _, files in os.walk(src_root):
            for f in sorted(files):
                if not f.endswith(".py") or f in ("manifest.py", "boot.py", "main.py"):
                    continue
                src = os.path.join(dirpath, f)
                rel = os.path.relpath(src, src_root)[:-3] + ".mpy"
                dst = os.path.join(out, prefix, rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                cmd = [mpy_cross(), "-O%d" % opt, "-o", dst, src]
                if march:
                    cmd.insert(1, "-march=" + march)
                subprocess.run(cmd, check=True)
                made.append((rel, os.path.getsize(dst)))
    return made


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "build", "mpy"))
    p.add_argument("--march", default="xtensawin")
    p.add_argument("--boards", nargs="*", default=["esp32"])
    a = p.parse_args()
    made = build(a.out, a.march, a.boards)
    for rel, size in made:
        print("%7d  %s" % (size, rel))
    print("%7d  total (%d modules) in %s" % (sum(s for _, s in made), len(made), a.out))


if __name__ == "__main__":
    main()
