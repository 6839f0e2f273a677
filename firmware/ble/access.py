"""BLE binding of ACE (PROFILE.md sec. 5; seed draft-maler-ace-oauth-uma-00
sec. 5.2, the Physical Access Control Profile): Challenge, Request and
Result as bytes, decided by the same authorizer, reason table and decision
log as CoAP (transport "ble"). No radio here: the GATT peripheral
(ble.peripheral) hands in whole messages and the connection's identity.
"""
from micropython import const

from lock.authz import Decision
from trust import cbor, reasons

TRANSPORT = "ble"
_HASH_LEN = const(32)
_TOKEN_MAX = const(1024)
_NONCE_LEN = const(16)
_SIG_LEN = const(64)
_PROOF_LEN = const(84)   # 0x82, 0x50 nonce, 0x58 0x40 signature
_ACTIONS = ("unlock", "lock", "pulse", "status")
# CBOR major types of the Request's items: byte, text, byte, byte string
_SHAPE = (2, 3, 2, 2)


def _parse(msg):
    """The Request CBOR [bstr, tstr, bstr, bstr] of `msg` (a
    ble.frag.Reassembler holding a whole message) as four parts read in
    place (frag's part(): a memoryview, a copy only across chunks); None
    unless the message is exactly that, well formed (definite lengths, no
    trailing bytes)."""
    end = msg.length
    h = _head(msg, 0, end)
    if h is None or h[0] != 4 or h[1] != 4:
        return None
    p = h[2]
    out = []
    for mt in _SHAPE:
        h = _head(msg, p, end)
        if h is None or h[0] != mt or h[1] > end - h[2]:
            return None
        p = h[2] + h[1]
        out.append(msg.part(h[2], p))
    return out if p == end else None


def _head(msg, p, end):
    """(major type, argument, position after the head) of the CBOR head at
    `p`, or None (truncated, indefinite length, reserved)."""
    if p >= end:
        return None
    ib = msg.byte(p)
    ai = ib & 0x1F
    p += 1
    if ai < 24:
        return ib >> 5, ai, p
    if ai > 27:
        return None
    n = 1 << (ai - 24)
    if n > end - p:
        return None
    v = 0
    for i in range(p, p + n):
        v = (v << 8) | msg.byte(i)
    return ib >> 5, v, p + n


class Access:
    """What the lock answers on BLE, whatever carries it.

    challenge(peer) -> CBOR [device_id, nonce] (bytes), a fresh PoP nonce
    bound to `peer` (the connection). request(msg, peer) -> CBOR Result
    [granted (bool), error (0-2 or null), reason (text)] for a reassembled
    Request CBOR [token_or_hash, permission, nonce, signature]; for a
    granted `status` the text is the door's state, for a grant the AS was
    not asked about (offline_allowed) that reason; an online check still
    waiting for the AS answers introspection_pending (the Challenge is new
    after every attempt: the phone retries with it). A full token that
    authorized a grant is kept in the token store, so the phone names it
    by its 32-byte id next time. Bearer tokens are refused (sec. 3: only
    over DTLS)."""

    def __init__(self, authz, actuator, resources, device_id):
        self.authz = authz
        self.actuator = actuator
        self.device_id = device_id
        # [nonce (16 bytes), signature (64 bytes)]: heads fixed, filled per request
        self._proof = bytearray(_PROOF_LEN)
        self._proof[0:2] = b"\x82\x50"
        self._proof[2 + _NONCE_LEN:4 + _NONCE_LEN] = b"\x58\x40"
        self._ok = cbor.encode([True, None, reasons.name(reasons.OK)])
        # permission -> the configured resource that acts on it over BLE
        self.actions = {}
        for r in resources:
            if r.action in _ACTIONS and r.permission not in self.actions:
                self.actions[r.permission] = r

    def _proof_of(self, nonce, sig):
        """CBOR [nonce, signature], in the preallocated buffer when the
        sizes are right (the authorizer refuses any other as malformed)."""
        if len(nonce) != _NONCE_LEN or len(sig) != _SIG_LEN:
            return cbor.encode([bytes(nonce), bytes(sig)])
        b = self._proof
        b[2:2 + _NONCE_LEN] = nonce
        b[_PROOF_LEN - _SIG_LEN:] = sig
        return b

    def challenge(self, peer):
        return cbor.encode([self.device_id, self.authz.nonce(peer)])

    def result(self, granted, reason, text=None):
        if granted and text is None and reason == reasons.OK:
            return self._ok  # the door moved: nothing left to allocate
        return cbor.encode([granted, reasons.error_value(reason), text or reasons.name(reason)])

    def invalid(self, why=None):
        """Result for a message that could not be taken (a transport fault,
        malformed CBOR): invalid_request, nothing decided or logged."""
        return self.result(False, reasons.BAD_REQUEST, why)

    def request(self, msg, peer):
        """(Result bytes, Decision or None) for the whole message held by
        `msg` (a ble.frag.Reassembler, which must not change until this
        returns: the token is read in place). Never raises on what the
        phone sent."""
        parts = _parse(msg)
        if parts is None:
            return self.invalid(), None
        tok, perm, nonce, sig = parts
        parts = msg = None
        if not 0 < len(tok) <= _TOKEN_MAX or not cbor.utf8_valid(perm):
            return self.invalid(), None
        perm = str(perm, "utf-8")
        res = self.actions.get(perm)
        if res is None:
            d = self.authz.record(Decision(False, reasons.BAD_REQUEST, None, perm, "no such permission on BLE"),
                                  TRANSPORT)
            return self.result(False, d.reason), d
        action = res.action
        ready = self.actuator.ready if action in ("unlock", "pulse") else None
        # The PoP option's shape (PROFILE sec. 3): the authorizer parses it.
        proof = self._proof_of(nonce, sig)
        d = self.authz.decide(perm, TRANSPORT, peer, tok, proof, None, ready, res.online_check)
        if not d.granted:
            return self.result(False, d.reason), d
        if len(tok) != _HASH_LEN:
            try:
                self.authz.keep(d.token, peer)
            except MemoryError:
                pass  # not kept: the phone sends it whole next time
        text = None
        try:
            if action == "unlock":
                self.actuator.unlock()
            elif action == "lock":
                self.actuator.lock()
            elif action == "pulse":
                self.actuator.pulse(res.channel)
            else:
                text = self.actuator.state()
        except Exception as e:  # the door did not move: say so, fail secure
            self.actuator.set_fault(str(e))
            self.actuator.lock("fault")
            return self.result(False, reasons.ACTUATOR_FAULT), d
        return self.result(True, d.reason, text), d
