"""Benchmark of firmware/trust/p256.py (ECDSA P-256 verify).

usage: .venv/bin/python bench/bench_p256.py [--keys K] [--rounds R] [--bursts B]

In one run it measures
  (a) p256.verify inside a real MicroPython unix-port process,
  (b) python-ecdsa VerifyingKey.verify on CPython,
  (c) OpenSSL (via `cryptography`) on CPython,
and prints ms per verify and the ratios ours/python-ecdsa and ours/OpenSSL;
then (d) the smallest `micropython -X heapsize` under which one verify
succeeds, p256 coming from the interpreter's frozen modules (in flash on the
ESP32), (e) the .mpy sizes (mpy-cross -march=xtensawin) and the native code
in them, and (f) the instructions one verify executes on the simulator's
32-bit interpreter (valgrind's callgrind: counted, not timed; a process with
K verifies minus one with none), with a projected ESP32 time.

Every key is fresh (no per-key caching). Each signature is timed alone,
many times, in bursts that alternate between the implementations; "best"
is the mean over the keys of each key's fastest time (the least disturbed
by other load on the machine), "median" the mean of each key's median. Both
are computed alike for all three. Figures only: nothing is asserted.
"""
import argparse
import hashlib
import os
import time

from benchutil import ROOT, Script, kilobytes, mpy_size, previous, run_mp, smallest_heap

TRUST = os.path.join(ROOT, "firmware", "trust")
MODULES = ["p256.py", "p256_field.py"]

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
import sys
from binascii import unhexlify
from trust import p256
a = sys.stdin.read().split()
print("OK" if p256.verify(unhexlify(a[0]), unhexlify(a[1]), unhexlify(a[2])) else "NO")
"""


MP_COUNT = r"""
import sys
from binascii import unhexlify
from trust import p256
cases = [[unhexlify(x) for x in line.split()] for line in sys.stdin if line.strip()]
if sys.argv[1] == "1":
    for pk, d, sg in cases:
        if not p256.verify(pk, d, sg):
            print("FAIL")
            sys.exit(1)
print("OK")
"""

# Projection to the ESP32 (assumptions, not measurements): 240 MHz Xtensa
# LX6; the x86 instruction count taken as the Xtensa one (the viper code is
# straight-line loads, multiplies, adds and shifts on both; xtensawin keeps
# more values in registers, but needs two instructions where x86 has one
# for some address forms); 1.25 cycles an instruction on average (single
# issue, multiplies pipelined, code and the G table run from flash through
# the 32 KB cache, in which the 33 KB of hot native code nearly fits).
ESP32_HZ = 240e6
ESP32_CPI = 1.25


def count_instructions(cases):
    """Instructions per verify on build/mp/micropython, or None without valgrind."""
    import shutil
    import subprocess
    import tempfile
    from mp import micropython_exe
    if not shutil.which("valgrind"):
        return None
    stdin = "".join("%s %s %s\n" % (pk.hex(), dg.hex(), sig.hex()) for pk, _, dg, sig, _, _ in cases)
    counts = []
    with Script(MP_COUNT) as script, tempfile.TemporaryDirectory() as d:
        for run in ("0", "1"):
            out = os.path.join(d, "cg." + run)
            r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                                micropython_exe(), "-X", "heapsize=2M", script, run],
                               input=stdin, capture_output=True, text=True,
                               env=dict(os.environ, MICROPYPATH=".frozen"))
            if r.returncode or "OK" not in r.stdout:
                raise SystemExit("callgrind run failed:\n" + r.stdout + r.stderr[-2000:])
            for line in r.stderr.splitlines():
                if "Collected :" in line:
                    counts.append(int(line.split(":")[-1].strip().replace(",", "")))
    return (counts[1] - counts[0]) / len(cases)


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
    with Script(MP_TIMER) as script:
        r = run_mp([script, str(rounds)], stdin=stdin)
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
    print("  %-36s %9s %9s" % ("implementation", "ms best", "ms median"))
    print("  %-36s %9.3f %9.3f" % ("trust/p256.py, build/mp/micropython", ours_b, ours_m))
    print("  %-36s %9.3f %9.3f" % ("python-ecdsa on CPython", pe_b, pe_m))
    print("  %-36s %9.3f %9.3f" % ("OpenSSL (cryptography) on CPython", ossl_b, ossl_m))
    print("  ratio ours / python-ecdsa: %.2f (medians: %.2f)" % (ours_b / pe_b, ours_m / pe_m))
    print("  ratio ours / OpenSSL:      %.0f (medians: %.0f)" % (ours_b / ossl_b, ours_m / ossl_m))

    previous("3.38 ms best, 3.6-3.9 ms median; ratio ours / python-ecdsa 1.99-2.01")

    pk, _, dg, sig, _, _ = cases[0]
    heap = smallest_heap(MP_HEAP, " ".join((pk.hex(), dg.hex(), sig.hex())), 4, 128)
    print("smallest micropython -X heapsize under which one verify succeeds, p256 frozen: %s"
          % kilobytes(heap, 128))
    previous("19K with p256 as .mpy (bytecode in the heap), 8 KB working heap")

    total = 0
    for name in MODULES:
        size = mpy_size(os.path.join(TRUST, name))
        total += size
        print("mpy-cross -march=xtensawin %-16s %6d bytes (source %d)"
              % (name, size, os.path.getsize(os.path.join(TRUST, name))))
    print("mpy total %d bytes" % total)
    import sys
    sys.path[:0] = [os.path.join(ROOT, "firmware"), os.path.join(ROOT, "host_tests", "shims", "cpython")]
    from trust import p256_field as f
    data = len(f.GT) + len(f.PROGS) + len(f.CONSTS)
    import tempfile
    src = open(os.path.join(TRUST, "p256_field.py")).read()
    with tempfile.TemporaryDirectory() as d:
        tables = os.path.join(d, "tables.py")
        with open(tables, "w") as out:
            out.write(src[:src.index("@micropython.viper")])
        code = mpy_size(os.path.join(TRUST, "p256_field.py")) - mpy_size(tables)
    print("p256_field for xtensawin: %d bytes of code (viper run(), inv_n() and load(), and the CPython"
          " emulation's bytecode), %d bytes of tables (G %d, programs %d, constants %d)"
          % (code, data, len(f.GT), len(f.PROGS), len(f.CONSTS)))

    per = count_instructions(cases[:4])
    if per is None:
        print("instructions per verify: valgrind is not installed (apt-get install valgrind)")
    else:
        print("instructions per verify on build/mp/micropython (callgrind, 4 keys): %.1f M (goal <= 20 M)"
              % (per / 1e6))
        print("projected ESP32 verify at %d MHz and %.2f cycles an instruction: %.0f ms (goal <= 120 ms)"
              % (ESP32_HZ / 1e6, ESP32_CPI, per * ESP32_CPI / ESP32_HZ * 1000))
        print("  recorded: the mpz p256 before the viper field arithmetic, 67.0 M instructions on"
              " this interpreter (349 ms projected alike)")


if __name__ == "__main__":
    main()
