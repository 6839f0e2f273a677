"""Runs every dual test module (host_tests/dual/test_*.py) under the
MicroPython unix port, in a real `micropython` process. pytest runs the same
files under CPython directly."""
import os
import re

import pytest

from mp import DUAL, run_mp

MODULES = sorted(f[:-3] for f in os.listdir(DUAL) if f.startswith("test_") and f.endswith(".py"))


@pytest.mark.parametrize("module", MODULES)
def test_module_on_micropython(module):
    r = run_mp([os.path.join(DUAL, "mprun.py"), module])
    out = r.stdout + r.stderr
    m = re.search(r"^(\d+) passed, (\d+) failed$", r.stdout, re.M)
    assert m, "no summary from micropython run:\n" + out
    passed, failed = int(m.group(1)), int(m.group(2))
    assert failed == 0 and r.returncode == 0, out
    assert passed > 0, out
