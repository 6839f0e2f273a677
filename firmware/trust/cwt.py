"""Trust core: CWT claims (RFC 8392), confirmation (RFC 8747) and `exi`
(RFC 9200 5.10.3), as PROFILE.md sec. 2 and 3 fix them.
"""
from micropython import const

from trust import cbor, cose, p256
from trust.reasons import (
    AUD_MISMATCH, CLAIMS_MALFORMED, CLOCK_UNSYNCED, CNF_INVALID, EXI_EXPIRED,
    EXPIRED, ISS_MISMATCH, NO_EXPIRY, NOT_YET_VALID,
    PSK_KEY_INVALID, STATE_DAMAGED, Refused,
)

C_ISS = const(1)
C_SUB = const(2)
C_AUD = const(3)
C_EXP = const(4)
C_NBF = const(5)
C_IAT = const(6)
C_CTI = const(7)
C_CNF = const(8)
C_SCOPE = const(9)
C_EXI = const(40)
CNF_COSE_KEY = const(1)
CNF_ENCRYPTED_KEY = const(2)
# COSE_Key labels (RFC 9052 7.1, RFC 9053 7.1/7.2).
K_KTY = const(1)
K_KID = const(2)
K_ALG = const(3)
K_CRV = const(-1)
K_X = const(-2)
K_Y = const(-3)
K_K = const(-1)
KTY_EC2 = const(2)
KTY_SYMMETRIC = const(4)
CRV_P256 = const(1)

_MAX_SCOPE = const(16)
_MAX_AUD = const(8)
_MAX_CTI = const(64)
_MAX_SEQ = const(8)  # an exi token's cti: its sequence number (PROFILE sec. 2)


class Claims:
    __slots__ = ("iss", "sub", "aud", "exp", "nbf", "iat", "cti", "scope", "exi",
                 "pop_key", "psk_kid", "psk", "cnf_kind")

    def allows(self, permission):
        return permission in self.scope


def _int(v, what):
    if not isinstance(v, int) or isinstance(v, bool):
        raise Refused(CLAIMS_MALFORMED, "%s must be an integer" % what)
    return v


def _text(v, what):
    if not isinstance(v, str):
        raise Refused(CLAIMS_MALFORMED, "%s must be text" % what)
    return v


def parse_ec2_key(k):
    """A COSE_Key (map) that must be an EC2 P-256 public key with a valid
    point; returns the 65-byte SEC1 uncompressed encoding."""
    if not isinstance(k, dict):
        raise Refused(CNF_INVALID, "COSE_Key is not a map")
    if k.get(K_KTY) != KTY_EC2 or k.get(K_CRV) != CRV_P256:
        raise Refused(CNF_INVALID, "not an EC2 P-256 key")
    alg = k.get(K_ALG)
    if alg is not None and alg != cose.ALG_ES256:
        raise Refused(CNF_INVALID, "key alg is not ES256")
    x = k.get(K_X)
    y = k.get(K_Y)
    if not isinstance(x, bytes) or not isinstance(y, bytes) or len(x) != 32 or len(y) != 32:
        raise Refused(CNF_INVALID, "x and y must be 32-byte strings")
    pub = b"\x04" + x + y
    if not p256.point_valid(pub):
        raise Refused(CNF_INVALID, "point is not on P-256")
    return pub


def parse_symmetric_key(raw):
    """Decrypted COSE_Key of kty Symmetric for DTLS PSK mode (RFC 9202 3.3)."""
    try:
        k = cbor.decode(raw, 4, 256)
    except cbor.CBORError as e:
        raise Refused(PSK_KEY_INVALID, str(e))
    if not isinstance(k, dict) or k.get(K_KTY) != KTY_SYMMETRIC:
        raise Refused(PSK_KEY_INVALID, "not a symmetric COSE_Key")
    kid = k.get(K_KID)
    secret = k.get(K_K)
    if not isinstance(kid, bytes) or not 1 <= len(kid) <= 64:
        raise Refused(PSK_KEY_INVALID, "kid")
    if not isinstance(secret, bytes) or not 16 <= len(secret) <= 64:
        raise Refused(PSK_KEY_INVALID, "k")
    return kid, secret


def parse(payload, psk_unwrap_key=None):
    """Decode the claims map and type-check every claim the profile uses.
    Claims that are not understood are ignored (RFC 8392 3)."""
    try:
        m = cbor.decode(payload, 8, cose.MAX_TOKEN)
    except cbor.CBORError as e:
        raise Refused(CLAIMS_MALFORMED, str(e))
    if not isinstance(m, dict):
        raise Refused(CLAIMS_MALFORMED, "claims are not a map")
    c = Claims()
    c.iss = _text(m[C_ISS], "iss") if C_ISS in m else None
    c.sub = _text(m[C_SUB], "sub") if C_SUB in m else None
    aud = m.get(C_AUD)
    if aud is None:
        c.aud = ()
    elif isinstance(aud, str):
        c.aud = (aud,)
    elif isinstance(aud, list) and 0 < len(aud) <= _MAX_AUD:
        for a in aud:
            _text(a, "aud element")
        c.aud = tuple(aud)
    else:
        raise Refused(CLAIMS_MALFORMED, "aud must be text or an array of text")
    c.exp = _int(m[C_EXP], "exp") if C_EXP in m else None
    c.nbf = _int(m[C_NBF], "nbf") if C_NBF in m else None
    c.iat = _int(m[C_IAT], "iat") if C_IAT in m else None
    cti = m.get(C_CTI)
    if cti is not None and (not isinstance(cti, bytes) or len(cti) > _MAX_CTI):
        raise Refused(CLAIMS_MALFORMED, "cti must be a byte string")
    c.cti = cti
    scope = m.get(C_SCOPE)
    if scope is None:
        c.scope = ()
    else:
        _text(scope, "scope")
        names = tuple(s for s in scope.split(" ") if s)
        if len(names) > _MAX_SCOPE:
            raise Refused(CLAIMS_MALFORMED, "too many scope entries")
        c.scope = names
    exi = m.get(C_EXI)
    if exi is not None and (_int(exi, "exi") < 0):
        raise Refused(CLAIMS_MALFORMED, "exi must be unsigned")
    c.exi = exi
    c.pop_key = c.psk_kid = c.psk = None
    c.cnf_kind = None
    cnf = m.get(C_CNF)
    if cnf is not None:
        _parse_cnf(c, cnf, psk_unwrap_key)
    return c


def _parse_cnf(c, cnf, psk_unwrap_key):
    # RFC 8747 3.1: exactly one confirmation method.
    if not isinstance(cnf, dict) or len(cnf) != 1:
        raise Refused(CNF_INVALID, "cnf must hold one method")
    if CNF_COSE_KEY in cnf:
        c.pop_key = parse_ec2_key(cnf[CNF_COSE_KEY])
        c.cnf_kind = "ec2"
    elif CNF_ENCRYPTED_KEY in cnf:
        if psk_unwrap_key is None:
            raise Refused(PSK_KEY_INVALID, "no AS-to-lock key provisioned")
        raw = cose.decrypt_encrypt0(cnf[CNF_ENCRYPTED_KEY], psk_unwrap_key)
        c.psk_kid, c.psk = parse_symmetric_key(raw)
        c.cnf_kind = "psk"
    else:
        raise Refused(CNF_INVALID, "unsupported confirmation method")


def check(c, issuer, device_id, now_s, skew_s):
    """Issuer, audience and wall-clock checks (RFC 8392 3.1.1-3.1.6).
    now_s is Unix seconds, or None when the clock is not synchronized."""
    if issuer is not None and c.iss != issuer:
        raise Refused(ISS_MISMATCH)
    # Exact element match: "lock-1" never matches "lock-10".
    if device_id not in c.aud:
        raise Refused(AUD_MISMATCH)
    if c.exp is None and c.exi is None:
        raise Refused(NO_EXPIRY)
    if c.exi is not None and c.cti is None:
        raise Refused(NO_EXPIRY, "exi without cti (RFC 9200 5.10.3)")
    if c.exi is not None and (not 1 <= len(c.cti) <= _MAX_SEQ or len(c.cti) > 1 and c.cti[0] == 0):
        # One number, one encoding: revocation by cti compares bytes.
        raise Refused(CLAIMS_MALFORMED, "an exi token's cti is its sequence number: 1-8 bytes, no leading zero")
    if now_s is None:
        # Without a clock only exi bounds the lifetime; exp/nbf cannot be
        # checked, so a token that relies on them is refused (fail closed).
        if c.exi is None or c.nbf is not None:
            raise Refused(CLOCK_UNSYNCED)
        return
    if c.exp is not None and now_s >= c.exp + skew_s:
        raise Refused(EXPIRED)
    if c.nbf is not None and now_s + skew_s < c.nbf:
        raise Refused(NOT_YET_VALID)


class ExiTable:
    """RFC 9200 5.10.3 for tokens with `exi` (PROFILE sec. 2): the AS gives
    each exi token for this lock a sequence number as its cti (1-8 bytes,
    big-endian unsigned, increasing). Per issuer the lock keeps the first
    receipt of the `window` highest numbers it has seen and a floor: a
    number at or below the floor is refused. A number that leaves the window
    raises the floor to it, so no entry is ever forgotten while its token
    could still be presented, and the table never fills.

    Receipt times are (boot, uptime_s, wall_s or None): within one boot the
    monotonic clock measures age; across a reboot only the wall clock can,
    and without it the token counts as expired (fail closed). `blocked`:
    the state was lost, so every exi token is refused until the AS gives a
    floor for each issuer (set_floor)."""

    def __init__(self, window=12):
        self.window = window
        self.issuers = {}  # issuer -> [floor, {seq: (exi, boot, uptime_s, wall_s)}]
        self.blocked = False
        self.dirty = False

    def check(self, issuer, cti, exi, boot, uptime_s, wall_s):
        """Refused(STATE_DAMAGED) while blocked; Refused(EXI_EXPIRED) for a
        number at or below the floor or a token older than its exi; records
        a first receipt (sets `dirty`: the caller persists before it grants)."""
        if self.blocked:
            raise Refused(STATE_DAMAGED, "exi state lost; waiting for the AS")
        seq = int.from_bytes(cti, "big")
        w = self.issuers.get(issuer)
        if w is None:
            w = self.issuers[issuer] = [-1, {}]
        if seq <= w[0]:
            raise Refused(EXI_EXPIRED, "sequence number at or below the floor")
        seen = w[1]
        e = seen.get(seq)
        if e is None:
            seen[seq] = (exi, boot, uptime_s, wall_s)
            while len(seen) > self.window:
                low = min(seen)
                del seen[low]
                w[0] = low
            self.dirty = True
            if seq <= w[0]:
                raise Refused(EXI_EXPIRED, "sequence number below the window")
            return
        age = self._age(e, boot, uptime_s, wall_s)
        if age is None:
            raise Refused(EXI_EXPIRED, "first seen before reboot, no clock")
        if age >= e[0]:
            raise Refused(EXI_EXPIRED)

    @staticmethod
    def _age(e, boot, uptime_s, wall_s):
        if e[1] == boot:
            return uptime_s - e[2]
        if e[3] is not None and wall_s is not None:
            return wall_s - e[3]
        return None

    def set_floor(self, floors):
        """floors: {issuer: sequence number} from the AS, one per trusted
        issuer: every number at or below it is refused from now on (the AS
        gives the highest number it issued to this lock). Clears `blocked`."""
        for issuer in floors:
            w = self.issuers.get(issuer)
            if w is None:
                w = self.issuers[issuer] = [-1, {}]
            f = floors[issuer]
            if f > w[0]:
                w[0] = f
                for seq in [q for q in w[1] if q <= f]:
                    del w[1][seq]
        self.blocked = False
        self.dirty = True

    def to_state(self):
        """{issuer: [floor, [[seq, exi, boot, uptime_s, wall_s], ...]]}"""
        return {iss: [w[0], [[q, e[0], e[1], e[2], e[3]] for q, e in w[1].items()]]
                for iss, w in self.issuers.items()}

    def load(self, windows, blocked=False):
        self.issuers = {}
        for iss in windows:
            floor, entries = windows[iss]
            self.issuers[iss] = [floor, {it[0]: (it[1], it[2], it[3], it[4]) for it in entries}]
        self.blocked = blocked
        self.dirty = False
