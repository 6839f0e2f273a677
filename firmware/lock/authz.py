"""Authorization layer: decides every request, whatever the transport.

Transports (CoAP, CoAPS, BLE) hand in what they received (a token or its
hash, a PoP proof, the DTLS session identity) and get a Decision back; the
decision is appended to the durable log before the caller moves the door
(PROFILE.md sec. 6). Nothing here imports a socket, radio or pin.
"""
import gc

from trust import cose, pop, reasons
from trust.reasons import Refused
from trust.verifier import token_id

_HASH_LEN = 32
_SUMMARY_MS = 60000
_PENDING_RETRY_S = 1  # Max-Age of an introspection_pending answer

# What the AS said about a token (lock/uplink.py's Uplink.ask; PROFILE
# sec. 7, RFC 9200 sec. 5.9).
INTRO_PENDING = 0   # asked (or queued): no answer yet
INTRO_ACTIVE = 1
INTRO_INACTIVE = 2
INTRO_OFFLINE = 3   # the AS cannot be asked now (or there is no uplink)
# Refusals the client did not cause: nothing was presented, the lock ran out
# of heap or could not write its state, or a nonce the lock no longer knows
# (a reboot) or that ran out of time (PROFILE sec. 3 v2). The lockout does
# not count them, except for the signature checks they cost: the lockout is
# also the per-peer budget of signature checks (PROFILE sec. 4 v2), so every
# failed or proofless token check counts, a request that made k checks k times.
_NOT_COUNTED = (reasons.TOKEN_MISSING, reasons.NO_MEMORY, reasons.NONCE_UNKNOWN,
                reasons.NONCE_EXPIRED, reasons.STATE_DAMAGED, reasons.STATE_FAILURE,
                reasons.STORE_FULL, reasons.DTLS_FAILED, reasons.INTROSPECTION_PENDING,
                reasons.AS_UNREACHABLE)
# Every local check passed and the AS could not answer yet (or cannot be
# asked): the signature checks made were good ones, so nothing is counted;
# many pending rounds never lock a phone out.
_CHECKED = (reasons.INTROSPECTION_PENDING, reasons.AS_UNREACHABLE)
_NONCE_GONE = (reasons.NONCE_UNKNOWN, reasons.NONCE_EXPIRED)
_LOCK_FAULT = (reasons.NO_MEMORY, reasons.STATE_FAILURE)
# A handshake that failed before naming an identity may come from a spoofed
# address (before the cookie exchange): summarized, and not counted.
_SUMMARIZED = (reasons.TOKEN_MISSING, reasons.LOCKED_OUT, reasons.DTLS_FAILED)
# Grants logged that open nothing: they do not use the log's grant reserve.
_NO_RESERVE = ("authz-info", "dtls")


def scope_has(scope, permission):
    """Is `permission` one of the space-separated names of `scope` (text)?"""
    n = len(permission)
    end = len(scope)
    i = scope.find(permission)
    while i >= 0:
        j = i + n
        if (i == 0 or scope[i - 1] == " ") and (j == end or scope[j] == " "):
            return True
        i = scope.find(permission, j)
    return False


class Decision:
    __slots__ = ("granted", "reason", "token", "permission", "detail", "seq", "retry_s")

    def __init__(self, granted, reason, token, permission, detail="", retry_s=0):
        self.granted = granted
        self.reason = reason
        self.token = token
        self.permission = permission
        self.detail = detail
        self.seq = None
        self.retry_s = retry_s


class Authorizer:
    # The uplink (lock/uplink.py) sets its own as `introspection` when there
    # is one: online checks ask it. A class default costs no instance heap.
    introspection = None

    def __init__(self, device_id, verifier, store, nonces, clock, log, lockout,
                 boot=0, on_change=None):
        self.device_id = device_id
        self.verifier = verifier
        self.store = store
        self.nonces = nonces
        self.clock = clock
        self.log = log
        self.lockout = lockout
        self.boot = boot
        self.on_change = on_change  # persist state after a change; raises OSError
        self.checks = 0  # signature checks made (the lockout's budget counts them)
        # PROFILE sec. 6: requests that present nothing, and requests of a
        # locked-out peer (nothing of them is checked), are summarized, so a
        # flood cannot fill the log: one record per reason per _SUMMARY_MS at
        # most, carrying in `sub` how many went unwritten since the last one.
        self._quiet = {}  # reason -> [unwritten count, uptime ms of the last record]

    def _save(self):
        """Persist the state; False when it could not be written."""
        if self.on_change is None:
            return True
        try:
            self.on_change()
            return True
        except OSError:
            return False

    # Token upload (RFC 9200 5.10.1) -----------------------------------
    def upload(self, raw, transport, peer=None):
        """Verify and store a token posted to /authz-info. Returns the token.
        A token already stored (in any envelope) is checked again without
        its signature. Raises Refused (TOKEN_SUPERSEDED, STORE_FULL: see
        TokenStore.add)."""
        raw = bytes(raw)
        sign1 = cose.parse_sign1(raw)
        tok = self.store.get(token_id(sign1))
        if tok is not None:
            self._revalidate(tok)
            return tok
        tok = self._verify(raw, transport, sign1)
        self.store.add(tok, self._expired, peer, self.clock.uptime_ms())
        self._save()  # a stored token is a convenience: not saved, it still serves until reboot
        return tok

    def _verify(self, raw, transport, sign1=None):
        self.checks += 1
        tok = self.verifier.verify(raw, self.clock.wall(), self.boot, self.clock.uptime_s(), sign1=sign1)
        # PROFILE sec. 3: bearer tokens only when allowed, and only over DTLS.
        if tok.is_bearer and transport != "coaps":
            raise Refused(reasons.BEARER_NOT_ALLOWED, "bearer tokens need DTLS")
        return tok

    def _revalidate(self, tok):
        self.verifier.recheck(tok, self.clock.wall(), self.boot, self.clock.uptime_s())

    def _expired(self, tok):
        try:
            self._revalidate(tok)
            return False
        except Refused:
            return True

    # Requests -----------------------------------------------------------
    def authorize(self, permission, transport, bearer=None, proof=None, session=None, peer=None):
        """Returns the Token that authorizes `permission`, or raises Refused.
        bearer: the Bearer option (a token, or the 32-byte token id of a
        stored one); proof: the PoP option; session: the DTLS PSK identity;
        peer: who sent it (the nonce in a proof must have been issued to it)."""
        spent = None
        if proof is not None and (session is not None or bearer is not None and len(bearer) > 0):
            # A nonce that was presented is spent, whatever is refused first
            # (the token, its scope): checking in that order must not leave
            # a usable nonce behind. Why the proof is no good is kept for
            # after the token checks, so the order of reasons stays the same.
            try:
                spent = self._spend(proof, peer)
            except Refused as e:
                spent = e
        tok = None
        if bearer is not None and len(bearer) > 0:
            if len(bearer) == _HASH_LEN:
                tok = self.store.get(bytes(bearer))
                if tok is None:
                    raise Refused(reasons.TOKEN_UNKNOWN)
            else:
                bearer = bytes(bearer)
                sign1 = cose.parse_sign1(bearer)
                tok = self.store.get(token_id(sign1))
                if tok is None:
                    if isinstance(spent, Refused) and spent.reason in _NONCE_GONE:
                        raise spent  # before a signature check it would make useless
                    tok = self._verify(bearer, transport, sign1)
                sign1 = None  # the parse is not needed for the proof: let the heap have it back
        elif session is not None:
            tok = self.store.by_psk_kid(session)
            if tok is None:
                raise Refused(reasons.TOKEN_UNKNOWN, "no token bound to this session")
        elif proof is not None:
            return self._by_proof(permission, proof, peer)
        else:
            raise Refused(reasons.TOKEN_MISSING)
        self._revalidate(tok)
        if not tok.allows(permission):
            raise Refused(reasons.SCOPE_INSUFFICIENT, permission)
        c = tok.claims
        if c.cnf_kind == "ec2":
            if proof is None:
                raise Refused(reasons.POP_MISSING)
            if isinstance(spent, Refused):
                raise spent
            self.checks += 1
            pop.check_signature(c.pop_key, self.device_id, spent[0], spent[1], permission, tok.hash)
            self.nonces.confirm(spent[0])
        elif c.cnf_kind == "psk":
            # RFC 9202 3.3: the DTLS session must be the one keyed by this token.
            if session is None or session != c.psk_kid:
                raise Refused(reasons.WRONG_SESSION)
        elif transport != "coaps" or session is not None:
            # Issue 12: a bearer token only on a certificate-mode session (a
            # PSK session is authorized by the token it is bound to).
            raise Refused(reasons.BEARER_NOT_ALLOWED, "bearer tokens need a certificate-mode DTLS session")
        return tok

    def _spend(self, proof, peer):
        """(nonce, signature) of a PoP option whose nonce was issued to
        `peer` and is now spent; raises Refused saying why it cannot be used."""
        nonce, sig = pop.parse_proof(proof)
        self.nonces.consume(nonce, peer)
        return nonce, sig

    def _by_proof(self, permission, proof, peer):
        # PROFILE sec. 4: a stored token named by its PoP proof. The nonce is
        # spent once; the signature is then tried with each candidate key.
        nonce, sig = self._spend(proof, peer)
        cands = self.store.candidates(permission)
        if not cands:
            raise Refused(reasons.TOKEN_UNKNOWN if not len(self.store) else reasons.SCOPE_INSUFFICIENT)
        last = None
        for tok in cands:
            try:
                self._revalidate(tok)
                self.checks += 1
                pop.check_signature(tok.claims.pop_key, self.device_id, nonce, sig, permission, tok.hash)
                self.nonces.confirm(nonce)
                return tok
            except Refused as e:
                last = e
        raise last

    def decide(self, permission, transport, peer, bearer=None, proof=None, session=None, ready=None,
               online=None):
        """The whole decision for `permission`, logged before it is returned.
        `ready()` gives None when the actuator can move, else why not.
        `online`: the permission's offline policy ("deny" or "allow") when
        it is configured with an online check (see online_check)."""
        return self._decided(permission, transport, peer,
                             lambda: self.authorize(permission, transport, bearer, proof, session, peer), ready,
                             proof, online)

    def online_check(self, tok, permission, policy):
        """PROFILE sec. 7, RFC 9200 sec. 5.9: after every local check, what
        the AS says about `tok` now, never waiting for it. Returns the
        reason of a grant (OK, or OFFLINE_ALLOWED: the AS could not be
        asked and `policy` is "allow"), or raises Refused:
        INTROSPECTION_INACTIVE, SCOPE_INSUFFICIENT (active, but the AS's
        scope now lacks `permission`), INTROSPECTION_PENDING (asked: retry
        after Max-Age) or AS_UNREACHABLE (policy "deny")."""
        u = self.introspection
        state, scope = u.ask(tok.hash) if u is not None else (INTRO_OFFLINE, None)
        if state == INTRO_ACTIVE:
            if scope is not None and not scope_has(scope, permission):
                raise Refused(reasons.SCOPE_INSUFFICIENT, "the AS's scope now lacks %s" % permission)
            return reasons.OK
        if state == INTRO_INACTIVE:
            raise Refused(reasons.INTROSPECTION_INACTIVE)
        if state == INTRO_PENDING:
            raise Refused(reasons.INTROSPECTION_PENDING)
        if policy == "allow":
            return reasons.OFFLINE_ALLOWED
        raise Refused(reasons.AS_UNREACHABLE)

    def post_token(self, raw, transport, peer):
        """/authz-info as a logged decision, under the same lockout: each
        upload costs a signature check, so a flood of bad tokens is slowed."""
        def check():
            if not raw:
                raise Refused(reasons.TOKEN_MISSING)
            return self.upload(raw, transport, peer)
        return self._decided("authz-info", transport, peer, check)

    def _outstanding(self, proof, peer):
        try:
            return proof is not None and self.nonces.outstanding(pop.parse_proof(proof)[0], peer)
        except Refused:
            return False

    def _decided(self, permission, transport, peer, check, ready=None, proof=None, online=None):
        now_ms = self.clock.uptime_ms()
        checks = self.checks
        tok = None
        left = self.lockout.remaining_s(peer, now_ms) if peer is not None else 0
        if left and self.lockout.shared(peer) and self._outstanding(proof, peer):
            # Held only by the budget strangers share (PROFILE sec. 3 v2: what
            # they send never makes another peer's outstanding nonce fail):
            # a proof over a nonce this address got and has not used goes on.
            left = 0
        if left:
            d = Decision(False, reasons.LOCKED_OUT, None, permission, retry_s=left)
        else:
            try:
                tok = check()
                # RFC 9200 5.10.3: an exi token's first receipt is durable
                # before the token is used, or a power cut would give it a
                # new lifetime.
                if self.verifier.exi.dirty and not self._save():
                    raise Refused(reasons.STATE_FAILURE, "exi first receipt not saved")
                granted = reasons.OK
                if online is not None:
                    granted = self.online_check(tok, permission, online)
                why = ready() if ready else None
                if why:
                    raise Refused(reasons.ACTUATOR_FAULT, why)
                d = Decision(True, granted, tok, permission)
            except Refused as e:
                d = Decision(False, e.reason, tok, permission, e.detail,
                             _PENDING_RETRY_S if e.reason == reasons.INTROSPECTION_PENDING else 0)
            except MemoryError:
                # Fail closed and say why; the client did nothing wrong, so
                # the lockout does not count it. Collect before the log append.
                tok = None
                gc.collect()
                d = Decision(False, reasons.NO_MEMORY, None, permission)
            cost = self.checks - checks
            if d.granted:
                if (permission != "authz-info" and tok.claims.cnf_kind is not None
                        and self.store.used(tok, now_ms)):
                    self._save()
                # Only a proof of possession clears the peer's failures: an
                # upload proves nothing (anyone can post a sniffed token).
                if peer is not None and permission != "authz-info":
                    self.lockout.success(peer)
            elif peer is not None:
                if d.reason not in _NOT_COUNTED:
                    cost = max(1, cost)
                elif d.reason in _LOCK_FAULT or d.reason in _CHECKED:
                    cost = 0  # the lock's own failure, or checks that all passed
                if cost:
                    self.lockout.failure(peer, now_ms, cost)
        if self.verifier.exi.dirty:
            self._save()  # a floor raised by a refused token
        return self._logged(d, transport, now_ms)

    def _logged(self, d, transport, now_ms):
        if d.reason in _SUMMARIZED:
            q = self._quiet.get(d.reason)
            if q is not None and now_ms - q[1] < _SUMMARY_MS:
                q[0] += 1
                return d  # counted; seq stays None
            self._quiet[d.reason] = [0, now_ms]
            self.record(d, transport, q[0] if q else 0)
            return d
        self.record(d, transport)
        return d

    def handshake_failed(self, reason, transport, peer, session=None):
        """A DTLS handshake that failed (RFC 9202; PROFILE sec. 6): logged
        with permission "dtls" and the token its PSK identity names, if
        any. UNKNOWN identity (TOKEN_UNKNOWN) and PSK_MISMATCH come after
        the cookie exchange, from a verified address, and count against
        `peer` in the lockout; DTLS_FAILED is summarized and not counted."""
        now_ms = self.clock.uptime_ms()
        tok = self.store.by_psk_kid(session) if session is not None else None
        d = Decision(False, reason, tok, "dtls")
        if peer is not None and reason not in _NOT_COUNTED:
            self.lockout.failure(peer, now_ms, 1)
        return self._logged(d, transport, now_ms)

    def record(self, d, transport, sub=None):
        """Append the decision; a decision that cannot be logged is a deny.
        `sub`: for a summary record (token_missing, locked_out), how many
        such requests went unwritten since the previous one."""
        t = d.token
        if t is not None:
            sub = t.claims.sub
        th = t.hash if t is not None else None
        try:
            # The grant reserve (PROFILE sec. 6) is for grants of a permission:
            # a token upload is logged as a grant too, and anyone may upload
            # a public token over and over (attack pass: a flood of uploads
            # filled the reserve and a real unlock went unrecorded).
            d.seq = self.log.append(self.clock.wall(), self.clock.uptime_ms(), transport,
                                    d.permission, sub, th, d.granted, d.reason,
                                    d.granted and d.permission not in _NO_RESERVE)
        except OSError as e:
            d.granted = False
            d.reason = reasons.LOG_FAILURE
            d.detail = str(e)
        return d

    def keep(self, tok, peer):
        """Store `tok`, presented in full in a request it authorized with
        proof of possession, as a used token (PROFILE sec. 5: the BLE phone
        names it by id next time). False when the store has no room for it
        or holds a newer token of its key (the phone then sends it in full)."""
        now_ms = self.clock.uptime_ms()
        try:
            self.store.add(tok, self._expired, peer, now_ms)
        except Refused:
            return False
        if self.store.used(tok, now_ms):
            self._save()
        return True

    def nonce(self, peer=None):
        """A PoP nonce for `peer` (PROFILE sec. 3)."""
        return self.nonces.issue(peer)

    # Administration -----------------------------------------------------
    def revoke(self, hashes=(), ctis=(), exi_floors=None):
        """Revoke token ids and ctis, and take the AS's exi floors
        ({issuer: highest sequence number issued}); one for every trusted
        issuer lifts an exi block left by damaged state. Acknowledge only
        after this returns (PROFILE sec. 2): raises Refused(BAD_REQUEST: a
        floor for an issuer not trusted) or Refused(REVOCATIONS_FULL), with
        nothing changed, or Refused(STATE_FAILURE) (in force, not durable)."""
        v = self.verifier
        for issuer in exi_floors or ():
            if not any(k.issuer == issuer for k in v.keys):
                raise Refused(reasons.BAD_REQUEST, "exi floor for an issuer the lock does not trust")
        v.add_revocations(hashes, ctis)
        if exi_floors:
            blocked = v.exi.blocked
            v.exi.set_floor(exi_floors)
            v.exi.blocked = blocked and not all(k.issuer in exi_floors for k in v.keys)
        self.store.remove_if(lambda t: v.is_revoked(t.hash, t.claims.cti))
        if not self._save():
            raise Refused(reasons.STATE_FAILURE, "revocation in force but not saved")
