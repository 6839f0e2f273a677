"""Benchmark of the lock on the network (the simulator on the unix port).

usage: .venv/bin/python bench/bench_lock.py [--unlocks N]

Prints (figures only, nothing asserted):
  - unlock latency on loopback, p50 and p99 over N unlocks with a stored
    token and a fresh PoP proof each time, and its ratio to one p256.verify
    measured in the same run (goal <= 1.3);
  - requests per second for GET /.well-known/core (one client, window 1);
  - the free heap the simulator reports at READY on the ESP32's heap
    (ESP32_HEAP_BYTES), the firmware frozen in the interpreter;
  - the smallest `-X heapsize` under which the simulator serves the whole
    unlock flow (upload, challenge, proof, 2.04);
  - the size of the whole firmware compiled for xtensawin.
"""
import argparse
import os
import re
import socket
import statistics
import sys
import tempfile
import time

from benchutil import ROOT, kilobytes, previous, smallest

sys.path[:0] = [os.path.join(ROOT, "firmware"), os.path.join(ROOT, "host_tests", "shims", "cpython")]

import build_mpy  # noqa: E402
import cbor2  # noqa: E402
from bench_p256 import bench_micropython, make_cases, summary  # noqa: E402
from coap import message as cm  # noqa: E402
from lockctl import cose_host as ch  # noqa: E402
from lockctl.interp import ESP32_HEAP_BYTES  # noqa: E402
from simlock import RawClient, SimLock, unlock_flow  # noqa: E402


def p256_ms(rounds=200):
    """(median, best) ms of one p256.verify on the simulator's interpreter."""
    times = [[]]
    bench_micropython(make_cases(1), rounds, times)
    best, med = summary(times)
    return med, best


def ready_heap(lock):
    """(free, total) bytes of the lock's heap at READY."""
    for line in lock.lines:
        m = re.match(r"heap: (\d+) of (\d+) bytes free", line)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None, None


def measure_unlocks(lock, n):
    key = ch.gen_key()
    tok = lock.token(key)
    c = RawClient(lock.port)
    try:
        assert unlock_flow(lock, key, tok, c) == cm.CHANGED
        th = ch.token_id(tok)
        lat = []
        for _ in range(n):
            resp, _ = c.request(cm.POST, "lock/unlock")          # 4.01 + fresh cnonce
            nonce = cbor2.loads(resp.payload)[39]
            proof = ch.pop_proof(key, lock.device_id, nonce, "unlock", th)
            resp, dt = c.request(cm.POST, "lock/unlock", [(cm.POP, proof)])
            if resp.code != cm.CHANGED:
                raise RuntimeError("unlock refused: %d.%02d" % (resp.code >> 5, resp.code & 31))
            lat.append(dt * 1000)
        return lat
    finally:
        c.close()


def measure_rps(lock, n=500):
    c = RawClient(lock.port)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            resp, _ = c.request(cm.GET, ".well-known/core")
            assert resp.code == cm.CONTENT
        return n / (time.perf_counter() - t0)
    finally:
        c.close()


def smallest_sim_heap(tmp, lo=8, hi=128):
    def ok(k):
        d = tempfile.mkdtemp(dir=tmp)
        try:
            lock = SimLock(d, grow=0, heapsize="%dK" % k)
        except AssertionError:
            return False
        try:
            key = ch.gen_key()
            c = RawClient(lock.port)
            c.s.settimeout(5)
            try:
                return unlock_flow(lock, key, lock.token(key), c) == cm.CHANGED and lock.alive()
            except (OSError, socket.timeout):
                return False
            finally:
                c.close()
        finally:
            lock.stop()

    return smallest(ok, lo, hi)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--unlocks", type=int, default=200)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lock-bench-") as tmp:
        lock = SimLock(os.path.join(tmp, "lat"), grow=0, relock_ms=60000, config={"lockout": {"max_failures": 100000}})
        try:
            free, total = ready_heap(lock)
            lat = measure_unlocks(lock, a.unlocks)
            rps = measure_rps(lock)
        finally:
            lock.stop()
        sig, sig_best = p256_ms()
        heap = smallest_sim_heap(tmp)
    lat.sort()
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print("Unlock latency on loopback, %d unlocks (stored token, fresh PoP proof each):" % len(lat))
    print("  p50 %.3f ms   p99 %.3f ms" % (p50, p99))
    print("  one p256.verify in the same run (200 timed): median %.3f ms, best %.3f ms" % (sig, sig_best))
    print("  ratio p50 / median p256.verify: %.2f   p99 / median: %.2f   (goal <= 1.3)" % (p50 / sig, p99 / sig))
    previous("p50 4.9-6.9 ms, p99 12-17 ms; ratio p50 / median p256.verify 1.31-1.9")
    print("GET /.well-known/core: %.0f requests/s (one client, window 1)" % rps)
    previous("2 400-3 400 requests/s")
    print("simulator at READY on the ESP32's heap (-X heapsize=%d), firmware frozen: %s of %s bytes free"
          % (ESP32_HEAP_BYTES, free, total))
    print("smallest -X heapsize serving the unlock flow (upload, challenge, proof, 2.04), firmware frozen: "
          "%s (goal <= 48K)" % kilobytes(heap, 128))
    previous("165K with the firmware as .mpy (bytecode in the heap), 53K working heap")
    with tempfile.TemporaryDirectory() as d:
        made = build_mpy.build(d, "xtensawin", ("esp32",))
    print("whole firmware, mpy-cross -march=xtensawin: %d bytes (%d modules)" % (sum(s for _, s in made), len(made)))


if __name__ == "__main__":
    main()
