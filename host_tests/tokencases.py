"""Crafted token cases for the trust core, shared by the defect table, the
interop tests and the mutation run. Each case is a dict for
host_tests/dual/casedriver.py; `expect` is the reason code name."""
import json
import os
import time

import cbor2

from lockctl import cose_host as ch
from mp import DUAL, run_mp

ISS = "https://as.example"
DEVICE = "lock-1"
KID = b"as-key-1"


def with_overrides(claims, over):
    """claims updated by `over`, where a None value removes the claim."""
    for k, v in (over or {}).items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    return claims


class World:
    """An AS key, a client key and a lock configuration."""

    def __init__(self):
        self.as_key = ch.gen_key()
        self.other_key = ch.gen_key()
        self.client = ch.gen_key()
        self.psk_key = os.urandom(16)
        self.now = int(time.time())

    def claims(self, over=None):
        c = {1: ISS, 3: DEVICE, 4: self.now + 3600, 5: self.now - 10, 6: self.now - 10,
             7: b"cti-1", 8: {1: ch.cose_key_ec2(self.client)}, 9: "unlock status"}
        return with_overrides(c, over)

    def token(self, claims=None, **kw):
        kw.setdefault("kid", KID)
        return ch.make_sign1(self.claims() if claims is None else claims, self.as_key, **kw)

    def case(self, cid, token, expect, **over):
        c = {"id": cid, "token": token.hex(), "device_id": DEVICE,
             "keys": [[ISS, KID.hex(), ch.pub_bytes(self.as_key).hex()]],
             "psk_key": self.psk_key.hex(), "now": self.now, "expect": expect}
        c.update(over)
        return c


def run_cases(cases, interpreter):
    """Returns {id: (reason, detail)} from the named interpreter."""
    if interpreter == "cpython":
        import casedriver
        return {c["id"]: casedriver.run_case(c) for c in cases}
    stdin = "".join(json.dumps(c) + "\n" for c in cases)
    r = run_mp([os.path.join(DUAL, "casedriver.py")], stdin=stdin, timeout=900)
    if "END" not in r.stdout:
        raise AssertionError("micropython driver failed:\n" + r.stdout[-3000:] + r.stderr[-3000:])
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[0] != "END":
            out[parts[0]] = (int(parts[1]), parts[2] if len(parts) > 2 else "")
    return out


def enc(v):
    return cbor2.dumps(v, canonical=True)


def make_nonce(key, issued_ms, seq=1, peer=None):
    """A PoP nonce as the lock's trust.pop.NonceTable issues it under the
    boot key `key` (PROFILE sec. 3 v2): one AES-128 block of issued_ms
    (5 bytes) | seq (3) | SHA-256(peer)[:8]. For crafted test cases."""
    import hashlib
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    body = issued_ms.to_bytes(5, "big") + seq.to_bytes(3, "big")
    pd = hashlib.sha256(b"" if peer is None else peer.encode()).digest()[:8]
    enc_ = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc_.update(body + pd) + enc_.finalize()
