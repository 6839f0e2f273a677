"""Trust core: the one table of reasons for every refusal.

Each reason has a stable number (stored in the decision log and uploaded to
the AS, so numbers are never reused), a name, the seed's Error option value
(draft-tschofenig-ace-oauth-bt-00 sec. 3: 0 invalid_request, 1 invalid_token,
2 insufficient_scope; None: no Error option) and the CoAP response code.
"""
from micropython import const

ERR_INVALID_REQUEST = const(0)
ERR_INVALID_TOKEN = const(1)
ERR_INSUFFICIENT_SCOPE = const(2)

# CoAP codes as class << 5 | detail (RFC 7252 12.1.2).
_C500 = const(0xA0)

OK = const(0)
# Token structure (COSE_Sign1 / CBOR).
TOKEN_MALFORMED = const(1)
TOKEN_TOO_LARGE = const(2)
WRONG_TAG = const(3)
NOT_COSE_SIGN1 = const(4)
DUPLICATE_PARAMETER = const(5)
ALG_MISSING = const(6)
ALG_UNPROTECTED = const(7)
ALG_UNSUPPORTED = const(8)
CRIT_UNPROTECTED = const(9)
CRIT_UNKNOWN = const(10)
UNKNOWN_KEY = const(11)
SIG_FORMAT = const(12)
SIG_INVALID = const(13)
# Claims (CWT).
CLAIMS_MALFORMED = const(14)
ISS_MISMATCH = const(15)
AUD_MISMATCH = const(16)
EXPIRED = const(17)
NOT_YET_VALID = const(18)
NO_EXPIRY = const(19)
CLOCK_UNSYNCED = const(20)
REVOKED = const(21)
EXI_EXPIRED = const(22)
SCOPE_INSUFFICIENT = const(23)
CNF_INVALID = const(24)
BEARER_NOT_ALLOWED = const(25)
# Proof of possession.
POP_MISSING = const(26)
POP_MALFORMED = const(27)
NONCE_UNKNOWN = const(28)
NONCE_EXPIRED = const(29)
POP_SIG_INVALID = const(30)
# Request / lock level.
TOKEN_MISSING = const(31)
TOKEN_UNKNOWN = const(32)
PSK_KEY_INVALID = const(33)
EXI_TABLE_FULL = const(34)
LOCKED_OUT = const(35)
LOG_FAILURE = const(36)
ACTUATOR_FAULT = const(37)
BAD_REQUEST = const(38)
STORE_FULL = const(39)
WRONG_SESSION = const(40)
NO_MEMORY = const(41)  # out of heap: nothing could be checked, so a deny (5.03)
STATE_DAMAGED = const(42)  # the state file was damaged: exi tokens wait for the AS (5.03)
STATE_FAILURE = const(43)  # state that must be durable first could not be written (5.03)
TOKEN_SUPERSEDED = const(44)  # the lock holds a newer token for the same key (4.01)
REVOCATIONS_FULL = const(45)  # the revocation list is full (5.03)
# DTLS handshakes (RFC 9202; logged with permission "dtls", no CoAP answer).
DTLS_FAILED = const(46)  # no common suite, a bad message or an alert before any identity
PSK_MISMATCH = const(47)  # a known PSK identity whose key the client did not have
# Online checks (PROFILE sec. 7; RFC 9200 sec. 5.9): permissions configured
# with "online_check" ask the AS (lock/uplink.py) after every local check.
INTROSPECTION_INACTIVE = const(48)  # the AS said the token is not active (4.01, counted)
INTROSPECTION_PENDING = const(49)  # the AS is being asked: retry after Max-Age (5.03, not counted)
AS_UNREACHABLE = const(50)  # the AS cannot be asked and the policy is "deny" (5.03, not counted)
OFFLINE_ALLOWED = const(51)  # a grant without the AS: the policy is "allow" (logged as such)

# Indexed by reason: the name, the Error option value (255: no option) and
# the CoAP code. Kept as one string and two byte strings rather than a dict
# of tuples: on the board this table then costs a few objects, not ~80.
_NAMES = (
    "ok token_malformed token_too_large wrong_tag not_cose_sign1 "
    "duplicate_parameter alg_missing alg_unprotected alg_unsupported "
    "crit_unprotected crit_unknown unknown_key sig_format sig_invalid "
    "claims_malformed iss_mismatch aud_mismatch expired not_yet_valid "
    "no_expiry clock_unsynced revoked exi_expired scope_insufficient "
    "cnf_invalid bearer_not_allowed pop_missing pop_malformed "
    "nonce_unknown nonce_expired pop_sig_invalid token_missing "
    "token_unknown psk_key_invalid exi_table_full locked_out log_failure "
    "actuator_fault bad_request store_full wrong_session no_memory "
    "state_damaged state_failure token_superseded revocations_full "
    "dtls_failed psk_mismatch introspection_inactive introspection_pending "
    "as_unreachable offline_allowed "
)
_E = const(255)  # no Error option
_ERRORS = bytes((
    _E,                                         # 0 ok
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,      # 1-13 token structure, signature
    1, 1, 1, 1, 1, 1, 1, 1, 1,                  # 14-22 claims, time, revocation
    2,                                          # 23 scope_insufficient
    1, 1, 1,                                    # 24-26 cnf, bearer, pop_missing
    0,                                          # 27 pop_malformed
    1, 1, 1,                                    # 28-30 nonce, proof signature
    _E,                                         # 31 token_missing (RFC 6750 3.1)
    1, 1,                                       # 32-33 token_unknown, psk_key_invalid
    _E, _E, _E, _E,                             # 34-37 exi table, lockout, log, actuator
    0,                                          # 38 bad_request
    _E,                                         # 39 store_full
    1,                                          # 40 wrong_session
    _E,                                         # 41 no_memory
    _E, _E,                                     # 42-43 state damaged, state failure
    1,                                          # 44 token_superseded
    _E,                                         # 45 revocations_full
    _E, 1,                                      # 46-47 dtls_failed, psk_mismatch
    1,                                          # 48 introspection_inactive
    _E, _E, _E,                                 # 49-51 pending, as_unreachable, offline_allowed
))
_CODES = bytes((
    0x44,                                       # 0 ok: 2.04
    0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81,  # 1-13: 4.01
    0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81,                          # 14-22: 4.01
    0x83,                                       # 23: 4.03
    0x81, 0x81, 0x81,                           # 24-26: 4.01
    0x80,                                       # 27: 4.00
    0x81, 0x81, 0x81, 0x81, 0x81, 0x81,         # 28-33: 4.01
    0xA3,                                       # 34 exi_table_full: 5.03
    0x9D,                                       # 35 locked_out: 4.29 (RFC 8516)
    0xA3, 0xA3,                                 # 36-37 log, actuator: 5.03
    0x80,                                       # 38: 4.00
    0xA3,                                       # 39 store_full: 5.03
    0x81,                                       # 40: 4.01
    0xA3,                                       # 41 no_memory: 5.03
    0xA3, 0xA3,                                 # 42-43 state: 5.03
    0x81,                                       # 44 token_superseded: 4.01
    0xA3,                                       # 45 revocations_full: 5.03
    0x80, 0x81,                                 # 46-47 (a handshake has no CoAP answer)
    0x81,                                       # 48 introspection_inactive: 4.01
    0xA3, 0xA3,                                 # 49-50 pending (with Max-Age), as_unreachable: 5.03
    0x44,                                       # 51 offline_allowed: a grant
))
COUNT = const(52)

def name(reason):
    if 0 <= reason < COUNT:
        # The reason-th word, found in place: split() made a list of 52
        # strings on every call (about 1 KB of heap to answer one request).
        i = 0
        for _ in range(reason):
            i = _NAMES.index(" ", i) + 1
        return _NAMES[i:_NAMES.index(" ", i)]
    return "unknown_%d" % reason


def error_value(reason):
    """The Error option value (0-2) for a reason, or None for no option."""
    if 0 <= reason < COUNT:
        e = _ERRORS[reason]
        return None if e == _E else e
    return ERR_INVALID_REQUEST


def coap_code(reason):
    return _CODES[reason] if 0 <= reason < COUNT else _C500


class Refused(Exception):
    """A token, proof or request is refused for `reason` (a code above)."""

    def __init__(self, reason, detail=""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self):
        if self.detail:
            return "%s: %s" % (name(self.reason), self.detail)
        return name(self.reason)
