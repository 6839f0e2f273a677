"""Trust core: proof of possession by signed challenge (PROFILE.md sec. 3).

The lock hands out 16-byte nonces bound to the peer (single use, 30 s).
The client signs, ES256 with its cnf key, the deterministic CBOR encoding of
["lock-pop-v1", device_id, nonce, permission, token_hash] and sends
[nonce, signature].
"""
import hashlib
import os

import cryptolib
from micropython import const

from trust import cbor, cose
from trust.ccm import ct_equal
from trust.reasons import NONCE_EXPIRED, NONCE_UNKNOWN, POP_MALFORMED, POP_SIG_INVALID, Refused

NONCE_LEN = const(16)
NONCE_TTL_MS = const(30000)
_ECB = const(1)
_CONTEXT = "lock-pop-v1"


class NonceTable:
    """PoP nonces (PROFILE sec. 3 v2): stateless and bound to the peer they
    were issued to, so nothing a stranger sends can make another peer's
    nonce fail (there is no table of outstanding nonces to flush).

    A nonce is one AES-128 block, under a key drawn at boot, of issued_ms
    (5 bytes) | seq (3) | SHA-256(peer)[:8]: opaque to everyone else (it
    tells nothing of the uptime or the traffic); decrypted, the digest proves
    the lock issued it to this peer, and issued_ms | seq (the body) orders
    the nonces of one boot by issue; issued_ms gives its age against
    `now_ms`, the lock's uptime (an int that never wraps: 30 s at any
    uptime). A reboot draws a new key, so older nonces are unknown.

    Single use: a nonce presented by its peer is spent until it expires, so
    a proof refused before its signature was checked cannot be replayed
    later either. Who fills the spent set: only peers presenting nonces
    issued to themselves. When it is full, the oldest entry whose proof never
    verified gives way first (it guards only a refused proof); failing that,
    the oldest verified one goes and every nonce issued up to it counts as
    spent (a floor), so a replay stays impossible and nothing is refused for
    lack of room: at worst a token holder's unused nonce from before the
    floor is refused and the client asks for a new one."""

    def __init__(self, now_ms, capacity=16, ttl_ms=NONCE_TTL_MS, rand=os.urandom, key=None):
        self.now_ms = now_ms
        self.capacity = capacity
        self.ttl_ms = ttl_ms
        key = key if key is not None else rand(16)
        self._enc = cryptolib.aes(key, _ECB)  # a cryptolib object goes one way
        self._dec = cryptolib.aes(key, _ECB)
        self._seq = 0
        self._spent = {}  # nonce body -> [issued_ms, verified]
        self._floor = b""  # nonces whose body sorts at or before it count as spent

    def _body(self, nonce):
        return self._dec.decrypt(nonce)[:8]

    def issue(self, peer=None):
        """A fresh 16-byte nonce for `peer` (the transport's peer identity:
        the host for CoAP)."""
        self._seq = (self._seq + 1) & 0xFFFFFF
        body = self.now_ms().to_bytes(5, "big") + self._seq.to_bytes(3, "big")
        return self._enc.encrypt(body + _peer_digest(peer))

    def outstanding(self, nonce, peer=None):
        """True if `nonce` was issued to `peer`, is neither spent nor
        expired: `peer` got it at its address (return routability), and it
        has not been used. Spends nothing; one AES block."""
        try:
            self._check(nonce, peer)
            return True
        except Refused:
            return False

    def _check(self, nonce, peer):
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_LEN:
            raise Refused(POP_MALFORMED, "nonce must be 16 bytes")
        block = self._dec.decrypt(nonce)
        body = block[:8]
        if not ct_equal(block[8:], _peer_digest(peer)):
            raise Refused(NONCE_UNKNOWN)
        issued = int.from_bytes(body[:5], "big")
        if self.now_ms() - issued > self.ttl_ms:
            raise Refused(NONCE_EXPIRED)
        if body in self._spent or body <= self._floor:
            raise Refused(NONCE_UNKNOWN, "already used")
        return body, issued

    def consume(self, nonce, peer=None):
        """Check `nonce` as presented by `peer` and spend it. Raises Refused:
        POP_MALFORMED, NONCE_UNKNOWN (not issued to this peer in this boot,
        already spent, or too many in flight), NONCE_EXPIRED."""
        now = self.now_ms()
        spent = self._spent
        for k in [k for k in spent if now - spent[k][0] > self.ttl_ms]:
            del spent[k]
        body, issued = self._check(nonce, peer)
        if len(spent) >= self.capacity:
            self._evict()
        spent[body] = [issued, False]

    def _evict(self):
        spent = self._spent
        old = None
        for verified in (False, True):
            for k in spent:
                if spent[k][1] == verified and (old is None or k < old):
                    old = k
            if old is not None:
                break
        if spent[old][1] and old > self._floor:
            self._floor = old
        del spent[old]

    def confirm(self, nonce):
        """The proof with `nonce` verified: keep it spent for its whole life."""
        e = self._spent.get(self._body(nonce))
        if e is not None:
            e[1] = True

    def forget_all(self):
        """Every nonce issued so far counts as spent (the lock moved to
        another AS: PROFILE sec. 7). Nonces are ordered by issue time and
        sequence number, so one floor covers them all."""
        self._floor = self.now_ms().to_bytes(5, "big") + self._seq.to_bytes(3, "big")
        self._spent = {}

    def __len__(self):
        """Spent nonces still remembered."""
        return len(self._spent)


def _peer_digest(peer):
    if peer is None:
        b = b""
    elif isinstance(peer, (bytes, bytearray)):
        b = bytes(peer)
    elif isinstance(peer, str):
        b = peer.encode()
    else:
        b = repr(peer).encode()
    return hashlib.sha256(b).digest()[:8]


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


def check_proof(raw_proof, pop_key, device_id, permission, token_hash, nonces, peer=None):
    """Freshness first (the nonce is spent even if the signature then fails),
    then the ES256 signature with the token's cnf key."""
    nonce, sig = parse_proof(raw_proof)
    nonces.consume(nonce, peer)
    check_signature(pop_key, device_id, nonce, sig, permission, token_hash)
    nonces.confirm(nonce)


def check_signature(pop_key, device_id, nonce, sig, permission, token_hash):
    """The ES256 signature over the challenge, with the token's cnf key."""
    cose.es256_verify(pop_key, challenge(device_id, nonce, permission, token_hash), sig, POP_SIG_INVALID)
