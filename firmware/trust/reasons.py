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
_C400 = const(0x80)
_C401 = const(0x81)
_C403 = const(0x83)
_C429 = const(0x9D)
_C500 = const(0xA0)
_C503 = const(0xA3)

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

# reason -> (name, Error option value or None, CoAP code)
TABLE = {
    OK: ("ok", None, 0x44),
    TOKEN_MALFORMED: ("token_malformed", ERR_INVALID_TOKEN, _C401),
    TOKEN_TOO_LARGE: ("token_too_large", ERR_INVALID_TOKEN, _C401),
    WRONG_TAG: ("wrong_tag", ERR_INVALID_TOKEN, _C401),
    NOT_COSE_SIGN1: ("not_cose_sign1", ERR_INVALID_TOKEN, _C401),
    DUPLICATE_PARAMETER: ("duplicate_parameter", ERR_INVALID_TOKEN, _C401),
    ALG_MISSING: ("alg_missing", ERR_INVALID_TOKEN, _C401),
    ALG_UNPROTECTED: ("alg_unprotected", ERR_INVALID_TOKEN, _C401),
    ALG_UNSUPPORTED: ("alg_unsupported", ERR_INVALID_TOKEN, _C401),
    CRIT_UNPROTECTED: ("crit_unprotected", ERR_INVALID_TOKEN, _C401),
    CRIT_UNKNOWN: ("crit_unknown", ERR_INVALID_TOKEN, _C401),
    UNKNOWN_KEY: ("unknown_key", ERR_INVALID_TOKEN, _C401),
    SIG_FORMAT: ("sig_format", ERR_INVALID_TOKEN, _C401),
    SIG_INVALID: ("sig_invalid", ERR_INVALID_TOKEN, _C401),
    CLAIMS_MALFORMED: ("claims_malformed", ERR_INVALID_TOKEN, _C401),
    ISS_MISMATCH: ("iss_mismatch", ERR_INVALID_TOKEN, _C401),
    AUD_MISMATCH: ("aud_mismatch", ERR_INVALID_TOKEN, _C401),
    EXPIRED: ("expired", ERR_INVALID_TOKEN, _C401),
    NOT_YET_VALID: ("not_yet_valid", ERR_INVALID_TOKEN, _C401),
    NO_EXPIRY: ("no_expiry", ERR_INVALID_TOKEN, _C401),
    CLOCK_UNSYNCED: ("clock_unsynced", ERR_INVALID_TOKEN, _C401),
    REVOKED: ("revoked", ERR_INVALID_TOKEN, _C401),
    EXI_EXPIRED: ("exi_expired", ERR_INVALID_TOKEN, _C401),
    SCOPE_INSUFFICIENT: ("scope_insufficient", ERR_INSUFFICIENT_SCOPE, _C403),
    CNF_INVALID: ("cnf_invalid", ERR_INVALID_TOKEN, _C401),
    BEARER_NOT_ALLOWED: ("bearer_not_allowed", ERR_INVALID_TOKEN, _C401),
    POP_MISSING: ("pop_missing", ERR_INVALID_TOKEN, _C401),
    POP_MALFORMED: ("pop_malformed", ERR_INVALID_REQUEST, _C400),
    NONCE_UNKNOWN: ("nonce_unknown", ERR_INVALID_TOKEN, _C401),
    NONCE_EXPIRED: ("nonce_expired", ERR_INVALID_TOKEN, _C401),
    POP_SIG_INVALID: ("pop_sig_invalid", ERR_INVALID_TOKEN, _C401),
    # RFC 6750 3.1: no error code when the request carries no authorization.
    TOKEN_MISSING: ("token_missing", None, _C401),
    TOKEN_UNKNOWN: ("token_unknown", ERR_INVALID_TOKEN, _C401),
    PSK_KEY_INVALID: ("psk_key_invalid", ERR_INVALID_TOKEN, _C401),
    EXI_TABLE_FULL: ("exi_table_full", None, _C503),
    LOCKED_OUT: ("locked_out", None, _C429),
    LOG_FAILURE: ("log_failure", None, _C503),
    ACTUATOR_FAULT: ("actuator_fault", None, _C503),
    BAD_REQUEST: ("bad_request", ERR_INVALID_REQUEST, _C400),
    STORE_FULL: ("store_full", None, _C503),
    WRONG_SESSION: ("wrong_session", ERR_INVALID_TOKEN, _C401),
}


def name(reason):
    e = TABLE.get(reason)
    return e[0] if e else "unknown_%d" % reason


def error_value(reason):
    """The Error option value (0-2) for a reason, or None for no option."""
    e = TABLE.get(reason)
    return e[1] if e else ERR_INVALID_REQUEST


def coap_code(reason):
    e = TABLE.get(reason)
    return e[2] if e else _C500


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
