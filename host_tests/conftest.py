"""Before any test: the simulator's interpreter is current.

The firmware is frozen into build/mp/micropython, so a test run against a
stale build would test old firmware. tools/build_mp.py rebuilds when any
input changed (a no-op otherwise); with pytest-xdist only the controller
builds, before the workers start.
"""
from lockctl.interp import ensure_built


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        return
    try:
        ensure_built()
    except RuntimeError as e:
        raise SystemExit(str(e))
