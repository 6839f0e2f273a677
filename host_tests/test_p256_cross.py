"""Random cross-check of trust/p256.verify against OpenSSL (`cryptography`):
~200 fresh keys and signatures, plus corrupted variants, all verified in
one real MicroPython process; OpenSSL's verdict is the expected one."""
import hashlib
import os
import random

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from mp import run_mp

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
GOOD = 200
BAD = 100

DRIVER = r"""
import sys
from binascii import unhexlify
from trust import p256
n = 0
for line in sys.stdin:
    f = line.split()
    if len(f) == 4:
        ok = p256.verify(unhexlify(f[1]), unhexlify(f[2]), unhexlify(f[3]))
        print("R %s %d" % (f[0], 1 if ok else 0))
        n += 1
print("DONE %d" % n)
"""


def openssl_verdict(pk, msg, sig):
    """OpenSSL's answer for (raw point, message, r||s); malformed -> False."""
    if len(sig) != 64:
        return False
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    try:
        pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pk)
        pub.verify(encode_dss_signature(r, s), msg, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False


def make_cases(rng):
    cases = []
    good = []
    for _ in range(GOOD):
        key = ec.generate_private_key(ec.SECP256R1())
        msg = os.urandom(rng.randrange(0, 100))
        r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
        if rng.random() < 0.5:
            s = N - s  # both halves of s: no low-s rule
        nums = key.public_key().public_numbers()
        pk = b"\x04" + nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        good.append((pk, msg, sig))
        cases.append((pk, msg, sig, True))
    for i in range(BAD):
        pk, msg, sig = good[i]
        kind = i % 5
        if kind == 0:      # one bit of r or s
            b = bytearray(sig)
            b[rng.randrange(64)] ^= 1 << rng.randrange(8)
            sig = bytes(b)
        elif kind == 1:    # another message
            msg = msg + b"!"
        elif kind == 2:    # another signer's key
            pk = good[(i + 1) % len(good)][0]
        elif kind == 3:    # key off the curve
            b = bytearray(pk)
            b[64] ^= 1
            pk = bytes(b)
        else:              # r and s swapped
            sig = sig[32:] + sig[:32]
        cases.append((pk, msg, sig, openssl_verdict(pk, msg, sig)))
    return cases


def test_random_signatures_agree_with_openssl(tmp_path):
    rng = random.Random(int.from_bytes(os.urandom(8), "big"))
    cases = make_cases(rng)
    assert sum(1 for c in cases if c[3]) >= GOOD
    assert sum(1 for c in cases if not c[3]) >= BAD * 9 // 10
    script = tmp_path / "cross_driver.py"
    script.write_text(DRIVER)
    stdin = "".join("%d %s %s %s\n" % (i, pk.hex(), hashlib.sha256(msg).hexdigest(), sig.hex())
                    for i, (pk, msg, sig, _) in enumerate(cases))
    r = run_mp([str(script)], stdin=stdin, timeout=600)
    assert r.returncode == 0 and ("DONE %d" % len(cases)) in r.stdout, (r.stdout + r.stderr)[-3000:]
    got = {}
    for line in r.stdout.splitlines():
        if line.startswith("R "):
            _, i, v = line.split()
            got[int(i)] = v == "1"
    wrong = ["case %d: key %s sig %s: OpenSSL %s, p256 %s" % (i, c[0].hex(), c[2].hex(), c[3], got.get(i))
             for i, c in enumerate(cases) if got.get(i) != c[3]]
    assert not wrong, "\n".join(wrong)
