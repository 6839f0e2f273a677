"""ECDSA P-256 verification (trust/p256.py): known answers, public-key
validation, malformed signatures. Runs under CPython and the MicroPython
unix port (plain asserts, mpunit helpers only)."""
import hashlib

from mpunit import unhex
from trust import p256

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# RFC 6979 A.2.5: P-256 key, SHA-256 signatures of "sample" and "test".
RFC_PUB = unhex("04"
                "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
                "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299")
RFC_SIGS = [
    (b"sample",
     unhex("EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
           "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8")),
    (b"test",
     unhex("F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367"
           "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083")),
]

# A signature whose R = u1*G + u2*Q has x(R) = n + 3 >= n, so r = 3: the
# comparison must be done modulo n (constructed offline: Q chosen so that
# R lands there; cross-checked with OpenSSL).
XN_PUB = unhex("04"
               "0dff41489ed5ba701627ddcd39bd873d7974b2139e2eef889df2fc2b3b17989c"
               "e8dfa2950db93f8fc957dfd7c1baf9bd6e6b1dd6372b6f02dd856a6694cd73cf")
XN_MSG = b"x(R) >= n"
XN_SIG = unhex("0000000000000000000000000000000000000000000000000000000000000003"
               "1234567890abcdef1234567890abcdef1234567890abcdef1234567890abcdef")

# The curve point with x = 0 (y below).
Y_AT_X0 = 0x66485C780E2F83D72433BD5D84A06BB6541C2AF31DAE871728BF856A174F93F4


def b32(v):
    return v.to_bytes(32, "big")


def point(x, y):
    return b"\x04" + b32(x) + b32(y)


def sha(m):
    return hashlib.sha256(m).digest()


def flip(b, bit):
    out = bytearray(b)
    out[bit >> 3] ^= 1 << (bit & 7)
    return bytes(out)


def rs(sig):
    return int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")


def test_rfc6979_vectors_verify():
    for msg, sig in RFC_SIGS:
        assert p256.verify(RFC_PUB, sha(msg), sig) is True


def test_rfc6979_wrong_message_or_key_fails():
    (m1, s1), (m2, s2) = RFC_SIGS
    assert p256.verify(RFC_PUB, sha(m2), s1) is False
    assert p256.verify(RFC_PUB, sha(m1), s2) is False
    assert p256.verify(XN_PUB, sha(m1), s1) is False


def test_high_s_is_accepted():
    # "sample" already has s > n/2; its low-s twin (r, n - s) is valid too.
    for msg, sig in RFC_SIGS:
        r, s = rs(sig)
        twin = b32(r) + b32(N - s)
        assert p256.verify(RFC_PUB, sha(msg), twin) is True
    r, s = rs(RFC_SIGS[0][1])
    assert s > N // 2


def test_x_of_R_at_least_n_compares_mod_n():
    assert p256.verify(XN_PUB, sha(XN_MSG), XN_SIG) is True
    # r given as the unreduced x(R) = n + 3 is out of range
    r, s = rs(XN_SIG)
    assert p256.verify(XN_PUB, sha(XN_MSG), b32(r + N) + b32(s)) is False
    assert p256.verify(XN_PUB, sha(XN_MSG), b32(r + 1) + b32(s)) is False


def test_r_and_s_range():
    msg, sig = RFC_SIGS[1]
    r, s = rs(sig)
    d = sha(msg)
    cases = [(0, s), (r, 0), (0, 0), (N, s), (r, N), (N + 1, s), (r, N + 1),
             ((1 << 256) - 1, s), (r, (1 << 256) - 1)]
    # r + n and s + n where they still fit 32 bytes (same values mod n)
    cases += [(rr, ss) for rr, ss in ((N + r, s), (r, N + s)) if max(rr, ss) < 1 << 256]
    for rr, ss in cases:
        assert p256.verify(RFC_PUB, d, b32(rr) + b32(ss)) is False, (hex(rr), hex(ss))


def test_bit_flips_fail():
    msg, sig = RFC_SIGS[1]
    d = sha(msg)
    for bit in (0, 1, 7, 8, 100, 255, 256, 300, 511):
        assert p256.verify(RFC_PUB, d, flip(sig, bit)) is False
    for bit in (0, 9, 128, 255):
        assert p256.verify(RFC_PUB, flip(d, bit), sig) is False
    for bit in range(8, 520, 37):  # X and Y of the key
        assert p256.verify(flip(RFC_PUB, bit), d, sig) is False


def test_wrong_lengths_and_types_give_false():
    msg, sig = RFC_SIGS[1]
    d = sha(msg)
    assert p256.verify(bytearray(RFC_PUB), bytearray(d), bytearray(sig)) is True
    bad = [
        (RFC_PUB[:-1], d, sig), (RFC_PUB + b"\x00", d, sig), (RFC_PUB[1:], d, sig),
        (RFC_PUB, d[:-1], sig), (RFC_PUB, d + b"\x00", sig), (RFC_PUB, b"", sig),
        (RFC_PUB, d, sig[:-1]), (RFC_PUB, d, sig + b"\x00"), (RFC_PUB, d, b""),
        (RFC_PUB, d, b"\x30" + sig[1:]),  # not DER either: right length, wrong r
        (None, d, sig), (RFC_PUB, None, sig), (RFC_PUB, d, None),
        (RFC_PUB.hex(), d, sig), (RFC_PUB, d.hex(), sig), (RFC_PUB, d, sig.hex()),
        (list(RFC_PUB), d, sig), (RFC_PUB, 12345, sig), (RFC_PUB, d, 0),
    ]
    for pk, dg, sg in bad:
        assert p256.verify(pk, dg, sg) is False


def test_point_valid_accepts_real_keys():
    assert p256.point_valid(RFC_PUB) is True
    assert p256.point_valid(XN_PUB) is True
    assert p256.point_valid(bytearray(RFC_PUB)) is True
    assert p256.point_valid(point(0, Y_AT_X0)) is True
    assert p256.point_valid(point(0, P - Y_AT_X0)) is True


def test_point_valid_rejects_bad_keys():
    x = int.from_bytes(RFC_PUB[1:33], "big")
    y = int.from_bytes(RFC_PUB[33:], "big")
    bad = [
        point(x, y ^ 1),                      # not on the curve
        point(x ^ 1, y),
        point(0, 0),                          # "infinity" as zeros
        b"\x04" + b"\x00" * 64,
        b"\x00",                              # SEC1 encoding of infinity
        point(P, Y_AT_X0),                    # x = p is 0 mod p: on the curve mod p, out of range
        point(x, y + P) if y + P < 1 << 256 else point(x, P),  # y >= p
        point(P + x, y) if P + x < 1 << 256 else point(P, y),  # x >= p
        b"\x02" + RFC_PUB[1:33],              # compressed forms are not accepted
        b"\x03" + RFC_PUB[1:33],
        b"\x06" + RFC_PUB[1:],                # hybrid / unknown prefixes
        b"\x05" + RFC_PUB[1:],
        RFC_PUB[:64], RFC_PUB + b"\x00", b"",
        None, 4, "04" + "00" * 64, list(RFC_PUB),
    ]
    for pk in bad:
        assert p256.point_valid(pk) is False, pk
        assert p256.verify(pk, sha(b"test"), RFC_SIGS[1][1]) is False


def test_zero_digest_and_small_scalars():
    # e = 0 gives u1 = 0: only the Q half of the double multiplication runs.
    r, s = rs(XN_SIG)
    # the XN key was built for its own digest; with e = 0 it must not verify
    assert p256.verify(XN_PUB, b"\x00" * 32, XN_SIG) is False
    # the public key equal to G, private key 1: sign with k = 1 by hand:
    # R = G, r = Gx mod n, s = (e + r*1)/1 = e + r (mod n)
    gx = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
    gy = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
    g = point(gx, gy)
    for e in (0, 1, N - 1, (1 << 256) - 1):
        d = b32(e)
        s = (e + gx) % N
        assert p256.verify(g, d, b32(gx % N) + b32(s)) is True, e
        assert p256.verify(g, d, b32(gx % N) + b32((s + 1) % N or 1)) is False


def test_exceptional_additions_inside_the_chain():
    # Public key G (private key 1): both halves of u1*G + u2*Q use G.
    gx = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
    gy = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
    g = point(gx, gy)
    x2g = 0x7CF27B188D034F7E8A52380304B51AC3C08969E277F21B35A60B48FC47669978
    # u1 = u2 = 1 (e = r = s): G from the G table plus G from the Q table at
    # the same digit, P + P inside a mixed addition; R = 2G.
    assert p256.verify(g, b32(x2g), b32(x2g) + b32(x2g)) is True
    assert p256.verify(g, b32(x2g), b32(x2g) + b32(x2g - 1)) is False
    # u1 = 1, u2 = n - 1 (e = s, r = n - s): R = G - G is the point at
    # infinity, reached through P + (-P); never valid.
    for s in (1, 2, x2g, N - 2):
        assert p256.verify(g, b32(s), b32(N - s) + b32(s)) is False
    # u1 = 2, u2 = n - 1 (s = n - Gx, r = Gx, e = 2s): R = 2G - G = G.
    s = N - gx
    assert p256.verify(g, b32(2 * s % N), b32(gx) + b32(s)) is True
    assert p256.verify(g, b32(2 * s % N), b32(gx) + b32(s - 1)) is False


def test_repeated_calls_are_independent():
    for _ in range(3):
        for msg, sig in RFC_SIGS:
            assert p256.verify(RFC_PUB, sha(msg), sig) is True
        assert p256.verify(RFC_PUB, sha(b"x"), RFC_SIGS[0][1]) is False
