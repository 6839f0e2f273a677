"""Benchmark of the trust core: full token verification on the simulator's
interpreter (build/mp/micropython, the firmware frozen in).

usage: .venv/bin/python bench/bench_trust.py

Prints (figures only, nothing asserted):
  - full token verification time (decode, header rules, claims, cnf point
    check, ES256 signature) for a typical PoP token, beside one bare
    p256.verify measured in the same process, and their ratio;
  - the smallest `micropython -X heapsize` under which verifying that
    token still succeeds, the trust core coming from the frozen modules as
    it does from flash on the board (target 24K or less);
  - the size of the trust core compiled with mpy-cross -march=xtensawin.
"""
import hashlib
import os
import sys

from benchutil import ROOT, Script, kilobytes, mpy_size, previous, run_mp, smallest_heap
from lockctl import cose_host as ch
from tokencases import World

TIMER = r"""
import sys, time
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

TRUST_CORE = ["cbor.py", "ccm.py", "cose.py", "cwt.py", "p256.py", "p256_field.py", "pop.py",
              "reasons.py", "verifier.py", "__init__.py"]


def main():
    w = World()
    tok = w.token()
    pub = ch.pub_bytes(w.as_key)
    tbs = b"benchmark message"
    d = hashlib.sha256(tbs).digest()
    sg = ch.sign_es256(w.as_key, tbs)
    args = " ".join([tok.hex(), pub.hex(), str(w.now)])
    with Script(TIMER) as timer:
        r = run_mp([timer], stdin=" ".join([args, d.hex(), sg.hex()]), timeout=300)
    if "FULL" not in r.stdout:
        print("trust bench failed:", r.stdout, r.stderr)
        return 1
    parts = r.stdout.split()
    full, sig = float(parts[1]), float(parts[3])
    print("Full token verification (typical PoP token, %d bytes) on build/mp/micropython" % len(tok))
    print("  full verify       %8.3f ms" % full)
    print("  one p256.verify   %8.3f ms" % sig)
    print("  ratio full / sig  %8.2f" % (full / sig))
    previous("3.78 ms = 1.04 x one p256.verify")
    heap = smallest_heap(HEAP, args, 8, 128)
    print("smallest micropython -X heapsize for a full token verification, trust core frozen: %s "
          "(target <= 24K)" % kilobytes(heap, 128))
    previous("52K with the firmware as .mpy (bytecode in the heap), 13K working heap")
    size = sum(mpy_size(os.path.join(ROOT, "firmware", "trust", m)) for m in TRUST_CORE)
    print("trust core, mpy-cross -march=xtensawin: %d bytes (%d modules)" % (size, len(TRUST_CORE)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
