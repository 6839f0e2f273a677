"""Benchmark of firmware/trust/p256.py (ECDSA P-256 verify).

usage: .venv/bin/python bench/bench_p256.py [--keys K] [--rounds R]

In one run it measures
  (a) p256.verify inside a real MicroPython unix-port process,
  (b) python-ecdsa VerifyingKey.verify on CPython,
  (c) OpenSSL (via `cryptography`) on CPython,
and prints ms per verify and the ratios ours/python-ecdsa and ours/OpenSSL;
then (d) the smallest `micropython -X heapsize` under which one verify
succeeds, and (e) the .mpy sizes (mpy-cross -march=xtensawin).

Every key is fresh (no per-key caching). Timings are the best of R rounds of
the mean over K keys, for all three implementations alike; the median
round is printed too. Figures only: nothing is asserted.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "host_tests"))

from mp import mpy_cross_exe, run_mp  # noqa: E402

TRUST = os.path.join(ROOT, "firmware", "trust")
MODULES = ["p256.py", "p256_gtable.py"]

MP_TIMER = r"""
import sys, time
from binascii import unhexlify
from trust import p256
cases = []
for line in sys.stdin:
    f = line.split()
    if len(f) == 3:
        cases.append((unhexlify(f[0]), unhexlify(f[1]), unhexlify(f[2])))
rounds = int(sys.argv[1])
for pk, d, sg in cases:          # warm-up and correctness
    if not p256.verify(pk, d, sg):
        print("FAIL")
        sys.exit(1)
for _ in range(rounds):
    t0 = time.ticks_us()
    for pk, d, sg in cases:
        p256.verify(pk, d, sg)
    dt = time.ticks_diff(time.ticks_us(), t0)
    print("ROUND %.4f" % (dt / len(cases) / 1000))
"""

MP_HEAP = r"""
from binascii import unhexlify
from trust import p256
ok = p256.verify(unhexlify("%s"), unhexlify("%s"), unhexlify("%s"))
print("OK" if ok else "NO")
"""


def make_cases(k):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    cases = []
    for _ in range(k):
        key = ec.generate_private_key(ec.SECP256R1())
        msg = os.urandom(48)
        der = key.sign(msg, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        pub = key.public_key()
        nums = pub.public_numbers()
        pk = b"\x04" + nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        cases.append((pk, msg, hashlib.sha256(msg).digest(), sig, der, pub))
    return cases


def summary(rounds):
    rounds = sorted(rounds)
    return rounds[0], rounds[len(rounds) // 2]


def bench_micropython(cases, rounds):
    stdin = "".join("%s %s %s\n" % (pk.hex(), dg.hex(), sig.hex()) for pk, _, dg, sig, _, _ in cases)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(MP_TIMER)
        script = f.name
    try:
        r = run_mp([script, str(rounds)], stdin=stdin)
    finally:
        os.unlink(script)
    vals = [float(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("ROUND")]
    if r.returncode or not vals:
        raise SystemExit("micropython benchmark failed:\n" + r.stdout + r.stderr)
    return summary(vals)


def bench_python_ecdsa(cases, rounds):
    from ecdsa import NIST256p, VerifyingKey
    from ecdsa.util import sigdecode_string

    vals = []
    for _ in range(rounds):
        # a fresh VerifyingKey per verify: no per-key precomputation carried over
        keys = [VerifyingKey.from_string(pk, curve=NIST256p, hashfunc=hashlib.sha256)
                for pk, _, _, _, _, _ in cases]
        t0 = time.perf_counter()
        for vk, (_, msg, _, sig, _, _) in zip(keys, cases):
            if not vk.verify(sig, msg, sigdecode=sigdecode_string):
                raise SystemExit("python-ecdsa rejected a signature")
        vals.append((time.perf_counter() - t0) / len(cases) * 1000)
    return summary(vals)


def bench_openssl(cases, rounds):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    vals = []
    algo = ec.ECDSA(hashes.SHA256())
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _, msg, _, _, der, pub in cases:
            pub.verify(der, msg, algo)
        vals.append((time.perf_counter() - t0) / len(cases) * 1000)
    return summary(vals)


def heap_ok(case, kb):
    pk, _, dg, sig, _, _ = case
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(MP_HEAP % (pk.hex(), dg.hex(), sig.hex()))
        script = f.name
    try:
        r = run_mp([script], heapsize="%dK" % kb, timeout=60)
    finally:
        os.unlink(script)
    return r.returncode == 0 and r.stdout.strip() == "OK"


def smallest_heap(case, lo=4, hi=64):
    """Smallest heap in KB (binary search, 1K steps) with a successful verify."""
    if not heap_ok(case, hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if heap_ok(case, mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def mpy_sizes():
    sizes = {}
    with tempfile.TemporaryDirectory() as d:
        for name in MODULES:
            out = os.path.join(d, name[:-3] + ".mpy")
            subprocess.run([mpy_cross_exe(), "-march=xtensawin", "-o", out, os.path.join(TRUST, name)],
                           check=True, capture_output=True)
            sizes[name] = (os.path.getsize(os.path.join(TRUST, name)), os.path.getsize(out))
    return sizes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=8, help="distinct random keys (default 8)")
    ap.add_argument("--rounds", type=int, default=7, help="timing rounds (default 7)")
    a = ap.parse_args()

    cases = make_cases(a.keys)
    # interleave the measurements so that machine load hits all of them alike
    ours_b, ours_m = bench_micropython(cases, a.rounds)
    pe_b, pe_m = bench_python_ecdsa(cases, a.rounds)
    ossl_b, ossl_m = bench_openssl(cases, a.rounds)
    ours2_b, ours2_m = bench_micropython(cases, a.rounds)
    ours_b = min(ours_b, ours2_b)
    ours_m = min(ours_m, ours2_m)

    print("ECDSA P-256 verify, %d fresh keys, best (median) of %d rounds" % (a.keys, a.rounds))
    print("  %-34s %9s %9s" % ("implementation", "ms best", "ms median"))
    print("  %-34s %9.3f %9.3f" % ("trust/p256.py on MicroPython", ours_b, ours_m))
    print("  %-34s %9.3f %9.3f" % ("python-ecdsa on CPython", pe_b, pe_m))
    print("  %-34s %9.3f %9.3f" % ("OpenSSL (cryptography) on CPython", ossl_b, ossl_m))
    print("  ratio ours / python-ecdsa: %.2f (median %.2f)" % (ours_b / pe_b, ours_m / pe_m))
    print("  ratio ours / OpenSSL:      %.0f (median %.0f)" % (ours_b / ossl_b, ours_m / ossl_m))

    kb = smallest_heap(cases[0])
    print("smallest micropython -X heapsize for one verify: %s" % ("%dK" % kb if kb else "> 64K"))

    total = 0
    for name, (src, mpy) in mpy_sizes().items():
        total += mpy
        print("mpy-cross -march=xtensawin %-16s %6d bytes (source %d)" % (name, mpy, src))
    print("mpy total %d bytes" % total)


if __name__ == "__main__":
    main()
