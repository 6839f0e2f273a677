"""The viper P-256 field arithmetic (trust/p256_field.py) against Python ints.

Every operation of the register machine (MUL, SQR, ADD, SUB and its
coefficient forms, MULS, ZEXIT) and
load() on the edge values of its input range -- 0, 1, p-1, p, 2p, 7p, 8p,
2^256-1, 2^256, 2^259-1 (the largest allowed input: 19 full limbs and a
12-bit top limb), R mod p, random values -- in one MicroPython process on the
simulator's 32-bit interpreter and on a 64-bit build, and under CPython
(whose run() is the int emulation). Checked: the residue, and that the result
is again a valid input (limbs below 2^13, value below 2^259).

And inv_n (s^-1 mod n, binary extended Euclid) on the ends of [1, n-1],
powers of two and random values against Python's pow(s, -1, n).

Also: the committed module is what tools/gen_p256_field.py generates.
"""
import importlib.util
import os
import random

import pytest

from mp import ROOT
from p256_interp import run_on

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
R = 1 << 260
RINV = pow(R, -1, P)
NL, LB = 20, 13
LIMIT = 1 << 259
OPS = {"MUL": 1, "SQR": 2, "ADD": 3, "SUB": 4, "MULS": 5, "ZEXIT": 7,
       # SUB with coefficients (ka*a - kb*b), p256_field's SUBK[k] at OP_SUB | k << 4
       "SUB_1_8": 4 | 1 << 4, "SUB_4_1": 4 | 2 << 4, "SUB_3_3": 4 | 3 << 4, "SUB_1_2": 4 | 4 << 4}

rng = random.Random(8)
EDGES = [0, 1, 2, P - 1, P, P + 1, 2 * P, 3 * P, 7 * P, 8 * P, (1 << 256) - 1, 1 << 256,
         (1 << 258) + 12345, LIMIT - 1, R % P, R * R % P] + [rng.randrange(LIMIT) for _ in range(6)]
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
LOADS = [0, 1, P - 1, P, N, (1 << 256) - 1, 1 << 255, rng.randrange(1 << 256)]
# inv_n (s^-1 mod n): the ends of [1, n-1], powers of two, long runs of ones
INVS = [1, 2, 3, N - 1, N - 2, (N + 1) // 2, 1 << 128, 1 << 255, (1 << 255) - 1, (1 << 200) - 1,
        int("10" * 127, 2)] + [rng.randrange(1, N) for _ in range(40)]

DRIVER = r"""
import sys
from trust import p256_field as f
ws = bytearray(f.NREGS * 40)
A = f.R_T0
B = f.R_T0 + 1
D = f.R_T0 + 2
def put(reg, v):
    for i in range(20):
        x = v & 0x1FFF
        ws[reg * 40 + 2 * i] = x & 0xFF
        ws[reg * 40 + 2 * i + 1] = x >> 8
        v >>= 13
def get(reg):
    return " ".join("%x" % (ws[reg * 40 + 2 * i] | ws[reg * 40 + 2 * i + 1] << 8) for i in range(20))
n = 0
for line in sys.stdin:
    fs = line.split()
    if not fs:
        continue
    if fs[0] == "LOAD":
        f.load(ws, bytes.fromhex(fs[1]), D << 8)
        print("R %s" % get(D))
    elif fs[0] == "INV":
        buf = bytearray(bytes.fromhex(fs[1]))
        f.inv_n(ws, buf)
        print("I %s" % buf.hex())
    else:
        op = int(fs[0])
        put(A, int(fs[1], 16))
        put(B, int(fs[2], 16))
        put(D, 0)
        b = int(fs[2], 16) if op == 5 else B
        f.PROGS = bytes([op, D, A, b, 0, 0, 0, 0])
        ret = f.run(ws, 0)
        print("R %d %s" % (ret, get(D)))
    n += 1
print("DONE %d" % n)
"""


def cases():
    out = []
    for a in EDGES:
        out.append(("SQR", a, 0))
        out.append(("ZEXIT", a, 0))
        for c in (1, 2, 3, 4, 8):
            out.append(("MULS", a, c))
        for b in EDGES:
            for op in ("MUL", "ADD", "SUB", "SUB_1_8", "SUB_4_1", "SUB_3_3", "SUB_1_2"):
                out.append((op, a, b))
    return out


def expected(op, a, b):
    if op.startswith("SUB_"):
        ka, kb = (int(x) for x in op.split("_")[1:])
        return (ka * a - kb * b) % P
    return {"MUL": a * b * RINV, "SQR": a * a * RINV, "ADD": a + b, "SUB": a - b,
            "MULS": a * b}[op] % P


def check(results):
    """results: [(ret, limbs)] in the order of cases() then LOADS."""
    from trust import p256_field as f
    assert [tuple(k) for k in f._SUBK] == [(1, 1), (1, 8), (4, 1), (3, 3), (1, 2)]
    cs = cases()
    assert len(results) == len(cs) + len(LOADS)
    wrong = []
    for (op, a, b), (ret, lim) in zip(cs, results):
        v = sum(x << (LB * i) for i, x in enumerate(lim))
        if op == "ZEXIT":
            if ret != (1 if a % P == 0 else 0):
                wrong.append("ZEXIT %x: %d" % (a, ret))
            continue
        if ret != 0 or any(not 0 <= x < 1 << LB for x in lim) or v >= LIMIT:
            wrong.append("%s %x %x: out of range %s" % (op, a, b, lim))
        elif v % P != expected(op, a, b):
            wrong.append("%s %x %x: %x" % (op, a, b, v))
    for x, (_, lim) in zip(LOADS, results[len(cs):]):
        if sum(v << (LB * i) for i, v in enumerate(lim)) != x or any(v >= 1 << LB for v in lim):
            wrong.append("load %x: %s" % (x, lim))
    assert not wrong, "\n".join(wrong[:20])


def stdin_text():
    lines = ["%d %x %x" % (OPS[op], a, b) for op, a, b in cases()]
    lines += ["LOAD %064x" % x for x in LOADS]
    lines += ["INV %064x" % x for x in INVS]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("word", [32, 64])
def test_field_edges_on_micropython(word, tmp_path):
    script = tmp_path / "field_driver.py"
    script.write_text(DRIVER)
    r = run_on(word, [str(script)], tmp_path, stdin=stdin_text())
    assert r.returncode == 0 and "DONE" in r.stdout, (r.stdout + r.stderr)[-3000:]
    results = []
    for line in r.stdout.splitlines():
        if line.startswith("R "):
            f = line.split()[1:]
            if len(f) == NL + 1:
                results.append((int(f[0]), [int(x, 16) for x in f[1:]]))
            else:
                results.append((0, [int(x, 16) for x in f]))
    check(results)
    inv = [int(line.split()[1], 16) for line in r.stdout.splitlines() if line.startswith("I ")]
    check_inv(inv)


def check_inv(got):
    assert len(got) == len(INVS)
    wrong = ["%x: %x" % (s, w) for s, w in zip(INVS, got) if not (0 < w < N and s * w % N == 1)]
    assert not wrong, "\n".join(wrong)


def test_field_edges_on_cpython_emulation():
    from trust import p256_field as f
    saved = f.PROGS
    ws = bytearray(f.NREGS * 40)
    results = []

    def put(reg, v):
        for i in range(NL):
            x = (v >> (LB * i)) & 0x1FFF
            ws[reg * 40 + 2 * i:reg * 40 + 2 * i + 2] = x.to_bytes(2, "little")

    def get(reg):
        return [int.from_bytes(ws[reg * 40 + 2 * i:reg * 40 + 2 * i + 2], "little") for i in range(NL)]
    try:
        for op, a, b in cases():
            put(f.R_T0, a)
            put(f.R_T0 + 1, b)
            put(f.R_T0 + 2, 0)
            f.PROGS = bytes([OPS[op], (f.R_T0 + 2), f.R_T0, b if op == "MULS" else (f.R_T0 + 1), 0, 0, 0, 0])
            results.append((f.run(ws, 0), get(f.R_T0 + 2)))
    finally:
        f.PROGS = saved
    for x in LOADS:
        f.load(ws, x.to_bytes(32, "big"), (f.R_T0 + 2) << 8)
        results.append((0, get(f.R_T0 + 2)))
    check(results)
    got = []
    for x in INVS:
        buf = bytearray(x.to_bytes(32, "big"))
        f.inv_n(ws, buf)
        got.append(int.from_bytes(buf, "big"))
    check_inv(got)


def test_generated_module_is_what_the_generator_gives():
    spec = importlib.util.spec_from_file_location("gen_p256_field",
                                                  os.path.join(ROOT, "tools", "gen_p256_field.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    with open(os.path.join(ROOT, "firmware", "trust", "p256_field.py")) as f:
        assert f.read() == gen.generate()
