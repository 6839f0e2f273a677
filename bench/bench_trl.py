"""Benchmark of the revocation list (lock.revlist behind trust.verifier) on
the simulated ESP32 littlefs: a sync of N revoked token ids as the uplink
applies them (PROFILE sec. 7: `GET /trl` pages of P ids into
Verifier.add_revocations, whose 64 RAM entries spill into the flash list),
then lookups against the full list.

usage: .venv/bin/python bench/bench_trl.py [--ids N] [--page P] [--erase-ms MS] [--prog-ms MS]

Prints: bytes on the wire (the CBOR pages), time to apply on the unix
port, flash programmed and erased, the list's size on flash, the time of
one revocation lookup (a token not listed: the whole binary search, and a
listed one) against one ES256 verification measured in the same run, and
the heap a lookup allocates. Figures only: nothing is asserted.
"""
import argparse
import hashlib
import sys

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from benchutil import run_mp

MP_BENCH = r"""
import gc, sys, time, vfs
import blockdev
from lock.revlist import RevocationList
from trust.verifier import Verifier
from trust import p256

N, P = int(sys.argv[1]), int(sys.argv[2])
pub, dig, sig = [bytes.fromhex(x) for x in sys.argv[3:6]]
dev = blockdev.RAMBlockDev(256)
vfs.VfsLfs2.mkfs(dev, **blockdev.LFS_OPTIONS)
vfs.mount(vfs.VfsLfs2(dev, **blockdev.LFS_OPTIONS), "/f")
v = Verifier("lock-1", [], max_revocations=64)
v.trl = RevocationList("/f/trl.bin", capacity=4096)
import hashlib


def tid(i):
    return hashlib.sha256(b"tok-%d" % i).digest()


p0, b0, e0 = dev.progs, dev.prog_bytes, dev.erases
t0 = time.ticks_us()
worst = 0
for start in range(0, N, P):
    t = time.ticks_us()
    v.add_revocations([tid(i) for i in range(start, min(N, start + P))])
    worst = max(worst, time.ticks_diff(time.ticks_us(), t))
dt = time.ticks_diff(time.ticks_us(), t0)
print("APPLY %d %d %d %d %d %d %d %d" % (N, dt, worst, dev.progs - p0, dev.prog_bytes - b0, dev.erases - e0,
                                      len(v.trl), len(v.revoked_hashes)))
import os
print("FILE %d" % os.stat("/f/trl.bin")[6])
K = 200
miss = [hashlib.sha256(b"no-%d" % i).digest() for i in range(K)]
hit = [tid(i) for i in range(0, N, max(1, N // K))][:K]
gc.collect()
a0 = gc.mem_alloc()
t = time.ticks_us()
for x in miss:
    if v.is_revoked(x, None):
        raise SystemExit("false hit")
t_miss = time.ticks_diff(time.ticks_us(), t) / K
a1 = gc.mem_alloc()
t = time.ticks_us()
for x in hit:
    if not v.is_revoked(x, None):
        raise SystemExit("missed")
t_hit = time.ticks_diff(time.ticks_us(), t) / len(hit)
t = time.ticks_us()
for x in miss[:50]:
    v.is_revoked(x, b"cti-of-a-token")
t_cti = time.ticks_diff(time.ticks_us(), t) / 50
r0 = dev.reads
v.is_revoked(miss[0], None)
reads = dev.reads - r0
# The simulated flash is Python (boards/unix/blockdev.py); a board's is a
# driver in C. One of its reads (littlefs reads 32 bytes or its cache of
# 128) is timed apart, so the lookup's own time can be told.
buf = bytearray(128)
t = time.ticks_us()
for i in range(K):
    dev.readblocks(i % 64, buf, 256)
t_dev = reads * time.ticks_diff(time.ticks_us(), t) / K
t_all = min(t_miss, t_hit)
t = time.ticks_us()
for _ in range(5):
    if not p256.verify(pub, dig, sig):
        raise SystemExit("verify failed")
t_ver = time.ticks_diff(time.ticks_us(), t) / 5
print("LOOKUP %.1f %.1f %.1f %.1f %d %d %.1f %.1f" % (t_miss, t_hit, t_cti, t_ver, (a1 - a0) // K, reads, t_all,
                                                  t_dev))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ids", type=int, default=1000, help="revoked token ids to sync (default 1000)")
    ap.add_argument("--page", type=int, default=28, help="ids per GET /trl answer (default 28: one "
                    "1024-byte payload)")
    ap.add_argument("--erase-ms", type=float, default=45.0, help="flash sector erase, ms (default 45)")
    ap.add_argument("--prog-ms", type=float, default=0.4, help="flash program operation, ms (default 0.4)")
    ap.add_argument("--read-us", type=float, default=5.0,
                    help="one littlefs read (32-128 bytes) from SPI flash on a board, us (default 5)")
    ap.add_argument("--board-verify-ms", type=float, default=100.0,
                    help="one ES256 verification on an ESP32, ms (default 100: bench_p256.py's projection)")
    a = ap.parse_args()
    key = ec.generate_private_key(ec.SECP256R1())
    msg = b"bench"
    r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
    from cryptography.hazmat.primitives import serialization
    pub = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    dig = hashlib.sha256(msg).digest()
    wire = 0
    pos = 0
    ids = [hashlib.sha256(b"tok-%d" % i).digest() for i in range(a.ids)]
    for start in range(0, a.ids, a.page):
        page = ids[start:start + a.page]
        pos += len(page)
        wire += len(cbor2.dumps({"pos": pos, "ids": page, "ctis": [], "more": pos < a.ids}))
    out = run_mp(["-c", MP_BENCH, str(a.ids), str(a.page), pub.hex(), dig.hex(), sig.hex()],
                 heapsize="8M", timeout=900)
    if out.returncode:
        sys.exit("micropython failed:\n" + out.stdout + out.stderr)
    f = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if parts:
            f[parts[0]] = parts[1:]
    n, dt, worst, progs, pbytes, erases, listed, ram = (int(x) for x in f["APPLY"])
    size = int(f["FILE"][0])
    miss, hit, cti, ver = (float(x) for x in f["LOOKUP"][:4])
    alloc, reads = int(f["LOOKUP"][4]), int(f["LOOKUP"][5])
    t_all, t_dev = float(f["LOOKUP"][6]), float(f["LOOKUP"][7])
    print("revocation sync of %d token ids in pages of %d (simulated littlefs, 4096-byte blocks)" % (n, a.page))
    print("  on the wire: %d bytes of CBOR in %d pages, %.1f bytes per id" % (wire, -(-n // a.page), wire / n))
    print("  apply on the unix port: %.0f ms in all, worst page %.1f ms; %d on flash, %d still in RAM"
          % (dt / 1000, worst / 1000, listed, ram))
    print("  flash: list file %d bytes (%.1f per id); programmed %d bytes in %d operations, %d erases;"
          " board estimate %.1f s" % (size, size / n, pbytes, progs, erases,
                                      (erases * a.erase_ms + progs * a.prog_ms) / 1000))
    print("  lookup per token: %.1f us not listed (%d block reads), %.1f us listed, %.1f us with a cti;"
          " %d bytes allocated" % (miss, reads, hit, cti, alloc))
    print("  one ES256 verification in the same run: %.0f us; a lookup is %.2f %% of it (with a cti %.2f %%)"
          % (ver, 100 * miss / ver, 100 * cti / ver))
    own = t_all - t_dev
    print("  of a lookup, about %.1f us are the %d reads of the simulated flash's Python driver (a board's is"
          " C): without them %.1f us, %.2f %% of a verification" % (t_dev, reads, own, 100 * max(own, 0) / ver))
    board = 100 * max(own, 0) / ver + 100 * reads * a.read_us / (a.board_verify_ms * 1000)
    print("  on an ESP32 (the interpreter's share scaling as the verification does, %.0f us per flash read,"
          " a %.0f ms verification: --read-us, --board-verify-ms): about %.2f %% of a verification"
          % (a.read_us, a.board_verify_ms, board))


if __name__ == "__main__":
    main()
