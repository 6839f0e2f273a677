"""Trust core: proof of possession by signed challenge (PROFILE.md sec. 3).

The lock hands out 16-byte random nonces (single use, 30 s, bounded table).
The client signs, ES256 with its cnf key, the deterministic CBOR encoding of
["lock-pop-v1", device_id, nonce, permission, token_hash] and sends
[nonce, signature].
"""
import os

from micropython import const

from trust import cbor, cose
from trust.ccm import ct_equal
from trust.reasons import NONCE_EXPIRED, NONCE_UNKNOWN, POP_MALFORMED, POP_SIG_INVALID, Refused

NONCE_LEN = const(16)
NONCE_TTL_MS = const(30000)
_CONTEXT = "lock-pop-v1"


class NonceTable:
    """Bounded table of outstanding nonces. `now_ms` is the lock's uptime in
    ms (lock.clock.Clock.uptime_ms): an int that never wraps, so an age is a
    plain difference at any uptime. (Raw ticks_ms would not do: ticks_diff
    of readings 2**29 ms or more apart wraps, and a days-old nonce would look
    fresh.) When full, the oldest nonce is forgotten (its proof will then
    fail as unknown)."""

    def __init__(self, now_ms, capacity=16, ttl_ms=NONCE_TTL_MS, rand=os.urandom):
        self.now_ms = now_ms
        self.capacity = capacity
        self.ttl_ms = ttl_ms
        self.rand = rand
        self.nonces = []  # [(nonce, issued_ms)], oldest first

    def issue(self):
        n = self.rand(NONCE_LEN)
        if len(self.nonces) >= self.capacity:
            self.nonces.pop(0)
        self.nonces.append((n, self.now_ms()))
        return n

    def consume(self, nonce):
        """Single use: the nonce leaves the table whatever happens next.
        Every entry is compared in constant time (STYLE 7)."""
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_LEN:
            raise Refused(POP_MALFORMED, "nonce must be 16 bytes")
        hit = -1
        for i in range(len(self.nonces)):
            if ct_equal(self.nonces[i][0], nonce):
                hit = i
        if hit < 0:
            raise Refused(NONCE_UNKNOWN)
        issued = self.nonces.pop(hit)[1]
        if self.now_ms() - issued > self.ttl_ms:
            raise Refused(NONCE_EXPIRED)

    def __len__(self):
        return len(self.nonces)


def challenge(device_id, nonce, permission, token_hash):
    """The exact bytes the client signs."""
    return cbor.encode([_CONTEXT, device_id, nonce, permission, token_hash])


def parse_proof(raw):
    """CBOR [nonce, signature] -> (nonce, signature); POP_MALFORMED otherwise."""
    try:
        p = cbor.decode(raw, 2, 256)
    except cbor.CBORError as e:
        raise Refused(POP_MALFORMED, str(e))
    if not isinstance(p, list) or len(p) != 2 or not isinstance(p[0], bytes) or not isinstance(p[1], bytes):
        raise Refused(POP_MALFORMED, "proof must be [nonce, signature]")
    if len(p[0]) != NONCE_LEN:
        raise Refused(POP_MALFORMED, "nonce must be 16 bytes")
    if len(p[1]) != 64:
        raise Refused(POP_MALFORMED, "signature must be 64 bytes")
    return p[0], p[1]


def check_proof(raw_proof, pop_key, device_id, permission, token_hash, nonces):
    """Freshness first (the nonce is spent even if the signature then fails),
    then the ES256 signature with the token's cnf key."""
    nonce, sig = parse_proof(raw_proof)
    nonces.consume(nonce)
    check_signature(pop_key, device_id, nonce, sig, permission, token_hash)


def check_signature(pop_key, device_id, nonce, sig, permission, token_hash):
    """The ES256 signature over the challenge, with the token's cnf key."""
    cose.es256_verify(pop_key, challenge(device_id, nonce, permission, token_hash), sig, POP_SIG_INVALID)
