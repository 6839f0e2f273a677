"""Helpers shared by the benchmarks. Importing it puts host_tests/ and tools/
on sys.path (mp, simlock, tokencases, build_mpy, lockctl)."""
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "host_tests"), os.path.join(ROOT, "tools")]

from mp import mpy_cross_exe, run_mp  # noqa: E402

# The interpreter the figures of README.md's table were taken on before the
# project built its own: for context only, never measured here.
PREVIOUS = "previous interpreter (PyPI wheel, 64-bit, recorded)"


def previous(figure):
    print("  %s: %s" % (PREVIOUS, figure))


def smallest(ok, lo, hi):
    """The smallest k in [lo, hi] with ok(k), assuming ok is monotonic;
    None when even ok(hi) fails."""
    if not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def kilobytes(k, hi):
    return "%dK" % k if k else "more than %dK" % hi


class Script:
    """A MicroPython script written to a temporary file (long arguments do
    not fit micropython's argv, so data goes through stdin)."""

    def __init__(self, text):
        self.text = text

    def __enter__(self):
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(self.text)
            self.path = f.name
        return self.path

    def __exit__(self, *exc):
        os.unlink(self.path)


def smallest_heap(script, stdin, lo=8, hi=128):
    """The smallest `-X heapsize` (in K) under which `script` prints OK, the
    firmware coming from the interpreter's frozen modules only (as on the
    board, where its bytecode stays in flash); None above `hi`."""
    with Script(script) as path:
        def ok(k):
            r = run_mp([path], stdin=stdin, heapsize="%dK" % k, timeout=120, mpypath=".frozen")
            return r.returncode == 0 and r.stdout.strip() == "OK"
        return smallest(ok, lo, hi)


def mpy_size(src, march="xtensawin"):
    """Bytes of `src` compiled by build/mp/mpy-cross for `march`."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "m.mpy")
        subprocess.run([mpy_cross_exe(), "-march=" + march, "-O1", "-o", out, src], check=True,
                       capture_output=True)
        return os.path.getsize(out)
