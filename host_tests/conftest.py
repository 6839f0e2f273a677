"""Before any test: the simulator's interpreter is current.

The firmware is frozen into build/mp/micropython, so a test run against a
stale build would test old firmware. tools/build_mp.py rebuilds when any
input changed (a no-op otherwise); with pytest-xdist only the controller
builds, before the workers start.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import build_mp  # noqa: E402


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        return
    try:
        build_mp.build(quiet=True)
    except build_mp.BuildError as e:
        raise SystemExit("build_mp: %s" % e)
