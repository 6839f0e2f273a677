"""Compile the firmware and a board's code to .mpy with mpy-cross.

usage: python tools/build_mpy.py [--board esp32] [--out DIR] [--march ARCH]

The architecture is the board's (boards/<board>/board.json "march":
xtensawin for the ESP32, rv32imc for the ESP32-C3) unless --march says
otherwise. Packages keep their layout (trust/, coap/, lock/, ble/), so DIR
can go on a board's /lib or on MICROPYPATH; the board code (boards/common,
shared by every board) sits at its top. boot.py, main.py and board.json are
not compiled: they go to the board's filesystem as they are
(`device_files`).
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOARDS = os.path.join(ROOT, "boards")
COMMON = os.path.join(BOARDS, "common")
# Kept as source on the board's filesystem, or not for the board at all.
NOT_COMPILED = ("manifest.py", "boot.py", "main.py")
# mpy-cross -march values (py/mpconfig.h MP_NATIVE_ARCH_*).
ARCHES = ("x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
          "xtensa", "xtensawin", "rv32imc", "rv64imc")


class BoardDataError(ValueError):
    pass


def mpy_cross():
    """build/mp/mpy-cross, built from the same pinned source as the
    simulator's interpreter (tools/build_mp.py)."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from lockctl.interp import mpy_cross_exe
    return mpy_cross_exe()


def boards():
    """The boards that have a board.json."""
    return sorted(b for b in os.listdir(BOARDS) if os.path.exists(os.path.join(BOARDS, b, "board.json")))


def board_data(board):
    """boards/<board>/board.json as a dict; raises BoardDataError when it
    is missing or its "march" is not an mpy-cross architecture."""
    path = os.path.join(BOARDS, board, "board.json")
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        raise BoardDataError("%s: %s" % (path, e))
    if not isinstance(d, dict) or d.get("march") not in ARCHES:
        raise BoardDataError("%s: \"march\" must be one of %s" % (path, ", ".join(ARCHES)))
    return d


def device_files(board):
    """[(host path, path on the board's filesystem)] of what is copied as
    is: boot.py and main.py (shared) and the board's board.json."""
    return [(os.path.join(COMMON, "boot.py"), "/boot.py"),
            (os.path.join(COMMON, "main.py"), "/main.py"),
            (os.path.join(BOARDS, board, "board.json"), "/board.json")]


def sources(boards=()):
    """[(source path, relative .mpy path)]: every firmware module and, with a
    board, the shared board code and any module of the board's own."""
    trees = [os.path.join(ROOT, "firmware")]
    if boards:
        trees.append(COMMON)
    trees += [os.path.join(BOARDS, b) for b in boards]
    out = []
    for src_root in trees:
        for dirpath, dirs, files in os.walk(src_root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for f in sorted(files):
                if f.endswith(".py") and f not in NOT_COMPILED:
                    src = os.path.join(dirpath, f)
                    out.append((src, os.path.relpath(src, src_root)[:-3] + ".mpy"))
    return out


def build(out, march=None, boards=(), opt=1):
    """Returns [(relative .mpy path, size)]. `march` None: the first board's
    board.json "march" (xtensawin with no board)."""
    if march is None:
        march = board_data(boards[0])["march"] if boards else "xtensawin"
    made = []
    for src, rel in sources(boards):
        dst = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        cmd = [mpy_cross(), "-O%d" % opt, "-o", dst, src]
        if march:
            cmd.insert(1, "-march=" + march)
        subprocess.run(cmd, check=True)
        made.append((rel, os.path.getsize(dst)))
    return made


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--board", default="esp32", choices=boards())
    p.add_argument("--out", default=None, help="default: build/mpy/<board>")
    p.add_argument("--march", default=None, help="default: the board's board.json \"march\"")
    a = p.parse_args()
    march = a.march or board_data(a.board)["march"]
    out = a.out or os.path.join(ROOT, "build", "mpy", a.board)
    made = build(out, march, (a.board,))
    for rel, size in made:
        print("%7d  %s" % (size, rel))
    print("%7d  total (%d modules, %s) in %s" % (sum(s for _, s in made), len(made), march, out))


if __name__ == "__main__":
    main()
