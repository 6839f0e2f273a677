"""Benchmark of the lock's uplink to the AS (firmware/lock/uplink.py,
PROFILE sec. 7) on the simulator, over loopback DTLS (certificate mode,
mutual; the test AS of host_tests/test_uplink_e2e.py, python-mbedtls).

usage: .venv/bin/python bench/bench_uplink.py [--records N]

The lock logs N decisions with its AS away, then the AS comes up and the
uplink uploads the backlog while a phone keeps unlocking over plain CoAP.
Prints: records per second uploaded, requests and records per request,
bytes per record in /audit (CBOR as sent), and the phone's unlock flow
latency while the upload runs against the same phone's latency with the
uplink idle, measured in the same run (the ratio is the figure: a door
decision never waits on the uplink). The lock runs the ESP32 model's heap
(56 KiB, growing once). Figures only: nothing is asserted.
"""
import argparse
import os
import pathlib
import sys
import tempfile
import time

import cbor2

from benchutil import ROOT

sys.path[:0] = [os.path.join(ROOT, "firmware"), os.path.join(ROOT, "host_tests", "shims", "cpython")]

from lockctl import cose_host as ch  # noqa: E402
from test_uplink_e2e import _as_for, _unlocks, decisions, wait  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=300, help="backlog of decisions to upload (default 300)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with _as_for(pathlib.Path(tmp), True, coaps=True, start_as=False) as (asrv, lock):
            decisions(lock, a.records)
            key = ch.gen_key()
            phone = (key, lock.token(key))
            idle_before = _unlocks(lock, 20, phone)
            asrv.__enter__()
            wait(lambda: asrv.stored, 30, "the first batch", lock)
            t0 = time.time()
            during = []
            while len(asrv.stored) < a.records and time.time() - t0 < 120:
                during += _unlocks(lock, 2, phone)
            wait(lambda: len(asrv.stored) >= a.records, 120, "the backlog at the AS", lock)
            took = time.time() - t0
            idle = idle_before + _unlocks(lock, 20, phone)
            size = sum(len(cbor2.dumps(u["records"])) for u in asrv.uploads)
            n = sum(len(u["records"]) for u in asrv.uploads)
            grew = lock.grew()
    if not during:
        during = idle
    during.sort()
    idle.sort()
    p50 = lambda xs: xs[len(xs) // 2] * 1000  # noqa: E731
    print("uplink: a %d-record backlog over loopback DTLS (certificate mode, mutual), lock on the ESP32 model's "
          "heap%s" % (a.records, " (it grew once)" if grew else ""))
    print("  upload: %.0f records/s; %d requests, %.1f records a request; %.1f bytes a record in /audit"
          % (a.records / took, len(asrv.batches), n / max(1, len(asrv.batches)), size / max(1, n)))
    print("  unlock flow while uploading: p50 %.1f ms, max %.1f ms (%d flows); uplink idle: p50 %.1f ms, "
          "max %.1f ms (%d); ratio of the medians %.2f"
          % (p50(during), during[-1] * 1000, len(during), p50(idle), idle[-1] * 1000, len(idle),
             p50(during) / p50(idle)))


if __name__ == "__main__":
    sys.exit(main())
