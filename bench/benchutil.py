"""Helpers shared by the benchmarks."""
import os
import tempfile


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
