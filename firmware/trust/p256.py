"""ECDSA P-256 signature verification (trust core / crypto layer).

Pure Python, runs unchanged on MicroPython and CPython. Public API:

    verify(pubkey, digest, sig) -> bool
    point_valid(pubkey) -> bool

`pubkey` is a 65-byte SEC1 uncompressed point 04||X||Y, `digest` the 32-byte
SHA-256 of the message (taken whole as the integer e), `sig` the 64-byte r||s
(IEEE P1363). Only a valid signature gives True; anything malformed (wrong
type or length, key off the curve or with a coordinate >= p, r or s outside
[1, n-1]) gives False, and nothing raises. High s is accepted.

Method: R = u1*G + u2*Q in Jacobian coordinates (x = X/Z^2, y = Y/Z^3) with
one shared chain of 256 doublings (Straus/Shamir interleaving):
  * u1*G: width-8 wNAF over a fixed table of the 64 odd multiples 1G..127G
    (p256_gtable: 4 KB of bytes, turned into ints only when used);
  * u2*Q: width-5 wNAF over the 8 odd multiples Q..15Q, built per call with
    co-Z additions and made affine with one field inversion;
  * both tables are added with mixed Jacobian+affine additions; between
    additions the accumulator carries 2Y instead of Y, which makes the
    doubling cheaper;
  * x(R) mod n == r is checked in Jacobian form (no final inversion).
Cost model (MicroPython): every big-int operation allocates, and `% p` of a
512-bit product costs as much as two or three multiplications, so values
are reduced only where they are multiplied again: a doubling is 8
multiplications and 7 reductions, an addition 11 and 10.
"""

import sys

from micropython import const

from trust import p256_gtable as _gt

# Curve P-256 (FIPS 186-4 D.1.2.3 / SEC 2): y^2 = x^3 - 3x + b over GF(p).
_P = const(0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF)
_N = const(0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551)
_B = const(0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B)

_WQ = const(5)  # wNAF width for the per-call Q table (8 odd multiples)

# Bits handled as small ints by the Lehmer steps of _inv: 60 where small
# ints are 63-bit (64-bit builds, CPython), 28 on 32-bit ports (ESP32).
_LK = 60 if sys.maxsize > 1 << 40 else 28

_GT = memoryview(_gt.T)  # (2k+1)G as x||y, 64 bytes each
_WG = _gt.W


def _inv(a, m):
    """a^-1 mod m for a prime m < 2^256 and 0 < a < m.

    Extended Euclid with Lehmer's speed-up (Knuth, TAOCP vol. 2, 4.5.2,
    Algorithm L): runs of quotient steps are found on the leading _LK bits
    as small ints and applied to the big numbers at once. Only the
    cofactor of a is kept: u = x0*a, v = x1*a (mod m)."""
    u = m
    v = a
    x0 = 0
    x1 = 1
    k = _LK
    low = 1 << (k - 8)
    sh = 256 - k
    while v >> k:
        uh = u >> sh
        while uh < low and sh:
            sh = sh - 8 if sh > 8 else 0
            uh = u >> sh
        vh = v >> sh
        A = 1
        B = 0
        C = 0
        D = 1
        while True:
            t = vh + C
            w = vh + D
            if not t or not w:
                break
            q = (uh + A) // t
            if q != (uh + B) // w:
                break
            A, C = C, A - q * C
            B, D = D, B - q * D
            uh, vh = vh, uh - q * vh
        if B:
            u, v = A * u + B * v, C * u + D * v
            x0, x1 = A * x0 + B * x1, C * x0 + D * x1
        else:
            q, t = divmod(u, v)
            u = v
            v = t
            x0, x1 = x1, x0 - q * x1
    while v > 1:
        q, t = divmod(u, v)
        u = v
        v = t
        x0, x1 = x1, x0 - q * x1
    return x1 % m


def _parse_point(pubkey):
    """(x, y) for a valid SEC1 uncompressed P-256 point, else None."""
    if not isinstance(pubkey, (bytes, bytearray)) or len(pubkey) != 65 or pubkey[0] != 4:
        return None
    p = _P
    x = int.from_bytes(pubkey[1:33], "big")
    y = int.from_bytes(pubkey[33:65], "big")
    if x >= p or y >= p:
        return None
    # On the curve? (The point at infinity has no affine encoding; 04||0||0
    # is rejected here since b != 0.)
    if (y * y - (x * x - 3) * x - _B) % p:
        return None
    return x, y


def point_valid(pubkey):
    """True if pubkey is a valid uncompressed P-256 public key. MemoryError
    propagates: running out of heap is not an invalid key."""
    try:
        return _parse_point(pubkey) is not None
    except MemoryError:
        raise
    except Exception:
        return False


def _wnaf(k, w, out):
    """Width-w NAF of k >= 0 into the bytearray out (w <= 8): out[i] = 0 for
    a zero digit, else 4*j+1 for digit +(2j+1) and 4*j+3 for -(2j+1).
    Returns the index of the highest non-zero digit (-1 if k == 0).

    Digits are found with small ints on 24-bit slices of k (a window never
    crosses the slice end); k itself is touched three times per slice."""
    full = 1 << w
    half = full >> 1
    mask = full - 1
    lim = 24 - w
    i = 0
    top = -1
    while k:
        low = k & 0xFFFFFF
        if not low:
            k >>= 24
            i += 24
            continue
        orig = low
        pos = 0
        while pos <= lim:
            v = low >> pos
            if v & 1:
                d = v & mask
                if d >= half:
                    d -= full
                    out[i + pos] = ((-d) >> 1 << 2) | 3
                else:
                    out[i + pos] = (d >> 1 << 2) | 1
                low -= d << pos  # the next w-1 digits are zero
                top = i + pos
                pos += w
            elif v:
                pos += 1
            else:
                pos = lim + 1
        k = (k - orig + low) >> pos
        i += pos
    return top


def _dbl(X, Y, Z):
    """Jacobian doubling for a = -3 (dbl-2001-b, EFD), used off the hot path."""
    p = _P
    d = Z * Z % p
    g = Y * Y % p
    b = X * g % p
    a = 3 * (X - d) * (X + d) % p
    X3 = (a * a - (b << 3)) % p
    return X3, (a * ((b << 2) - X3) - (g * g << 3)) % p, (Y * Z << 1) % p


def _qtable(x, y):
    """Affine odd multiples Q, 3Q, ..., 15Q of Q = (x, y) as one flat list
    [x1, y1, x3, y3, ...]."""
    p = _P
    # 2Q, and Q on the same Z = 2y (DBLU: Goundar, Joye, Miyaji, Rivain,
    # Venelli, "Scalar multiplication on Weierstrass elliptic curves from
    # Co-Z arithmetic", 2011).
    yy = y * y % p
    PX = (x * yy << 2) % p          # x * Z^2
    PY = (yy * yy << 3) % p         # y * Z^3
    M = 3 * (x * x % p - 1)         # 3x^2 + a
    TX = (M * M - (PX << 1)) % p
    TY = (M * (PX - TX) - PY) % p
    z = (y << 1) % p
    # (2k+1)Q = (2k-1)Q + 2Q with ZADDU (Meloni 2007): (P, T) -> (P + T, T')
    # on a common new Z' = Z * h, h = X_T - X_P. So Z_k = Z_(k-1) * h_k, and
    # ZADDU already has h^2 (C) and h^3 (W1 - W2): they are kept to walk the
    # chain of 1/Z^2 and 1/Z^3 back after one inversion.
    n2 = 2 << (_WQ - 2)
    tab = [0] * n2
    h2s = [0] * n2
    h3s = [0] * n2
    tab[0] = x
    tab[1] = y
    for k in range(2, n2, 2):
        h = TX - PX
        C = h * h % p
        W1 = TX * C % p
        W2 = PX * C % p
        h3 = W1 - W2
        dy = TY - PY
        TY = TY * h3 % p
        PX = (dy * dy - W1 - W2) % p
        PY = (dy * (W1 - PX) - TY) % p
        TX = W1
        tab[k] = PX
        tab[k + 1] = PY
        h2s[k] = C
        h3s[k] = h3
        z = z * h % p
    # One inversion of the last Z, then down the chain to affine:
    # 1/Z_(k-1)^2 = h_k^2 / Z_k^2 and 1/Z_(k-1)^3 = h_k^3 / Z_k^3.
    zi = _inv(z, p)
    zi2 = zi * zi % p
    zi3 = zi2 * zi % p
    k = n2 - 2
    while True:
        tab[k] = tab[k] * zi2 % p
        tab[k + 1] = tab[k + 1] * zi3 % p
        if k == 2:
            return tab
        zi2 = zi2 * h2s[k] % p
        zi3 = zi3 * h3s[k] % p
        k -= 2


def _check_r(X, Z, r):
    """x(R) mod n == r for R = (X:Y:Z) in Jacobian coordinates."""
    if not Z:
        return False
    p = _P
    zz = Z * Z % p
    if (r * zz - X) % p == 0:
        return True
    r += _N
    return r < p and (r * zz - X) % p == 0


def verify(pubkey, digest, sig):
    """ECDSA P-256 verification of a SHA-256 digest; True only if valid.
    MemoryError propagates (the caller answers 5.03): a signature that could
    not be checked is not an invalid one, and must not count against the
    client or be logged as forged."""
    try:
        return _verify(pubkey, digest, sig)
    except MemoryError:
        raise
    except Exception:
        return False


def _verify(pubkey, digest, sig):
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != 32:
        return False
    if not isinstance(sig, (bytes, bytearray)) or len(sig) != 64:
        return False
    q = _parse_point(pubkey)
    if q is None:
        return False
    n = _N
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not 0 < r < n or not 0 < s < n:
        return False
    e = int.from_bytes(digest, "big")
    w = _inv(s, n)
    u1 = e * w % n
    u2 = r * w % n

    # wNAF digit codes (see _wnaf) of u1 and u2, one byte per bit position
    dg = bytearray(264)
    dq = bytearray(264)
    top = max(_wnaf(u1, _WG, dg), _wnaf(u2, _WQ, dq))
    if top < 0:
        return False
    qt = _qtable(q[0], q[1])
    frombytes = int.from_bytes
    gt = _GT
    p = _P
    # Accumulator (X, Y, Z), Jacobian. Between additions it carries 2*Y
    # instead of Y: that saves two small multiplications per doubling.
    # It starts as the point at infinity (Z = 0) at the top digit.
    X = Y = 1
    Z = 0
    for i in range(top, -1, -1):
        if Z:
            # Doubling, a = -3: dbl-2001-b (EFD) rewritten for Y' = 2Y:
            #   g = Y'^2 = 4Y^2, b = X*g = 4XY^2, a = 3(X - Z^2)(X + Z^2),
            #   X3 = a^2 - 2b, Z3 = Y'*Z = 2YZ, Y3' = 2*Y3 = 2a(b - X3) - g^2.
            d = Z * Z % p
            g = Y * Y % p
            b = X * g % p
            a = 3 * (X - d) * (X + d) % p
            X3 = (a * a - (b << 1)) % p
            Z = Y * Z % p
            Y = ((a * (b - X3) << 1) - g * g) % p
            X = X3
        c = dg[i]
        cq = dq[i]
        if c or cq:
            # 2Y -> Y: halve mod p
            if Y & 1:
                Y += p
            Y >>= 1
            if c:
                j = (c & 0xFC) << 4
                x2 = frombytes(gt[j:j + 32], "big")
                y2 = frombytes(gt[j + 32:j + 64], "big")
                if c & 2:
                    y2 = p - y2
                if Z:
                    # Mixed Jacobian + affine addition (madd-2004-hmv, EFD).
                    zz = Z * Z % p
                    H = x2 * zz % p - X
                    R = y2 * (Z * zz % p) % p - Y
                    if H:
                        HH = H * H % p
                        HHH = H * HH % p
                        V = X * HH % p
                        X3 = (R * R - HHH - (V << 1)) % p
                        Y = (R * (V - X3) - Y * HHH) % p
                        X = X3
                        Z = Z * H % p
                    elif R:
                        Z = 0  # P + (-P)
                    else:
                        X, Y, Z = _dbl(X, Y, Z)  # P + P
                else:
                    X = x2
                    Y = y2
                    Z = 1
            if cq:
                j = (cq >> 1) & 0xFE
                x2 = qt[j]
                y2 = qt[j + 1]
                if cq & 2:
                    y2 = p - y2
                if Z:
                    # The same addition as above, for the Q table: inlined
                    # twice on purpose, to keep calls out of the main loop.
                    zz = Z * Z % p
                    H = x2 * zz % p - X
                    R = y2 * (Z * zz % p) % p - Y
                    if H:
                        HH = H * H % p
                        HHH = H * HH % p
                        V = X * HH % p
                        X3 = (R * R - HHH - (V << 1)) % p
                        Y = (R * (V - X3) - Y * HHH) % p
                        X = X3
                        Z = Z * H % p
                    elif R:
                        Z = 0  # P + (-P)
                    else:
                        X, Y, Z = _dbl(X, Y, Z)  # P + P
                else:
                    X = x2
                    Y = y2
                    Z = 1
            Y <<= 1
    return _check_r(X, Z, r)
