"""Where the simulator's MicroPython lives and how it is started.

The interpreter and mpy-cross are built from pinned source by
tools/build_mp.py (`make mp`) into build/mp/. The simulator is started with
the heap an ESP32 GENERIC build gives MicroPython at boot.
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MP_DIR = os.path.join(ROOT, "build", "mp")

# ports/esp32/mpconfigport.h at 1c3c201149, for CONFIG_IDF_TARGET_ESP32:
#   #define MICROPY_GC_INITIAL_HEAP_SIZE (56 * 1024)
# allocated in ports/esp32/main.c (mp_task) and handed to gc_init. The board
# adds heap areas later (MICROPY_GC_SPLIT_HEAP_AUTO) from whatever ESP-IDF
# has left, which Wi-Fi, lwIP, NimBLE and mbedTLS's buffers share; the same
# header sizes the initial heap so that it "can grow the heap once (double
# it) and still have enough internal RAM to start WiFi and make a HTTPS
# request". The simulator models that (boards/unix/variant/sysheap.c): the
# initial area, and a system heap of ESP32_HEAP_GROW_BYTES it may grow into
# once, each growth said on stderr ("SIM heap: area ... added"), so a test
# can tell what fits before any growth from what needs the board to grow.
ESP32_HEAP_BYTES = 56 * 1024
ESP32_HEAP_GROW_BYTES = 56 * 1024


class InterpreterMissing(RuntimeError):
    pass


def _exe(name):
    path = os.path.join(MP_DIR, name)
    if not os.path.exists(path):
        raise InterpreterMissing("%s not built: run `make mp` (or `make test`/`make sim`), "
                                 "which builds it from pinned source" % path)
    return path


def micropython_exe():
    """build/mp/micropython; raises InterpreterMissing if it was not built."""
    return _exe("micropython")


def mpy_cross_exe():
    """build/mp/mpy-cross (same source as the interpreter)."""
    return _exe("mpy-cross")


def ensure_built():
    """Rebuild the interpreter if its inputs changed (the firmware is frozen
    in, so a stale build would run old firmware); a no-op otherwise.
    Raises RuntimeError with the build's message when it fails."""
    import sys
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import build_mp
    try:
        build_mp.build()
    except build_mp.BuildError as e:
        raise RuntimeError("cannot build the simulator's MicroPython: %s" % e)


def micropython_cmd(heapsize=ESP32_HEAP_BYTES):
    """argv prefix that starts the simulator's interpreter with `heapsize`
    bytes of GC heap (an int, or a string such as "48K")."""
    return [micropython_exe(), "-X", "heapsize=%s" % heapsize]


def mp_env(mpypath=None, grow=ESP32_HEAP_GROW_BYTES):
    """Environment for the interpreter: frozen modules first (they are the
    firmware), then the simulator's board directory; `grow`: the bytes of
    system heap the GC heap may grow into (0: never grows)."""
    env = dict(os.environ)
    env["MICROPYPATH"] = mpypath or ".frozen:" + os.path.join(ROOT, "boards", "unix")
    env["MICROPY_SIM_HEAP_GROW"] = str(int(grow))
    return env
