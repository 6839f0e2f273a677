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
_ACTIONS = ("unlock", "lock", "pulse", "status")


class Access:
    """What the lock answers on BLE, whatever carries it.

    challenge(peer) -> CBOR [device_id, nonce] (bytes), a fresh PoP nonce
    bound to `peer` (the connection). request(msg, peer) -> CBOR Result
    [granted (bool), error (0-2 or null), reason (text)] for a reassembled
    Request CBOR [token_or_hash, permission, nonce, signature]; for a
    granted `status` the text is the door's state. A full token that
    authorized a grant is kept in the token store, so the phone names it
    by its 32-byte id next time. Bearer tokens are refused (sec. 3: only
    over DTLS)."""

    def __init__(self, authz, actuator, resources, device_id):
        self.authz = authz
        self.actuator = actuator
        self.device_id = device_id
        # permission -> the configured resource that acts on it over BLE
        self.actions = {}
        for r in resources:
            if r.action in _ACTIONS and r.permission not in self.actions:
                self.actions[r.permission] = r

    def challenge(self, peer):
        return cbor.encode([self.device_id, self.authz.nonce(peer)])

    @staticmethod
    def result(granted, reason, text=None):
        return cbor.encode([granted, reasons.error_value(reason), text or reasons.name(reason)])

    def invalid(self, why=None):
        """Result for a message that could not be taken (a transport fault,
        malformed CBOR): invalid_request, nothing decided or logged."""
        return self.result(False, reasons.BAD_REQUEST, why)

    def request(self, msg, peer):
        """(Result bytes, Decision or None). Never raises on what the phone sent."""
        try:
            req = cbor.decode(msg, 2, 1400)
        except cbor.CBORError:
            return self.invalid(), None
        if (not isinstance(req, list) or len(req) != 4 or not isinstance(req[0], bytes)
                or not isinstance(req[1], str) or not isinstance(req[2], bytes)
                or not isinstance(req[3], bytes) or not 0 < len(req[0]) <= _TOKEN_MAX):
            return self.invalid(), None
        tok, perm, nonce, sig = req
        req = msg = None
        res = self.actions.get(perm)
        if res is None:
            d = self.authz.record(Decision(False, reasons.BAD_REQUEST, None, perm, "no such permission on BLE"),
                                  TRANSPORT)
            return self.result(False, d.reason), d
        action = res.action
        ready = self.actuator.ready if action in ("unlock", "pulse") else None
        # The PoP option's shape (PROFILE sec. 3): the authorizer parses it.
        proof = cbor.encode([nonce, sig])
        d = self.authz.decide(perm, TRANSPORT, peer, tok, proof, None, ready)
        if not d.granted:
            return self.result(False, d.reason), d
        if len(tok) != _HASH_LEN:
            self.authz.keep(d.token, peer)
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
        return self.result(True, reasons.OK, text), d
