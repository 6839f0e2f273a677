"""Benchmark of firmware/lock/declog.py on the simulated ESP32 littlefs.

usage: .venv/bin/python bench/bench_declog.py [--records N] [--erase-ms MS] [--prog-ms MS]

In the simulator's interpreter (build/mp/micropython), on VfsLfs2 over
boards/unix/blockdev.py's RAM flash (4096-byte blocks, readsize/progsize/
lookahead 32 like the ESP32 port), for a few segment sizes it appends N
records and prints:
  appends per second on the unix port, bytes per record on flash, flash
  programs / bytes programmed / erases per append (the wear), heap allocated
  per append, and an estimate of the flash time per append on the board
  from datasheet figures (--erase-ms per 4 KB sector erase, --prog-ms per
  program operation; defaults: typical values of a W25Q32-class SPI NOR).
Then: the same with the segment file closed between appends, the time to
open (scan) a log of N records, the time to read a page of 16 records, and
the heap the log itself allocates per append (measured on the posix
filesystem so the Python flash simulator's own allocations do not count).
Figures only: nothing is asserted.
"""
import argparse
import sys
import tempfile

from benchutil import previous, run_mp

MP_BENCH = r"""
import gc, sys, time, vfs
import blockdev
from lock.declog import DecisionLog

N = int(sys.argv[1])
n_mount = [0]


def fresh():
    n_mount[0] += 1
    dev = blockdev.RAMBlockDev(128)
    vfs.VfsLfs2.mkfs(dev, **blockdev.LFS_OPTIONS)
    mp = "/b%d" % n_mount[0]
    vfs.mount(vfs.VfsLfs2(dev, **blockdev.LFS_OPTIONS), mp)
    return dev, mp


def args(i):
    return (1700000000 + i, 1000 * i, "coap", "open", "user-%04d" % i, bytes(16), True, 0)


def run(segment, reopen):
    dev, mp = fresh()
    d = DecisionLog(mp + "/log", 1 << 20, segment)
    p0, b0, e0 = dev.progs, dev.prog_bytes, dev.erases
    worst = 0
    t0 = time.ticks_us()
    for i in range(N):
        t = time.ticks_us()
        d.append(*args(i))
        if reopen:
            d.close()
        worst = max(worst, time.ticks_diff(time.ticks_us(), t))
    dt = time.ticks_diff(time.ticks_us(), t0)
    print("APPEND %d %d %d %.1f %.2f %.1f %.0f %d %d" % (
        segment, reopen, N, N * 1e6 / dt, d.used_bytes / N, (dev.progs - p0) / N,
        (dev.prog_bytes - b0) / N, dev.erases - e0, worst))
    d.close()
    t = time.ticks_us()
    d = DecisionLog(mp + "/log", 1 << 20, segment)
    t_open = time.ticks_diff(time.ticks_us(), t)
    t = time.ticks_us()
    page = d.records(N // 2, 16)
    t_page = time.ticks_diff(time.ticks_us(), t)
    print("OPEN %d %d %d %d" % (segment, t_open, t_page, len(page)))
    d.close()
    vfs.umount(mp)


def alloc(root):
    d = DecisionLog(root, 1 << 20, 8192)
    d.append(*args(0))
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    for i in range(N):
        d.append(*args(i))
    a1 = gc.mem_alloc()
    d.records(0, 16)
    a2 = gc.mem_alloc()
    gc.enable()
    print("ALLOC %d %d" % ((a1 - a0) // N, a2 - a1))
    d.close()


for seg in (1024, 4096, 8192):
    run(seg, 0)
run(8192, 1)
alloc(sys.argv[2])
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=300, help="appends per run (default 300)")
    ap.add_argument("--erase-ms", type=float, default=45.0,
                    help="flash sector (4 KB) erase time, ms (default 45, typical SPI NOR)")
    ap.add_argument("--prog-ms", type=float, default=0.4,
                    help="flash program time per operation, ms (default 0.4, typical page program)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = run_mp(["-c", MP_BENCH, str(a.records), tmp + "/log"], heapsize="8M", timeout=600)
    if r.returncode:
        sys.exit("micropython failed:\n" + r.stdout + r.stderr)
    print("decision log on simulated littlefs (4096-byte blocks, prog 32, cache 128), %d appends"
          % a.records)
    print("  %-18s %9s %7s %7s %9s %7s %9s %13s"
          % ("segment bytes", "append/s", "B/rec", "progs", "B prog'd", "erases", "worst ms",
             "board ms est"))
    for line in r.stdout.splitlines():
        f = line.split()
        if f and f[0] == "APPEND":
            seg, reopen, n = int(f[1]), int(f[2]), int(f[3])
            progs, erases = float(f[6]), int(f[8]) / n
            est = erases * a.erase_ms + progs * a.prog_ms
            label = "%d%s" % (seg, " close each" if reopen else "")
            print("  %-18s %9s %7s %7s %9s %7.2f %9.2f %13.1f"
                  % (label, f[4], f[5], f[6], f[7], erases, int(f[9]) / 1000.0, est))
        elif f and f[0] == "ALLOC":
            print("  heap allocated by the log: %s bytes per append, %s bytes per records(limit=16)"
                  % (f[1], f[2]))
        elif f and f[0] == "OPEN":
            print("  segment %s: open (scan of %d records) %.1f ms, records(limit=16) %.1f ms"
                  % (f[1], a.records, int(f[2]) / 1000.0, int(f[3]) / 1000.0))
    print("progs, bytes programmed and erases are per append; "
          "board ms est = erases x %.0f ms + progs x %.1f ms" % (a.erase_ms, a.prog_ms))
    previous("8192: ~5 000 appends/s; 17 programs, 2 KB programmed, 1 erase per append")


if __name__ == "__main__":
    main()
