"""Trust core: the access-token verifier (PROFILE.md sec. 2).

verify() runs, in order: size and structure (COSE_Sign1), header rules,
revocation by token id, the ES256 signature with the AS key named by kid,
then the claims (iss, aud, time, exi, cnf). It returns a Token or raises
reasons.Refused. No transport, socket or clock is imported: the caller
passes the wall time (None when unsynced), the boot counter and uptime.
"""
import hashlib

from trust import cose, cwt
from trust.reasons import BEARER_NOT_ALLOWED, REVOCATIONS_FULL, REVOKED, STATE_FAILURE, UNKNOWN_KEY, Refused


def cti_entry(cti):
    """How a cti (1-64 bytes) is named on the flash revocation list
    (lock.revlist), beside token ids: SHA-256("cti" || cti), 32 bytes."""
    h = hashlib.sha256(b"cti")
    h.update(cti)
    return h.digest()


class TrustedKey:
    """An AS key the lock trusts: issuer text, kid bytes (or None), 65-byte
    SEC1 public key."""
    __slots__ = ("issuer", "kid", "pub")

    def __init__(self, issuer, kid, pub):
        self.issuer = issuer
        self.kid = kid
        self.pub = pub


class Token:
    """A verified token: `raw` bytes as received, `hash` its token id
    (token_id: the same for every envelope of the same signed content),
    `claims` (cwt.Claims), `issuer` of the AS key that signed it."""
    __slots__ = ("raw", "hash", "claims", "issuer")

    def __init__(self, raw, digest, claims, issuer):
        self.raw = raw
        self.hash = digest
        self.claims = claims
        self.issuer = issuer

    def allows(self, permission):
        return permission in self.claims.scope

    @property
    def is_bearer(self):
        return self.claims.cnf_kind is None


def token_id(sign1):
    """PROFILE sec. 2 (v2): the token id, SHA-256 over the deterministic
    encoding of the COSE Sig_structure ["Signature1", protected, h'',
    payload] (RFC 9052 sec. 4.4) of a parsed COSE_Sign1: exactly what the AS
    signed. Tags (18, 61(18), none), unprotected headers, length encodings
    and the signature (s or n-s) do not change it, so no envelope escapes a
    revocation or takes a second slot in the token store. 32 bytes."""
    return hashlib.sha256(cose.sig_structure(sign1.protected_raw, sign1.payload)).digest()


def token_id_of(raw):
    """token_id of raw token bytes; raises Refused when they are not a
    COSE_Sign1 the profile accepts (cose.parse_sign1)."""
    return token_id(cose.parse_sign1(bytes(raw)))


class Verifier:
    def __init__(self, device_id, keys, psk_unwrap_key=None, skew_s=60,
                 allow_bearer=False, exi_window=12, max_revocations=64):
        self.device_id = device_id
        self.keys = list(keys)
        self.psk_unwrap_key = psk_unwrap_key
        self.skew_s = skew_s
        self.allow_bearer = allow_bearer
        self.revoked_hashes = set()
        self.revoked_ctis = set()
        self.max_revocations = max_revocations
        # The long list on flash (lock.revlist.RevocationList: contains(),
        # add(), ListFull), or None: the RAM sets spill into it when full.
        self.trl = None
        self.exi = cwt.ExiTable(exi_window)

    def is_revoked(self, digest, cti):
        # Sets are looked up by hash; token hashes and ctis are not secret,
        # they are public identifiers, so no constant-time scan is needed.
        if digest in self.revoked_hashes:
            return True
        if cti is not None and cti in self.revoked_ctis:
            return True
        return self._listed(digest, cti)

    def _listed(self, digest, cti):
        # The flash list: a token id (digest) and a cti (None: not asked).
        trl = self.trl
        if trl is None or not len(trl):
            return False
        if digest is not None and trl.contains(digest):
            return True
        return cti is not None and trl.contains(cti_entry(cti))

    def add_revocations(self, ids=(), ctis=()):
        """Revoke token ids (32 bytes) and ctis, all or none: raises
        Refused(REVOCATIONS_FULL) when the list would hold more than
        `max_revocations` (PROFILE sec. 6: a full table refuses the new
        entry rather than forgetting one that still protects)."""
        ids = set(bytes(h) for h in ids) - self.revoked_hashes
        ctis = set(bytes(c) for c in ctis) - self.revoked_ctis
        if len(self.revoked_hashes) + len(self.revoked_ctis) + len(ids) + len(ctis) > self.max_revocations:
            if self.trl is None:
                raise Refused(REVOCATIONS_FULL, "%d entries at most" % self.max_revocations)
            self._spill(ids, ctis)
            return
        for h in ids:
            self.revoked_hashes.add(h)
        for c in ctis:
            self.revoked_ctis.add(c)

    def _spill(self, ids, ctis):
        # The RAM sets and the new entries go to the flash list together
        # (all or none; a full list raises Refused(REVOCATIONS_FULL)); the
        # sets are emptied only once it holds them.
        entries = list(self.revoked_hashes) + list(ids)
        entries += [cti_entry(c) for c in self.revoked_ctis] + [cti_entry(c) for c in ctis]
        try:
            self.trl.add(entries)
        except OSError as e:
            raise Refused(STATE_FAILURE, "revocation list not written: %s" % e)
        self.revoked_hashes = set()
        self.revoked_ctis = set()

    def verify(self, raw, now_s=None, boot=0, uptime_s=0, check_exi=True, sign1=None):
        """A Token, or Refused. `sign1`: raw already parsed (cose.parse_sign1),
        so a caller that needed its token id first does not parse it twice."""
        raw = bytes(raw)
        s = sign1 or cose.parse_sign1(raw)
        digest = token_id(s)
        if self.is_revoked(digest, None):
            raise Refused(REVOKED, "token id")
        key = cose.select_key(self.keys, s.kid)
        cose.verify_sign1(s, key.pub)
        c = cwt.parse(s.payload, self.psk_unwrap_key)
        if c.cti is not None and self.is_revoked(None, c.cti):
            raise Refused(REVOKED, "cti")
        cwt.check(c, key.issuer, self.device_id, now_s, self.skew_s)
        if c.cnf_kind is None and not self.allow_bearer:
            raise Refused(BEARER_NOT_ALLOWED)
        if c.exi is not None and check_exi:
            self.exi.check(key.issuer, c.cti, c.exi, boot, uptime_s, now_s)
        return Token(raw, digest, c, key.issuer)

    def recheck(self, tok, now_s, boot, uptime_s):
        """A token verified earlier, checked again at each use: revocation,
        its issuer still trusted (keys change on rebinding), time, exi."""
        c = tok.claims
        if self.is_revoked(tok.hash, c.cti):
            raise Refused(REVOKED)
        if not any(k.issuer == tok.issuer for k in self.keys):
            raise Refused(UNKNOWN_KEY, "issuer no longer trusted")
        cwt.check(c, tok.issuer, self.device_id, now_s, self.skew_s)
        if c.exi is not None:
            self.exi.check(tok.issuer, c.cti, c.exi, boot, uptime_s, now_s)

