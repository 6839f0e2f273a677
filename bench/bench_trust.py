"""Benchmark of the trust core: full token verification on the unix port.

usage: .venv/bin/python bench/bench_trust.py

Prints (figures only, nothing asserted):
  - full token verification time (decode, header rules, claims, cnf point
    check, ES256 signature) for a typical PoP token, beside one bare
    p256.verify measured in the same process, and their ratio;
  - the smallest `micropython -X heapsize` under which verifying that
    token still succeeds (target 24K or less);
  - the size of the trust core compiled with mpy-cross -march=xtensawin.
"""
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "host_tests"), os.path.join(ROOT, "tools"), os.path.dirname(os.path.abspath(__file__))]

from lockctl import cose_host as ch  # noqa: E402
from mp import mpy_cross_exe, run_mp  # noqa: E402
from benchutil import Script, smallest  # noqa: E402
from tokencases import World  # noqa: E402

TIMER = r"""
import sys, time, hashlib
from binascii import unhexlify
from trust import p256
from trust.verifier import TrustedKey, Verifier
a = sys.stdin.read().split()
tok = unhexlify(a[0]); pub = unhexlify(a[1]); now = int(a[2]); d = unhexlify(a[3]); sg = unhexlify(a[4])
v = Verifier("lock-1", [TrustedKey("https://as.example", b"as-key-1", pub)])
v.verify(tok, now)
N = 5
best_full = best_sig = 1e9
for r in range(30):           # alternate short bursts, keep the best of each
    t0 = time.ticks_us()
    for i in range(N):
        v.verify(tok, now)
    best_full = min(best_full, time.ticks_diff(time.ticks_us(), t0) / N / 1000)
    t0 = time.ticks_us()
    for i in range(N):
        p256.verify(pub, d, sg)
    best_sig = min(best_sig, time.ticks_diff(time.ticks_us(), t0) / N / 1000)
print("FULL %.3f SIG %.3f" % (best_full, best_sig))
"""

HEAP = r"""
import sys
from binascii import unhexlify
from trust.verifier import TrustedKey, Verifier
a = sys.stdin.read().split()
v = Verifier("lock-1", [TrustedKey("https://as.example", b"as-key-1", unhexlify(a[1]))])
t = v.verify(unhexlify(a[0]), int(a[2]))
print("OK" if t.allows("unlock") else "NO")
"""

WORKING = r"""
import sys, gc
from binascii import unhexlify
from trust.verifier import TrustedKey, Verifier
a = sys.stdin.read().split()
v = Verifier("lock-1", [TrustedKey("https://as.example", b"as-key-1", unhexlify(a[1]))])
tok = unhexlify(a[0]); now = int(a[2]); budget = int(a[3])
gc.collect()
# Leave only `budget` bytes of heap free, as if the code were frozen in
# flash and the rest of RAM taken: what the verification itself needs.
filler = bytearray(max(0, gc.mem_free() - budget - 64))
t = v.verify(tok, now)
print("OK" if t.allows("unlock") else "NO")
"""


def smallest_working(args, mpypath, lo=1, hi=64):
    with Script(WORKING) as path:
        def ok(k):
            r = run_mp([path], stdin=" ".join(args + [str(k * 1024)]), heapsize="256K", timeout=120,
                       mpypath=mpypath)
            return "OK" in r.stdout
        return smallest(ok, lo, hi)


TRUST_CORE = ["cbor.py", "ccm.py", "cose.py", "cwt.py", "p256.py", "p256_gtable.py", "pop.py",
              "reasons.py", "verifier.py", "__init__.py"]


def mpy_size(paths):
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for p in paths:
            out = os.path.join(tmp, os.path.basename(p) + ".mpy")
            subprocess.run([mpy_cross_exe(), "-march=xtensawin", "-O1", "-o", out, p], check=True)
            total += os.path.getsize(out)
    return total


def compiled_firmware():
    """The firmware as bytecode .mpy, as a board runs it (no compiler in RAM)."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import build_mpy
    out = tempfile.mkdtemp(prefix="lock-mpy-")
    build_mpy.build(out, march=None)
    return out


def smallest_heap(script_args, script, lo=8, hi=256, mpypath=None):
    """The smallest -X heapsize (K) under which `script` prints OK."""
    with Script(script) as path:
        def ok(k):
            r = run_mp([path], stdin=" ".join(script_args), heapsize="%dK" % k, timeout=120,
                       mpypath=mpypath)
            return "OK" in r.stdout
        return smallest(ok, lo, hi)


def main():
    w = World()
    tok = w.token()
    pub = ch.pub_bytes(w.as_key)
    tbs = b"benchmark message"
    import hashlib
    d = hashlib.sha256(tbs).digest()
    sg = ch.sign_es256(w.as_key, tbs)
    args = [tok.hex(), pub.hex(), str(w.now)]
    with Script(TIMER) as timer:
        r = run_mp([timer], stdin=" ".join(args + [d.hex(), sg.hex()]), timeout=300)
    if "FULL" not in r.stdout:
        print("trust bench failed:", r.stdout, r.stderr)
        return 1
    parts = r.stdout.split()
    full, sig = float(parts[1]), float(parts[3])
    print("Full token verification (typical PoP token, %d bytes) on MicroPython" % len(tok))
    print("  full verify       %8.3f ms" % full)
    print("  one p256.verify   %8.3f ms" % sig)
    print("  ratio full / sig  %8.2f" % (full / sig))
    heap_src = smallest_heap(args, HEAP)
    mpy = compiled_firmware()
    heap = smallest_heap(args, HEAP, mpypath=".frozen:" + mpy)
    print("smallest micropython -X heapsize for a full token verification:")
    print("  firmware as .mpy (as on the board)   %sK (target <= 24K)" % heap)
    print("  firmware as .py source (compiler in RAM) %sK" % heap_src)
    work = smallest_working(args, ".frozen:" + mpy)
    print("  working heap of one verification, code preloaded (frozen on the ESP32): %sK" % work)
    paths = [os.path.join(ROOT, "firmware", "trust", m) for m in TRUST_CORE]
    print("trust core, mpy-cross -march=xtensawin: %d bytes (%d modules)" % (mpy_size(paths), len(paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
