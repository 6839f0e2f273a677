"""Benchmark of the BLE transport (PROFILE.md sec. 5): the simulated lock on
NimBLE over Bumble's virtual controller pair, the Bumble phone of
`lockctl ble`.

usage: .venv/bin/python bench/bench_ble.py [--unlocks N]

Prints (figures only, nothing asserted):
  - unlock time from the connect call to the whole Result, p50 and p99 over
    N unlocks each: full token and token id only, at the default 20-byte
    ATT payload (MTU 23) and at 244 bytes (MTU 247), with the ATT writes
    each Request needs. The virtual link has no radio timing (no connection
    interval, no air time): on a phone and an ESP32 each ATT write with
    response costs about one or two connection intervals (7.5-50 ms);
  - the heap the BLE transport holds (radio up, modules, service, buffers),
    and the lock's free heap with BLE and CoAPS on, at READY and once BLE
    is up (it starts after the DTLS contexts);
  - the smallest `-X heapsize` under which the lock, with BLE and CoAPS
    both on, grants 20 of 20 BLE unlocks of two phones (full tokens, then
    ids only or full tokens again, at 20- and 244-byte payloads). A heap
    that fails now and then (fragmentation) may still pass one run: the
    figure is a lower bound, with a few KiB of margin to be safe.
"""
import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile

from benchutil import ROOT, kilobytes, smallest

sys.path[:0] = [os.path.join(ROOT, "firmware"), os.path.join(ROOT, "host_tests", "shims", "cpython")]

from lockctl import ble  # noqa: E402
from lockctl import cose_host as ch  # noqa: E402
from lockctl.interp import ESP32_HEAP_BYTES  # noqa: E402
from simlock import SimLock  # noqa: E402


def ready_heap(lock):
    for line in lock.lines:
        m = re.match(r"heap: (\d+) of (\d+) bytes free", line)
        if m:
            return int(m.group(1))
    return None


async def _attempt(lock, tok, key, **kw):
    async with ble.BlePhone(lock.ble_transport) as p:
        return await p.attempt(lock.device_id, "unlock", tok, key, **kw)


def timings(lock, n):
    key = ch.gen_key()
    tok = lock.token(key)
    out = {}

    async def go():
        first = await _attempt(lock, tok, key)    # stores the token
        if not first.granted:
            raise SystemExit("bench_ble: first unlock refused: %s" % first.describe())
        for id_only in (False, True):
            for mtu in (None, 247):
                ms = []
                writes = None
                for _ in range(n):
                    r = await _attempt(lock, tok, key, id_only=id_only, mtu=mtu)
                    if not r.granted:
                        raise SystemExit("bench_ble: unlock refused: %s" % r.describe())
                    ms.append((r.connect_s + r.result_s) * 1000)
                    writes = r.writes
                out[(id_only, mtu)] = (ms, writes, len(tok))
    asyncio.run(go())
    return out


BLE_COST = """
import gc
from lock import app, config
from trust import cbor, reasons
import asyncio
asyncio.gather, asyncio.sleep_ms
gc.collect()
f0 = gc.mem_free()
from ble import peripheral
p = peripheral.Peripheral(None, "bench-lock", lambda *a: None)
p.start()
gc.collect()
print(f0 - gc.mem_free())
"""


def ble_cost():
    """Bytes of heap the BLE transport holds on the simulator's interpreter."""
    from benchutil import Script
    from lockctl.ble import start_link
    from mp import run_mp
    with tempfile.TemporaryDirectory() as d:
        link, pty, _ = start_link(os.path.join(d, "hci"), 0)
        try:
            os.environ["MICROPYBTUART"] = pty  # run_mp passes the environment on
            try:
                with Script(BLE_COST) as path:
                    r = run_mp([path], heapsize="%dK" % (ESP32_HEAP_BYTES // 1024), timeout=60,
                               mpypath=".frozen")
            finally:
                del os.environ["MICROPYBTUART"]
            return r.stdout.strip().splitlines()[-1] if r.returncode == 0 else "? (%s)" % r.stderr[-200:]
        finally:
            link.kill()
            link.wait(10)


FLOW_UNLOCKS = 20


def flow_ok(k):
    with tempfile.TemporaryDirectory() as d:
        lock = SimLock(d, grow=0, ble=True, coaps=True, heapsize=k * 1024, start=False)
        try:
            try:
                lock.start()
            except AssertionError:
                return False
            k1, k2 = ch.gen_key(), ch.gen_key()
            t1, t2 = lock.token(k1), lock.token(k2)

            async def go():
                # FLOW_UNLOCKS in all: each phone's first with its full
                # token, then its id only (lockctl ble's cache) or the full
                # token again, at both payloads; the first refusal ends it.
                for i in range(FLOW_UNLOCKS):
                    second = i % 3 == 2
                    tok, key = (t2, k2) if second else (t1, k1)
                    id_only = i > 2 and i % 2 == 1
                    r = await _attempt(lock, tok, key, id_only=id_only, mtu=247 if i % 4 == 3 else None)
                    if not r.granted:
                        return False
                return True
            try:
                return asyncio.run(go())
            except ble.BleError:
                return False
        finally:
            lock.stop()


def main():
    import logging
    # Bumble warns of the Challenge notifications that come before the phone
    # subscribed (as lockctl ble, keep them off the figures).
    logging.getLogger("bumble").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unlocks", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        lock = SimLock(d, grow=0, ble=True, coaps=True, heapsize=96 * 1024)  # timings, not heap
        try:
            figs = timings(lock, a.unlocks)
        finally:
            lock.stop()
    print("BLE unlock, connect call to whole Result, %d unlocks each (virtual link: no radio timing):"
          % a.unlocks)
    for (id_only, mtu), (ms, writes, toklen) in sorted(figs.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        ms.sort()
        p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
        print("  %-28s payload %3d bytes: p50 %5.1f ms, p99 %5.1f ms, %2d ATT write(s)" % (
            "token id only" if id_only else "full token (%d bytes)" % toklen, (mtu or 23) - 3,
            statistics.median(ms), p99, writes))
    print("heap the BLE transport takes (bluetooth up, firmware/ble imported, service registered, "
          "buffers; the lock's other modules already loaded): %s bytes" % ble_cost())
    with tempfile.TemporaryDirectory() as d:
        lock = SimLock(d, grow=0, ble=True, coaps=True, heapsize=ESP32_HEAP_BYTES)
        try:
            up = lock.wait_for("BLE: heap", 10)
            print("lock with BLE and CoAPS on, ESP32 heap (%d bytes): %s at READY, %s once BLE is up"
                  % (ESP32_HEAP_BYTES, ready_heap(lock), up.split(":", 1)[1].strip()))
        except AssertionError:
            print("lock with BLE and CoAPS on, ESP32 heap: did not come up:\n%s" % lock.output())
        lock.stop()
    k = smallest(flow_ok, 40, 96)
    print("smallest -X heapsize granting %d of %d BLE unlocks with BLE and CoAPS on (two phones, full "
          "token and id only, both payloads), firmware frozen: %s (the ESP32 boots with 56K)"
          % (FLOW_UNLOCKS, FLOW_UNLOCKS, kilobytes(k, 96)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
