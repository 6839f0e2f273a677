"""Generate firmware/trust/p256_field.py: the P-256 field arithmetic in viper
(a small register machine), its point programs and the fixed-base table.

usage: python tools/gen_p256_field.py [--check]

--check compares the generated text with the committed file and exits 1 if
they differ (the tests run it); without it the file is written.

Field elements (GF(p), p = 2^256 - 2^224 + 2^192 + 2^96 - 1) are 20 limbs of
13 bits, little-endian, 40 bytes read through `ptr16`, in Montgomery form
a*R mod p with R = 2^260, and kept redundant: any value in [0, 2^259) stands
for its residue. Why these sizes:

  * a product column sums at most 20 products of 13-bit limbs (< 2^30.33),
    plus a carry (< 2^18) and the reduction terms (< 2^24): every
    intermediate stays below 2^31, so the same code is right where viper's
    `int` is a 32-bit word (ESP32, the simulator) and on 64-bit builds;
  * p = -1 mod 2^13, so the Montgomery digit of a column is its low 13 bits,
    and adding m*p*2^(13k) is four shifted adds into later columns
    (2^96 = column +7 shift 5, 2^192 = +14 shift 10, -2^224 = +17 shift 3,
    2^256 = +19 shift 9); the "-m" term only clears the low 13 bits;
  * with inputs below 2^259 the Montgomery product is below
    2^518/2^260 + p < 2^259: no final subtraction;
  * additions and subtractions (with 16p added, 16p > 2^259 > b) are folded
    back below 2^257 with 2^256 = 2^224 - 2^192 - 2^96 + 1 (mod p).

The register machine (`run`) interprets a program of 4-byte instructions
(op, dst, a, b) over a workspace of registers; the point formulas are
programs, so a whole doubling chain or addition is one call from bytecode.
The programs and the register numbers are defined here and emitted as bytes
constants with their listing in comments.

Plain CPython integers; the G table is checked against `cryptography` when
it is installed.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "firmware", "trust", "p256_field.py")

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

NL = 20            # limbs
LB = 13            # bits a limb
MASK = (1 << LB) - 1
R = 1 << (NL * LB)  # Montgomery radix 2^260
WG = 8             # wNAF width of the fixed-base (G) half: 64 odd multiples
# p's terms above 2^0 as (column offset, shift, sign): 2^96, 2^192, -2^224, 2^256
RED = [(96 // LB, 96 % LB, 1), (192 // LB, 192 % LB, 1), (224 // LB, 224 % LB, -1),
       (256 // LB, 256 % LB, 1)]
# 2^256 mod p = 2^224 - 2^192 - 2^96 + 1: the fold of bits >= 256
FOLD = [(0, 0, 1), (96 // LB, 96 % LB, -1), (192 // LB, 192 % LB, -1), (224 // LB, 224 % LB, 1)]
TOP_SHIFT = 256 - LB * (NL - 1)   # bit 256 inside the top limb: 9

# Opcodes
OP_END, OP_MUL, OP_SQR, OP_ADD, OP_SUB, OP_MULS, OP_COPY, OP_ZEXIT, OP_LOOP = range(9)
SRC = 0x80   # operand flag: register k of the source point (see run)
# SUB with coefficients: op byte OP_SUB | k << 4 computes ka*a - kb*b with
# (ka, kb) = SUBK[k] (fusing the small multiples of the point formulas)
SUBK = [(1, 1), (1, 8), (4, 1), (3, 3), (1, 2)]

# Workspace registers (20 limbs, 40 bytes each)
REGS = ["SA", "SB", "X", "Y", "Z", "T0", "T1", "T2", "T3", "T4", "T5", "T6",
        ]
# Constant registers, read from CONSTS (flash when frozen), operand 0x40 + k
CONST = {"ONE": 0, "R2": 1, "B": 2, "ZERO": 3}
CSRC = 0x40
QREGS = 3           # a Q-table entry: X, Y, Z
QW = 5              # wNAF width of the per-call (Q) half: 8 odd multiples
QN = 1 << (QW - 2)
REG = {name: i for i, name in enumerate(REGS)}
REG["Q0"] = len(REGS)
NREGS = len(REGS) + QN * QREGS


def limbs(v):
    return [(v >> (LB * i)) & MASK for i in range(NL)]


def le16(v):
    return b"".join(x.to_bytes(2, "little") for x in limbs(v))


def mont(v):
    return v * R % P


# ---------------------------------------------------------------------------
# Viper source of the register machine


def gen_mul(out, ind, sqr):
    """Montgomery product (or square) of SA (and SB) into z[0..18]; t is
    left with limb 19."""
    for k in range(2 * NL - 1):
        terms = []
        if sqr:
            pairs = ["w[%d] * w[%d]" % (i, k - i) for i in range(max(0, k - NL + 1), (k + 1) // 2)]
            if pairs:
                terms.append("((%s) << 1)" % " + ".join(pairs))
            if k % 2 == 0:
                terms.append("w[%d] * w[%d]" % (k // 2, k // 2))
        else:
            terms += ["w[%d] * w[%d]" % (i, NL + k - i) for i in range(max(0, k - NL + 1), min(k, NL - 1) + 1)]
        for off, sh, sign in RED:
            j = k - off
            if 0 <= j < NL:
                terms.append(("- " if sign < 0 else "+ ") + "(m%d << %d)" % (j, sh))
        expr = " + ".join(t for t in terms if not t.startswith(("+ ", "- ")))
        for t in terms:
            if t.startswith(("+ ", "- ")):
                expr += " " + t
        out.append(ind + ("t = " if k == 0 else "t += ") + expr)
        if k < NL:
            out.append(ind + "m%d = t & 0x1FFF" % k)
        else:
            out.append(ind + "z[%d] = t & 0x1FFF" % (k - NL))
        out.append(ind + "t >>= 13")


def gen_carry(out, ind):
    """Carries through r0..r18; r19 keeps everything above bit 247."""
    for i in range(NL - 1):
        out.append(ind + "r%d += r%d >> 13" % (i + 1, i))
        out.append(ind + "r%d &= 0x1FFF" % i)


def gen_fold(out, ind):
    """r (non-negative, below 2^262) -> the same residue below 2^257."""
    gen_carry(out, ind)
    out.append(ind + "h = r%d >> %d" % (NL - 1, TOP_SHIFT))
    out.append(ind + "r%d &= 0x%X" % (NL - 1, (1 << TOP_SHIFT) - 1))
    for j, sh, sign in FOLD:
        out.append(ind + "r%d %s= h%s" % (j, "+" if sign > 0 else "-", (" << %d" % sh) if sh else ""))
    gen_carry(out, ind)


def gen_run():
    o = []
    o.append("@micropython.viper")
    o.append("def run(w: ptr16, code: int) -> int:")
    o += ['    """Run one program of PROGS over the workspace w (bytearray of NREGS',
          "    registers of %d bytes); code = program offset | 0x400 if the source" % (2 * NL),
          "    point is in GT | arg << 11. Returns 0 at END and 1 where a ZEXIT finds",
          "    its register = 0 (mod p).",
          "",
          "    Instructions are 4 bytes: op, dst, a, b. Operands below 0x40 are",
          "    workspace registers, 0x40+k the constant k of CONSTS, 0x80+k register",
          "    k of the source point, at limb offset arg of the workspace (or of",
          "    GT). LOOP jumps back to the start",
          "    while a counter, set from arg, stays above 0 (a chain of doublings).",
          "    MUL and SQR copy their operands to the scratch registers SA, SB first:",
          "    viper then reads them at constant offsets from w, kept in a machine",
          "    register. Values: Montgomery form, any representative below 2^259;",
          "    results are again below 2^259. No bounds checks: programs, registers",
          '    and offsets come only from p256.py and this module."""']
    ind = "    "
    o.append(ind + "pr = ptr8(PROGS)")
    o.append(ind + "start = code & 0x3FF")
    o.append(ind + "pc = start")
    o.append(ind + "arg = code >> 11")
    o.append(ind + "wa = int(w)")
    o.append(ind + "ga = wa")
    o.append(ind + "if code & 0x400:")
    o.append(ind + "    ga = int(ptr16(GT))")
    o.append(ind + "ga += arg << 1")
    o.append(ind + "ca = int(ptr16(CONSTS))")
    o.append(ind + "while True:")
    ind = "        "
    o.append(ind + "op = pr[pc]")
    o.append(ind + "if op == %d:" % OP_END)
    o.append(ind + "    return 0")
    o.append(ind + "if op == %d:" % OP_LOOP)
    o.append(ind + "    arg -= 1")
    o.append(ind + "    pc += 4")
    o.append(ind + "    if arg > 0:")
    o.append(ind + "        pc = start")
    o.append(ind + "    continue")
    o.append(ind + "d = pr[pc + 1]")
    o.append(ind + "a = pr[pc + 2]")
    o.append(ind + "b = pr[pc + 3]")
    o.append(ind + "pc += 4")
    for v, p in (("d", "z"), ("a", "xa"), ("b", "xb")):
        o.append(ind + "if %s & 0x80:" % v)
        o.append(ind + "    %s = ptr16(ga + (%s & 0x7F) * %d)" % (p, v, 2 * NL))
        if v != "d":
            o.append(ind + "elif %s & 0x40:" % v)
            o.append(ind + "    %s = ptr16(ca + (%s & 0x3F) * %d)" % (p, v, 2 * NL))
        o.append(ind + "else:")
        o.append(ind + "    %s = ptr16(wa + %s * %d)" % (p, v, 2 * NL))
    i2 = ind + "    "
    # MUL / SQR
    o.append(ind + "if op <= %d:" % OP_SQR)
    for i in range(NL):
        o.append(i2 + "w[%d] = xa[%d]" % (i, i))
    o.append(i2 + "if op == %d:" % OP_MUL)
    for i in range(NL):
        o.append(i2 + "    w[%d] = xb[%d]" % (NL + i, i))
    gen_mul(o, i2 + "    ", False)
    o.append(i2 + "else:")
    gen_mul(o, i2 + "    ", True)
    o.append(i2 + "z[%d] = t" % (NL - 1))
    o.append(i2 + "continue")
    # COPY
    o.append(ind + "if op == %d:" % OP_COPY)
    for i in range(NL):
        o.append(i2 + "z[%d] = xa[%d]" % (i, i))
    o.append(i2 + "continue")
    # linear ops
    o.append(ind + "if op == %d:" % OP_ADD)
    for i in range(NL):
        o.append(i2 + "r%d = xa[%d] + xb[%d]" % (i, i, i))
    o.append(ind + "elif op == %d:" % OP_SUB)
    p16 = limbs(16 * P)
    for i in range(NL):
        o.append(i2 + "r%d = xa[%d] - xb[%d] + %d" % (i, i, i, p16[i]))
    o.append(ind + "elif (op & 15) == %d:" % OP_SUB)
    o.append(i2 + "# ka*a - kb*b + kb*16p (SUBK)")
    o.append(i2 + "ka = 1")
    o.append(i2 + "kb = 1")
    o.append(i2 + "op >>= 4")
    for k, (ka, kb) in enumerate(SUBK[1:], 1):
        o.append(i2 + ("if" if k == 1 else "elif") + " op == %d:" % k)
        if ka != 1:
            o.append(i2 + "    ka = %d" % ka)
        if kb != 1:
            o.append(i2 + "    kb = %d" % kb)
    for i in range(NL):
        o.append(i2 + "r%d = ka * xa[%d] - kb * (xb[%d] - %d)" % (i, i, i, p16[i]))
    o.append(ind + "elif op == %d:" % OP_MULS)
    o.append(i2 + "b = pr[pc - 1]")
    for i in range(NL):
        o.append(i2 + "r%d = xa[%d] * b" % (i, i))
    o.append(ind + "else:")
    o.append(i2 + "# ZEXIT: the residue of a below 2^256 is 0 or p")
    for i in range(NL):
        o.append(i2 + "r%d = xa[%d]" % (i, i))
    gen_fold(o, i2)
    gen_fold(o, ind)
    o.append(ind + "if op == %d:" % OP_ZEXIT)
    pl = limbs(P)
    o.append(i2 + "if (%s) == 0:" % " | ".join("r%d" % i for i in range(NL)))
    o.append(i2 + "    return 1")
    o.append(i2 + "if (%s) == 0:" % " | ".join("(r%d ^ %d)" % (i, pl[i]) for i in range(NL)))
    o.append(i2 + "    return 1")
    o.append(i2 + "continue")
    for i in range(NL):
        o.append(ind + "z[%d] = r%d" % (i, i))
    return o


def gen_inv_n():
    """inv_n(): binary extended Euclid mod n on 16-bit limbs, unrolled."""
    base = REG["T0"] * NL
    nl = [(N >> (16 * i)) & 0xFFFF for i in range(16)]
    o = ["@micropython.viper",
         "def inv_n(w: ptr16, buf) -> int:",
         '    """buf (bytearray, 32 bytes big-endian: s with 0 < s < n, n the group',
         "    order) <- s^-1 mod n, big-endian. Binary extended Euclid (Knuth, TAOCP",
         "    vol. 2, 4.5.2, Algorithm B with cofactors): u = s, v = n, x1 = 1,",
         "    x2 = 0, keeping x1*s = u and x2*s = v (mod n); halve u (and x1 mod n)",
         "    while even, likewise v; subtract the smaller odd one from the larger;",
         "    until u or v is 1. Numbers are 16 limbs of 16 bits in the workspace",
         "    registers from T0 on (scratch at this point); returns 0. Not",
         '    constant-time: s is public (it is in the signature)."""',
         "    b = ptr8(buf)",
         "    wa = int(w) + %d" % (2 * base)]
    ind = "    "
    for i in range(16):
        o.append(ind + "w[%d] = b[%d] | (b[%d] << 8)" % (base + i, 31 - 2 * i, 30 - 2 * i))
        o.append(ind + "w[%d] = %d" % (base + 16 + i, nl[i]))
        o.append(ind + "w[%d] = %d" % (base + 32 + i, 1 if i == 0 else 0))
        o.append(ind + "w[%d] = 0" % (base + 48 + i))
    o.append(ind + "while True:")
    ind = "        "
    for k in range(2):  # halve u (x1), then v (x2)
        o.append(ind + "pa = ptr16(wa + %d)" % (32 * k))
        o.append(ind + "px = ptr16(wa + %d)" % (64 + 32 * k))
        o.append(ind + "while not (pa[0] & 1):")
        i2 = ind + "    "
        for i in range(15):
            o.append(i2 + "pa[%d] = (pa[%d] >> 1) | ((pa[%d] & 1) << 15)" % (i, i, i + 1))
        o.append(i2 + "pa[15] = pa[15] >> 1")
        o.append(i2 + "c = 0")
        o.append(i2 + "if px[0] & 1:")
        for i in range(16):
            o.append(i2 + "    c += px[%d] + %d" % (i, nl[i]))
            o.append(i2 + "    px[%d] = c" % i)
            o.append(i2 + "    c >>= 16")
        for i in range(15):
            o.append(i2 + "px[%d] = (px[%d] >> 1) | ((px[%d] & 1) << 15)" % (i, i, i + 1))
        o.append(i2 + "px[15] = (px[15] >> 1) | (c << 15)")
    for k in range(2):
        o.append(ind + "pa = ptr16(wa + %d)" % (32 * k))
        o.append(ind + "if pa[0] == 1 and (%s) == 0:" % " | ".join("pa[%d]" % i for i in range(1, 16)))
        o.append(ind + "    px = ptr16(wa + %d)" % (64 + 32 * k))
        for i in range(16):
            o.append(ind + "    b[%d] = px[%d]" % (31 - 2 * i, i))
            o.append(ind + "    b[%d] = px[%d] >> 8" % (30 - 2 * i, i))
        o.append(ind + "    return 0")
    o.append(ind + "i = 15")
    o.append(ind + "while i > 0 and w[%d + i] == w[%d + i]:" % (base, base + 16))
    o.append(ind + "    i -= 1")
    o.append(ind + "if w[%d + i] >= w[%d + i]:  # u -= v, x1 -= x2" % (base, base + 16))
    o.append(ind + "    pa = ptr16(wa)")
    o.append(ind + "    pb = ptr16(wa + 32)")
    o.append(ind + "else:  # v -= u, x2 -= x1")
    o.append(ind + "    pa = ptr16(wa + 32)")
    o.append(ind + "    pb = ptr16(wa)")
    for half in range(2):
        if half:
            o.append(ind + "pa = ptr16(int(pa) + 64)")
            o.append(ind + "pb = ptr16(int(pb) + 64)")
        o.append(ind + "c = 0")
        for i in range(16):
            o.append(ind + "c += pa[%d] - pb[%d]" % (i, i))
            o.append(ind + "pa[%d] = c" % i)
            o.append(ind + "c >>= 16")
    o.append(ind + "if c < 0:")
    o.append(ind + "    c = 0")
    for i in range(16):
        o.append(ind + "    c += pa[%d] + %d" % (i, nl[i]))
        o.append(ind + "    pa[%d] = c" % i)
        o.append(ind + "    c >>= 16")
    return o


def gen_load():
    o = ["@micropython.viper",
         "def load(ws, src, arg: int):",
         '    """Register arg >> 8 of ws = the 32 big-endian bytes of src at byte',
         "    offset arg & 0xFF, as limbs (not Montgomery form). No bounds checks:",
         '    the caller passes 32 readable bytes."""',
         "    w = ptr16(ws)",
         "    s = ptr8(src)",
         "    d = (arg >> 8) * %d" % NL,
         "    e = (arg & 0xFF) + 31  # the least significant byte"]
    for i in range(NL):
        lo = LB * i
        parts = []
        for byte in range(lo // 8, min((lo + LB - 1) // 8, 31) + 1):
            sh = 8 * byte - lo
            src = "s[e - %d]" % byte if byte else "s[e]"
            if sh < 0:
                parts.append("(%s >> %d)" % (src, -sh))
            elif sh == 0:
                parts.append(src)
            else:
                parts.append("(%s << %d)" % (src, sh))
        o.append("    w[d + %d] = (%s) & 0x1FFF" % (i, " | ".join(parts)))
    return o


# ---------------------------------------------------------------------------
# Point programs (Jacobian coordinates, x = X/Z^2, y = Y/Z^3, a = -3)


def asm(lines):
    """[(op, dst, a, b)] with register names (or 'S0'.. for source registers,
    or ints) -> bytes, and the listing."""
    def reg(v):
        if isinstance(v, int):
            return v
        if v.startswith("S") and v[1:].isdigit():
            return SRC + int(v[1:])
        if v.startswith("Q") and v[1:].isdigit():
            return REG["Q0"] + int(v[1:])
        if v in CONST:
            return CSRC + CONST[v]
        return REG[v]
    names = {OP_END: "END", OP_MUL: "MUL", OP_SQR: "SQR", OP_ADD: "ADD", OP_SUB: "SUB",
             OP_MULS: "MULS", OP_COPY: "COPY", OP_ZEXIT: "ZEXIT", OP_LOOP: "LOOP"}
    code = b""
    listing = []
    for ins in lines + [(OP_END, 0, 0, 0)]:
        op, d, a, b, k = (list(ins) + [0, 0, 0, 0])[:5]
        code += bytes([op | k << 4, reg(d), reg(a), reg(b)])
        if op in (OP_END, OP_LOOP):
            listing.append(names[op])
        elif op == OP_ZEXIT:
            listing.append("ZEXIT %s" % a)
        elif op == OP_COPY:
            listing.append("%s = %s" % (d, a))
        elif op == OP_MULS:
            listing.append("%s = %d * %s" % (d, b, a))
        elif op == OP_SQR:
            listing.append("%s = %s^2" % (d, a))
        elif op == OP_SUB and k:
            ka, kb = SUBK[k]
            listing.append("%s = %s%s - %s%s" % (d, "%d*" % ka if ka > 1 else "", a,
                                                 "%d*" % kb if kb > 1 else "", b))
        else:
            listing.append("%s = %s %s %s" % (d, a, {OP_MUL: "*", OP_ADD: "+", OP_SUB: "-"}[op], b))
    return code, listing


M, S, A, U, C, K, Z_, L = OP_MUL, OP_SQR, OP_ADD, OP_SUB, OP_MULS, OP_COPY, OP_ZEXIT, OP_LOOP

# Doubling, a = -3 (dbl-2001-b, EFD), 4M + 4S and 6 linear operations;
# LOOP repeats it arg times.
DBL = [
    (S, "T0", "Z"),               # delta = Z^2
    (S, "T1", "Y"),               # gamma = Y^2
    (M, "T2", "X", "T1"),         # beta = X*gamma
    (U, "T3", "X", "T0", 3),      # 3X - 3 delta
    (A, "T4", "X", "T0"),
    (M, "T3", "T3", "T4"),        # alpha = 3(X - delta)(X + delta)
    (M, "Z", "Y", "Z"),
    (A, "Z", "Z", "Z"),           # Z3 = 2YZ
    (S, "X", "T3"),
    (U, "X", "X", "T2", 1),       # X3 = alpha^2 - 8 beta
    (U, "T2", "T2", "X", 2),      # 4 beta - X3
    (M, "T2", "T3", "T2"),
    (S, "T1", "T1"),
    (U, "Y", "T2", "T1", 1),      # Y3 = alpha(4 beta - X3) - 8 gamma^2
]


def madd(neg):
    """(X, Y, Z) += (S0, +-S1) affine (madd-2004-hmv, EFD), 8M + 3S. ZEXIT
    leaves X, Y, Z untouched when H = 0 (T2 holds S2, for MRZ)."""
    return [
        (S, "T0", "Z"),                # Z1Z1
        (M, "T1", "S0", "T0"),         # U2 = x2 Z1^2
        (M, "T2", "Z", "T0"),
        (M, "T2", "S1", "T2"),         # S2 = y2 Z1^3
    ] + ([(U, "T2", "ZERO", "T2")] if neg else []) + [
        (U, "T1", "T1", "X"),          # H = U2 - X1
        (Z_, 0, "T1"),
        (U, "T2", "T2", "Y"),          # R = S2 - Y1
        (S, "T3", "T1"),               # HH
        (M, "T4", "T1", "T3"),         # HHH
        (M, "T3", "X", "T3"),          # V = X1 HH
        (M, "Z", "Z", "T1"),           # Z3 = Z1 H
        (S, "X", "T2"),
        (U, "X", "X", "T4"),
        (U, "X", "X", "T3", 4),        # X3 = R^2 - HHH - 2V
        (U, "T3", "T3", "X"),
        (M, "T3", "T2", "T3"),
        (M, "T4", "Y", "T4"),
        (U, "Y", "T3", "T4"),          # Y3 = R(V - X3) - Y1 HHH
    ]


def jadd(neg):
    """(X, Y, Z) += (S0, +-S1, S2) Jacobian (add-1998-cmo-2, EFD), 12M + 4S.
    ZEXIT leaves X, Y, Z untouched when H = 0 (T2 holds S2 and T6 S1, for
    JRZ). Z2^2 and Z2^3 are not cached: the workspace stays small."""
    return [
        (S, "T0", "Z"),                # Z1Z1
        (M, "T1", "S0", "T0"),         # U2 = X2 Z1^2
        (S, "T6", "S2"),               # Z2Z2
        (M, "T5", "X", "T6"),          # U1 = X1 Z2^2
        (M, "T6", "T6", "S2"),
        (M, "T6", "Y", "T6"),          # S1 = Y1 Z2^3
        (M, "T2", "Z", "T0"),
        (M, "T2", "S1", "T2"),         # S2 = Y2 Z1^3
    ] + ([(U, "T2", "ZERO", "T2")] if neg else []) + [
        (U, "T1", "T1", "T5"),         # H = U2 - U1
        (Z_, 0, "T1"),
        (U, "T2", "T2", "T6"),         # R = S2 - S1
        (S, "T3", "T1"),               # HH
        (M, "T4", "T1", "T3"),         # HHH
        (M, "T3", "T5", "T3"),         # V = U1 HH
        (M, "Z", "Z", "S2"),
        (M, "Z", "Z", "T1"),           # Z3 = Z1 Z2 H
        (S, "X", "T2"),
        (U, "X", "X", "T4"),
        (U, "X", "X", "T3", 4),        # X3 = R^2 - HHH - 2V
        (U, "T3", "T3", "X"),
        (M, "T3", "T2", "T3"),
        (M, "T4", "T6", "T4"),
        (U, "Y", "T3", "T4"),          # Y3 = R(V - X3) - S1 HHH
    ]


# 2Q, kept between QINIT and the last QSTEP in the last Q-table entry
D2 = ["Q%d" % (QREGS * (QN - 1) + i) for i in range(3)]

PROGRAMS = {
    "DBLN": (DBL + [(L,)], "arg doublings of (X, Y, Z) (arg >= 1)"),
    "MADD": (madd(False), "(X, Y, Z) += G-table point at arg (arg < 0); 1 if H = 0"),
    "MADDN": (madd(True), "(X, Y, Z) -= G-table point at arg; 1 if H = 0"),
    "MRZ": ([(U, "T2", "T2", "Y"), (Z_, 0, "T2")], "after MADD* gave 1: 1 if R = 0 too (doubling)"),
    "JADD": (jadd(False), "(X, Y, Z) += Q-table entry at arg (arg >= 0); 1 if H = 0"),
    "JADDN": (jadd(True), "(X, Y, Z) -= Q-table entry at arg; 1 if H = 0"),
    "JRZ": ([(U, "T2", "T2", "T6"), (Z_, 0, "T2")], "after JADD* gave 1: 1 if R = 0 too"),
    "GLOAD": ([(K, "X", "S0"), (K, "Y", "S1"), (K, "Z", "ONE")], "(X, Y, Z) = G-table point at arg"),
    "GLOADN": ([(K, "X", "S0"), (U, "Y", "ZERO", "S1"), (K, "Z", "ONE")], "(X, Y, Z) = -(G-table point)"),
    "QLOAD": ([(K, "X", "S0"), (K, "Y", "S1"), (K, "Z", "S2")], "(X, Y, Z) = Q-table entry at arg"),
    "QLOADN": ([(K, "X", "S0"), (U, "Y", "ZERO", "S1"), (K, "Z", "S2")], "(X, Y, Z) = -(Q-table entry)"),
    # Q0 x, y loaded raw (not Montgomery) -> Montgomery, Z = Z^2 = Z^3 = 1,
    # 1 if on the curve (y^2 = x^3 - 3x + b), and 2Q in the registers of
    # the last entry, which the last QSTEP reads before it writes them.
    "QINIT": ([
        (M, "Q0", "Q0", "R2"),
        (M, "Q1", "Q1", "R2"),
        (K, "Q2", "ONE"),
        (K, "X", "Q0"), (K, "Y", "Q1"), (K, "Z", "ONE"),
    ] + DBL + [
        (K, D2[0], "X"), (K, D2[1], "Y"), (K, D2[2], "Z"),
        (S, "T0", "Q1"),
        (S, "T1", "Q0"),
        (M, "T1", "T1", "Q0"),
        (C, "T2", "Q0", 3),
        (U, "T1", "T1", "T2"),
        (A, "T1", "T1", "B"),
        (U, "T0", "T0", "T1"),
        (Z_, 0, "T0"),
    ], "Q to Montgomery form, 2Q; 1 if Q is on the curve"),
    # Entry k+1 = entry k (at arg) + 2Q; 1 (H = 0) cannot happen for a
    # point of prime order n > 15.
    "QSTEP": ([(K, "X", D2[0]), (K, "Y", D2[1]), (K, "Z", D2[2])] + jadd(False) + [
        (K, "S3", "X"), (K, "S4", "Y"), (K, "S5", "Z"),
    ], "Q-table entry after the one at arg = it + 2Q"),
    # T5 loaded raw: 1 if T5 * Z^2 = X (mod p), i.e. x(R) = T5.
    "CHECKR": ([
        (M, "T5", "T5", "R2"),
        (S, "T0", "Z"),
        (M, "T0", "T0", "T5"),
        (U, "T0", "T0", "X"),
        (Z_, 0, "T0"),
    ], "1 if x(X, Y, Z) = T5 (T5 loaded raw)"),
}


def gtable():
    """Affine odd multiples 1G, 3G, ..., (2^(WG-1)-1)G."""
    def add(p1, p2):
        (x1, y1), (x2, y2) = p1, p2
        if p1 == p2:
            lam = (3 * x1 * x1 - 3) * pow(2 * y1, -1, P) % P
        else:
            lam = (y2 - y1) * pow(x2 - x1, -1, P) % P
        x3 = (lam * lam - x1 - x2) % P
        return x3, (lam * (x1 - x3) - y1) % P
    g = (GX, GY)
    g2 = add(g, g)
    pts = [g]
    while len(pts) < 1 << (WG - 2):
        pts.append(add(pts[-1], g2))
    try:
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:
        return pts
    for i, (x, y) in enumerate(pts):
        pub = ec.derive_private_key(2 * i + 1, ec.SECP256R1()).public_key().public_numbers()
        if (pub.x, pub.y) != (x, y):
            raise SystemExit("G table mismatch at %dG" % (2 * i + 1))
    return pts


def bytes_lines(name, raw, comment):
    out = ["# " + comment, name + " = ("]
    for i in range(0, len(raw), 40):
        out.append('    b"' + "".join("\\x%02x" % c for c in raw[i:i + 40]) + '"')
    out.append(")")
    return out


INT_FALLBACK = '''# CPython (host tests) has no viper: run() and load() there are this
# emulation of the same machine on Python ints, over the same workspace
# layout, tables and programs; registers hold canonical residues.
if sys.implementation.name != "micropython":
    from struct import pack as _pack

    _P = %d
    _RINV = %d
    _SEEN = {}  # limb bytes -> int, for the values run() wrote
    _SUBK = %r


    def _get(buf, off):
        raw = bytes(buf[2 * off:2 * off + %d])
        v = _SEEN.get(raw)
        if v is None:
            v = 0
            for i in range(%d, -1, -2):
                v = (v << %d) | raw[i - 1] | (raw[i] << 8)
        return v


    def _put(buf, off, v):
        raw = _pack("<%dH", *[(v >> (%d * i)) & 0x%X for i in range(%d)])
        if len(_SEEN) > 4096:
            _SEEN.clear()
        _SEEN[raw] = v
        buf[2 * off:2 * off + %d] = raw


    def _run_int(w, code):
        start = pc = code & 0x3FF
        arg = code >> 11
        g = GT if code & GSRC else w
        while True:
            op, d, a, b = PROGS[pc:pc + 4]
            pc += 4
            if op == %d:
                return 0
            if op == %d:
                arg -= 1
                if arg > 0:
                    pc = start
                continue
            ops = []
            for r in (d, a, b):
                ops.append((g, arg + (r & 0x7F) * %d) if r & 0x80 else
                           (CONSTS, (r & 0x3F) * %d) if r & 0x40 else (w, r * %d))
            x = _get(*ops[1])
            if op == %d:
                v = x * _get(*ops[2]) * _RINV
            elif op == %d:
                v = x * x * _RINV
            elif op == %d:
                v = x + _get(*ops[2])
            elif op & 15 == %d:
                ka, kb = _SUBK[op >> 4]
                v = ka * x - kb * _get(*ops[2])
            elif op == %d:
                v = x * b
            elif op == %d:
                v = x
            elif x %% _P == 0:
                return 1
            else:
                continue
            _put(ops[0][0], ops[0][1], v %% _P)

    def _inv_n_int(w, buf):
        buf[:] = pow(int.from_bytes(buf, "big"), -1, %d).to_bytes(32, "big")
        return 0

    def _load_int(w, src, arg):
        o = arg & 0xFF
        _put(w, (arg >> 8) * %d, int.from_bytes(bytes(src[o:o + 32]), "big"))

    run = _run_int
    load = _load_int
    inv_n = _inv_n_int
''' % (P, pow(R, -1, P), tuple(SUBK), 2 * NL, 2 * NL - 1, LB, NL, LB, MASK, NL, 2 * NL, OP_END, OP_LOOP, NL, NL, NL, OP_MUL, OP_SQR,
       OP_ADD, OP_SUB, OP_MULS, OP_COPY, N, NL)


def generate():
    o = ['"""P-256 field arithmetic in viper (trust core / crypto): a register machine',
         "over GF(p) in Montgomery form, the point programs p256.py runs on it, and",
         "the fixed-base table.",
         "",
         "Generated by tools/gen_p256_field.py (read its docstring for the number",
         "representation and the bounds); do not edit by hand.",
         "",
         "Under CPython (host tests) run() and load() are an emulation on Python",
         "ints (at the end of this module): same programs, tables and layout.",
         '"""',
         "",
         "import sys",
         "",
         "import micropython",
         "",
         'if sys.implementation.name != "micropython":',
         "    ptr16 = None  # viper's type, named in an annotation of run()",
         "",
         "NREGS = %d  # workspace registers, %d bytes each" % (NREGS, 2 * NL),
         "WG = %d  # wNAF width of the G table" % WG,
         "WQ = %d  # wNAF width of the Q table" % QW,
         "QREGS = %d  # registers per Q-table entry: X, Y, Z" % QREGS,
         "# register numbers"]
    for name in ("T0", "T5"):  # T0 for the tests, T5 for CHECKR's operand
        o.append("%s = %d" % ("R_" + name, REG[name]))
    o.append("R_Q0 = %d  # Q-table entry k at R_Q0 + QREGS * k" % REG["Q0"])
    o.append("")
    consts = b"".join(le16(v) for v in (mont(1), R * R % P, mont(B), 0))
    o.append("NLE = %r  # n, 16 little-endian 16-bit limbs (inv_n)" % N.to_bytes(32, "little"))
    o += bytes_lines("CONSTS", consts, "ONE, R2, B, ZERO: operands 0x40..0x43 "
                     "(Montgomery 1, R^2 mod p, Montgomery b, 0)")
    o.append("")
    progs = b""
    o.append("# The programs, one bytes constant (PROGS); each name is its offset.")
    for name, (prog, doc) in PROGRAMS.items():
        code, listing = asm(prog)
        o.append("# %s: %s" % (name, doc))
        for i in range(0, len(listing), 6):
            o.append("#   " + "; ".join(listing[i:i + 6]))
        o.append("%s = %d" % (name, len(progs)))
        progs += code
    if len(progs) > 0x3FF:
        raise SystemExit("programs too long for the 10-bit offset of run()")
    o.append("")
    o += bytes_lines("PROGS", progs, "all programs, 4 bytes an instruction")
    o.append("GSRC = 0x400  # run(): the source point is in GT")
    o.append("")
    pts = gtable()
    raw = b"".join(le16(mont(x)) + le16(mont(y)) for x, y in pts)
    o += bytes_lines("GT", raw, "(2k+1)G for k = 0..%d: Montgomery x then y, 40 bytes each "
                     "(point k at limb offset %d k)" % (len(pts) - 1, 2 * NL))
    o.append("")
    o.append("")
    o += gen_run()
    o.append("")
    o.append("")
    o += gen_load()
    o.append("")
    o.append("")
    o += gen_inv_n()
    o.append("")
    o.append("")
    o += INT_FALLBACK.splitlines()
    o.append("")
    return "\n".join(o)


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="compare with the committed file instead of writing it (exit 1 if they differ)")
    args = ap.parse_args()
    text = generate()
    if args.check:
        with open(OUT) as f:
            same = f.read() == text
        print("%s is %s" % (OUT, "up to date" if same else "NOT what the generator gives"))
        sys.exit(0 if same else 1)
    with open(OUT, "w") as f:
        f.write(text)
    print("wrote %s (%d bytes)" % (OUT, len(text)))


if __name__ == "__main__":
    main()
