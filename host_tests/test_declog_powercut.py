"""Power cut at every flash program and erase under the decision log, on a
real littlefs (VfsLfs2 exists only in MicroPython): runs
host_tests/apps/declog_powercut.py in the unix port for a few geometries.
PROFILE sec. 6: a record whose append returned is never lost, a torn record
is dropped at boot, seq never goes back."""
import os
import re

import pytest

from mp import ROOT, run_mp

SCRIPT = os.path.join(ROOT, "host_tests", "apps", "declog_powercut.py")

# (seed, capacity_bytes, segment_bytes, records, least cut points expected)
GEOMETRIES = [
    (1, 640, 256, 30, 80),  # small segments: rotation, acks deleting segments, full log
    (4, 1200, 512, 100, 300),  # long run with many refused records
    (2, 2048, 1024, 60, 300),
    (3, 65536, 8192, 60, 600),  # the firmware's defaults: one growing segment
    (5, 65536, 8192, 200, 3000),  # defaults, long enough to rotate and compact metadata
]


@pytest.mark.slow
@pytest.mark.parametrize("seed,capacity,segment,records,least", GEOMETRIES)
def test_every_power_cut_point(seed, capacity, segment, records, least):
    r = run_mp([SCRIPT, str(seed), str(capacity), str(segment), str(records)],
               heapsize="32M", timeout=300)
    out = r.stdout + r.stderr
    m = re.search(r"^cuts=(\d+) .*failures=(\d+)$", r.stdout, re.M)
    assert m, "no summary from micropython run:\n" + out
    cuts, failures = int(m.group(1)), int(m.group(2))
    print("power cuts tested: %d (capacity %d, segment %d, %d records)"
          % (cuts, capacity, segment, records))
    assert failures == 0 and r.returncode == 0, out
    assert cuts >= least, out
