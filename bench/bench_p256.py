"""Benchmark of firmware/trust/p256.py (ECDSA P-256 verify).

usage: .venv/bin/python bench/bench_p256.py [--keys K] [--rounds R] [--bursts B]

In one run it measures
  (a) p256.verify inside a real MicroPython unix-port process,
  (b) python-ecdsa VerifyingKey.verify on CPython,
  (c) OpenSSL (via `cryptography`) on CPython,
and prints ms per verify and the ratios ours/python-ecdsa and ours/OpenSSL;
then (d) the smallest `micropython -X heapsize` under which one verify
succeeds (modules as .py source and as .mpy), and the heap a verify needs
once the code is loaded, and (e) the .mpy sizes (mpy-cross -march=xtensawin).

Every key is fresh (no per-key caching). Each signature is timed alone,
many times, in bursts that alternate between the implementations; "best"
is the mean over the keys of each key's fastest time (the least disturbed
by other load on the machine), "median" the mean of each key's median. Both
are computed alike for all three. Figures only: nothing is asserted.
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

from benchutil import smallest  # noqa: E402
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
verify = p256.verify
tu = time.ticks_us
td = time.ticks_diff
for pk, d, sg in cases:          # warm-up and correctness
    if not verify(pk, d, sg):
        print("FAIL")
        sys.exit(1)
for _ in range(rounds):
    out = []
    for pk, d, sg in cases:
        t0 = tu()
        verify(pk, d, sg)
        out.append(td(tu(), t0))
    print("ROUND " + " ".join(str(t) for t in out))
"""

MP_HEAP = r"""
from binascii import unhexlify
from trust import p256
ok = p256.verify(unhexlify("%s"), unhexlify("%s"), unhexlify("%s"))
print("OK" if ok else "NO")
"""

# The module already loaded (as when frozen into flash); all but `budget`
# bytes of the heap taken: what one verification itself needs.
MP_WORKING = r"""
import gc
from binascii import unhexlify
from trust import p256
pk, d, sg = unhexlify("%s"), unhexlify("%s"), unhexlify("%s")
gc.collect()
filler = bytearray(max(0, gc.mem_free() - %d - 64))
print("OK" if p256.verify(pk, d, sg) else "NO")
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


def summary(per_case):
    """per_case[j] = timings (ms) of case j over all rounds. Returns
    (best, median): the mean over cases of each case's minimum / median."""
    best = sum(min(t) for t in per_case) / len(per_case)
    med = sum(sorted(t)[len(t) // 2] for t in per_case) / len(per_case)
    return best, med


def bench_micropython(cases, rounds, acc):
    stdin = "".join("%s %s %s\n" % (pk.hex(), dg.hex(), sig.hex()) for pk, _, dg, sig, _, _ in cases)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(MP_TIMER)
        script = f.name
    try:
        r = run_mp([script, str(rounds)], stdin=stdin)
    finally:
        os.unlink(script)
    lines = [line.split()[1:] for line in r.stdout.splitlines() if line.startswith("ROUND")]
    if r.returncode or not lines:
        raise SystemExit("micropython benchmark failed:\n" + r.stdout + r.stderr)
    for line in lines:
        for j, us in enumerate(line):
            acc[j].append(int(us) / 1000)


def bench_python_ecdsa(cases, rounds, acc):
    from ecdsa import NIST256p, VerifyingKey
    from ecdsa.util import sigdecode_string

    for _ in range(rounds):
        for j, (pk, msg, _, sig, _, _) in enumerate(cases):
            # a fresh VerifyingKey each time: no per-key precomputation
            vk = VerifyingKey.from_string(pk, curve=NIST256p, hashfunc=hashlib.sha256)
            t0 = time.perf_counter()
            ok = vk.verify(sig, msg, sigdecode=sigdecode_string)
            acc[j].append((time.perf_counter() - t0) * 1000)
            if not ok:
                raise SystemExit("python-ecdsa rejected a signature")


def bench_openssl(cases, rounds, acc):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    algo = ec.ECDSA(hashes.SHA256())
    for _ in range(rounds):
        for j, (_, msg, _, _, der, pub) in enumerate(cases):
            t0 = time.perf_counter()
            pub.verify(der, msg, algo)
            acc[j].append((time.perf_counter() - t0) * 1000)


def mp_ok(script, heapsize, mpypath=None):
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        r = run_mp([path], heapsize=heapsize, timeout=60, mpypath=mpypath)
    finally:
        os.unlink(path)
    return r.returncode == 0 and r.stdout.strip() == "OK"


def heap_figures(case):
    """(-X heapsize in K with .py sources, the same with .mpy, working heap
    in bytes with the code already loaded)."""
    pk, _, dg, sig, _, _ = case
    args = (pk.hex(), dg.hex(), sig.hex())
    src = smallest(lambda k: mp_ok(MP_HEAP % args, "%dK" % k), 4, 96)
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "trust"))
        open(os.path.join(d, "trust", "__init__.py"), "w").close()
        for name in MODULES:
            subprocess.run([mpy_cross_exe(), "-o", os.path.join(d, "trust", name[:-3] + ".mpy"),
                            os.path.join(TRUST, name)], check=True, capture_output=True)
        mpy = smallest(lambda k: mp_ok(MP_HEAP % args, "%dK" % k, mpypath=d), 4, 96)
        work = smallest(lambda b: mp_ok(MP_WORKING % (args + (b * 256,)), "128K", mpypath=d), 1, 128)
    return src, mpy, work and work * 256


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
    ap.add_argument("--rounds", type=int, default=5, help="rounds per burst (default 5)")
    ap.add_argument("--bursts", type=int, default=12, help="alternating bursts (default 12)")
    a = ap.parse_args()

    cases = make_cases(a.keys)
    ours = [[] for _ in cases]
    pe = [[] for _ in cases]
    ossl = [[] for _ in cases]
    # Alternate short bursts so that changes in machine speed hit all alike.
    for _ in range(a.bursts):
        bench_micropython(cases, a.rounds, ours)
        bench_python_ecdsa(cases, a.rounds, pe)
        bench_openssl(cases, a.rounds, ossl)
    ours_b, ours_m = summary(ours)
    pe_b, pe_m = summary(pe)
    ossl_b, ossl_m = summary(ossl)

    print("ECDSA P-256 verify, %d fresh random keys, %d timings each" % (a.keys, a.bursts * a.rounds))
    print("  %-34s %9s %9s" % ("implementation", "ms best", "ms median"))
    print("  %-34s %9.3f %9.3f" % ("trust/p256.py on MicroPython", ours_b, ours_m))
    print("  %-34s %9.3f %9.3f" % ("python-ecdsa on CPython", pe_b, pe_m))
    print("  %-34s %9.3f %9.3f" % ("OpenSSL (cryptography) on CPython", ossl_b, ossl_m))
    print("  ratio ours / python-ecdsa: %.2f (medians: %.2f)" % (ours_b / pe_b, ours_m / pe_m))
    print("  ratio ours / OpenSSL:      %.0f (medians: %.0f)" % (ours_b / ossl_b, ours_m / ossl_m))

    src, mpy, work = heap_figures(cases[0])
    fmt = lambda v, unit: "%d%s" % (v, unit) if v else "too big"
    print("smallest micropython -X heapsize under which one verify succeeds:")
    print("  p256 + table as .py source (compiled in RAM):   %s" % fmt(src, "K"))
    print("  p256 + table as .mpy (bytecode in RAM):         %s" % fmt(mpy, "K"))
    print("  working heap of a verify, code loaded (frozen): %s" % fmt(work, " bytes"))

    total = 0
    for name, (src, mpy) in mpy_sizes().items():
        total += mpy
        print("mpy-cross -march=xtensawin %-16s %6d bytes (source %d)" % (name, mpy, src))
    print("mpy total %d bytes" % total)


if __name__ == "__main__":
    main()
