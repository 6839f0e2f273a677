"""Refusals in words, for everything lockctl prints.

The lock keeps one table of reasons (firmware/trust/reasons.py: a stable
number per reason, stored in the decision log). Its names are read from
that file here, so the numbers in a log page are the firmware's own; this
module adds what a person needs: what the reason means and what to do.

On the wire CoAP carries only the code and the Error option (0
invalid_request, 1 invalid_token, 2 insufficient_scope); the exact reason is
in the lock's decision log (`lockctl logs`) and, over BLE, in the Result.
`diagnose` names the likely reason from what the phone itself can check:
the token against the bundle (issuer, audience, key, times, scope).
"""
import ast
import os
import time

import cbor2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE_TABLE = os.path.join(ROOT, "firmware", "trust", "reasons.py")

# The Error option's values (PROFILE sec. 4), for lockctl's CoAP and BLE phones too.
ERROR_NAMES = {0: "invalid_request", 1: "invalid_token", 2: "insufficient_scope"}

# name: (what it means, what to do)
WORDS = {
    "ok": ("granted", ""),
    "token_malformed": ("the token is not well-formed CBOR/COSE", "mint it again with `lockctl token`"),
    "token_too_large": ("the token is over 1024 bytes", "mint a smaller token (shorter scope, sub)"),
    "wrong_tag": ("the token has a CBOR tag other than 18 (COSE_Sign1) or 61 (CWT)",
                  "mint it again with `lockctl token`"),
    "not_cose_sign1": ("the token is not a COSE_Sign1", "mint it again with `lockctl token`"),
    "duplicate_parameter": ("a COSE header parameter appears twice", "mint it again with `lockctl token`"),
    "alg_missing": ("the token names no signature algorithm", "mint it again with `lockctl token`"),
    "alg_unprotected": ("the algorithm is in the unprotected header", "mint it again with `lockctl token`"),
    "alg_unsupported": ("the token is not signed with ES256", "mint it again with `lockctl token`"),
    "crit_unprotected": ("a crit header is unprotected", "mint it again with `lockctl token`"),
    "crit_unknown": ("the token has a critical header the lock does not know", "mint it again"),
    "unknown_key": ("the token's key id (kid) is not a trusted AS key of this lock",
                    "mint it with the AS key of this lock's bundle (`lockctl token --bundle ...`)"),
    "sig_format": ("the token's signature is not 64 bytes r||s in range", "mint it again"),
    "sig_invalid": ("the token's signature does not verify with the lock's AS key",
                    "mint it with this lock's bundle: another bundle's as-key.pem signed it"),
    "claims_malformed": ("the token's claims are not a well-formed CWT claims map", "mint it again"),
    "iss_mismatch": ("the token's issuer (iss) is not the one this lock trusts for its key",
                     "drop --iss, or use the bundle's issuer"),
    "aud_mismatch": ("the token's audience (aud) is not this lock's device id",
                     "mint it for this lock's bundle (or --aud DEVICE_ID)"),
    "expired": ("the token has expired (exp is past, beyond the lock's allowed skew)",
                "mint a new one (`lockctl token ... --exp-in 3600`); check the host's clock"),
    "not_yet_valid": ("the token is not valid yet (nbf is in the future)", "drop --nbf-in or wait"),
    "no_expiry": ("the token has neither exp nor exi (or exi without cti)", "mint it with --exp-in or --exi"),
    "clock_unsynced": ("the lock has no trusted clock, so it cannot check exp or nbf and refuses "
                       "tokens that rely on them",
                       "mint an exi token (`lockctl token --bundle BUNDLE ...` without --exp-in: the "
                       "default for a bundle whose clock is unsynced), or run the simulator with "
                       "`lockctl sim BUNDLE --clock system`"),
    "revoked": ("the token (or its cti) has been revoked", "ask the AS for a new token"),
    "exi_expired": ("the exi token's lifetime is over, its sequence number is below the lock's window, "
                    "or it was first seen before the lock restarted without a clock",
                    "mint a new one (`lockctl token --bundle BUNDLE ...`)"),
    "scope_insufficient": ("the token does not grant this permission",
                           "mint it with the permission in --scope (e.g. --scope 'unlock status')"),
    "cnf_invalid": ("the token's confirmation key (cnf) is unusable", "mint it again"),
    "bearer_not_allowed": ("a bearer token (no cnf key): refused unless the bundle allows bearer tokens, "
                           "and then only on a certificate-mode CoAPS session",
                           "mint a PoP token (`lockctl token --key phone.pem`)"),
    "pop_missing": ("the token is bound to a key and the request carried no proof of possession",
                    "use `lockctl coap ... --key KEY.pem` with the key the token was minted for"),
    "pop_malformed": ("the proof of possession is not CBOR [nonce, signature]", ""),
    "nonce_unknown": ("the proof's nonce was not issued by this lock to this address (or the lock "
                      "restarted)", "retry: lockctl asks for a fresh nonce"),
    "nonce_expired": ("the proof's nonce is older than 30 s or already spent", "retry"),
    "pop_sig_invalid": ("the proof's signature does not match the key the token is bound to",
                        "use the --key the token was minted with (`lockctl token --key ...`)"),
    "token_missing": ("the request presented no token (as a phone's first request for a nonce does; "
                      "summarized: one record a minute, sub counts those not written)", "give --token"),
    "token_unknown": ("the lock does not hold the token this request names (token id, PSK "
                      "identity or proof)", "send the full token (lockctl does this by itself)"),
    "psk_key_invalid": ("the token's encrypted PSK cannot be decrypted with the lock's AS-to-lock key",
                        "mint it with this lock's bundle"),
    "exi_table_full": ("the lock's exi table cannot take this token now", "retry later"),
    "locked_out": ("too many failures from this address: the lock ignores it for a while",
                   "wait for the penalty (Max-Age seconds) and fix what failed"),
    "log_failure": ("the lock could not write its decision log, so it refused (fail closed)",
                    "check the lock's flash"),
    "actuator_fault": ("the door mechanism reported a fault; the lock stays locked", "check the hardware"),
    "bad_request": ("the request was not well-formed", ""),
    "store_full": ("the lock's token store is full", "lockctl then sends the token inline"),
    "wrong_session": ("a PSK token used outside the DTLS session keyed by it",
                      "use --psk-identity/--psk of this token"),
    "no_memory": ("the lock ran out of heap for this request (nothing was checked)", "retry"),
    "state_damaged": ("the lock's state file was damaged: exi tokens wait until the AS sends exi floors",
                      "send the floors: POST /revoke with an admin token"),
    "state_failure": ("the lock could not save state that must be durable first", "retry; check the flash"),
    "token_superseded": ("the lock holds a newer token for the same key", "use the newer token"),
    "revocations_full": ("the lock's revocation list is full", ""),
    "dtls_failed": ("a DTLS handshake failed before naming an identity (no common suite, a bad message)",
                    ""),
    "psk_mismatch": ("a DTLS handshake named a stored token's PSK identity but had the wrong key",
                     "use the --psk printed by `lockctl token --psk` for this token"),
    "introspection_inactive": ("the lock asked its AS about the token (an online-check permission) and the "
                               "AS said it is no longer active: revoked there, expired, or no policy allows "
                               "it now", "ask the AS for a new token; `lockctl as policy list` shows what "
                                         "the policies allow now"),
    "introspection_pending": ("an online-check permission: every local check passed and the lock is asking "
                              "its AS now (5.03 with Max-Age; not counted by the lockout)",
                              "retry after Max-Age seconds (lockctl does this by itself)"),
    "as_unreachable": ("an online-check permission whose offline policy is \"deny\": the lock cannot ask "
                       "its AS now (no uplink, or the AS does not answer: the uplink is backing off)",
                       "bring the AS (`lockctl as serve`) or the lock's network back, then retry"),
    "offline_allowed": ("granted without the AS: an online-check permission whose offline policy is "
                        "\"allow\", while the AS could not be asked (the log shows it)",
                        "check why the AS was unreachable; set \"online_check\": \"deny\" to refuse instead"),
}

# The Error option value of the reasons `diagnose` names (the firmware's
# _ERRORS for them: only scope_insufficient is 2).
ERRORS = {"scope_insufficient": 2}

# The Error option alone (CoAP), when nothing better is known.
_ERROR_WORDS = {
    0: "the request was malformed (bad proof, bad option)",
    1: "the lock did not accept the token: signature, issuer, audience, time, revocation, key "
       "binding or proof",
    2: "the token does not grant this permission (scope)",
}
_CODE_WORDS = {
    "4.00": "bad request",
    "4.01": "not authorized",
    "4.02": "an option is malformed or repeated",
    "4.03": "forbidden (insufficient scope)",
    "4.04": "no such resource",
    "4.05": "method not allowed",
    "4.13": "request too large",
    "4.15": "unsupported content format",
    "4.29": "too many failures from this address: locked out for Max-Age seconds",
    "5.00": "the lock failed serving this request (its console says why; often no heap)",
    "5.03": "the lock cannot serve this now (asking its AS: retry after Max-Age; or the AS cannot be "
            "asked, token store full, no heap, log or state not written)",
}

_names = None


def names():
    """The firmware's reason names, indexed by number (firmware/trust/reasons.py
    `_NAMES`), or () when the file is not there."""
    global _names
    if _names is None:
        try:
            with open(FIRMWARE_TABLE) as f:
                tree = ast.parse(f.read())
            for node in tree.body:
                if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_NAMES" for t in node.targets):
                    _names = tuple(ast.literal_eval(node.value).split())
                    break
            else:
                _names = ()
        except (OSError, SyntaxError, ValueError):
            _names = ()
    return _names


def name(reason):
    """The name of a reason number (as the log stores it), or a name as is."""
    if isinstance(reason, str):
        return reason
    n = names()
    return n[reason] if 0 <= reason < len(n) else "reason_%d" % reason


def words(reason):
    """`name: what it means` of a reason (number or name)."""
    nm = name(reason)
    w = WORDS.get(nm)
    return "%s: %s" % (nm, w[0]) if w else nm


def hint(reason, bundle=None):
    """What to do about a reason; BUNDLE in it becomes `bundle` when given."""
    w = WORDS.get(name(reason))
    h = w[1] if w else ""
    return h.replace("BUNDLE", bundle) if bundle else h


def outcome_words(code, error):
    """What a CoAP refusal (code, Error option) says, in words."""
    if error is not None and error in _ERROR_WORDS:
        return "%s (%s)" % (_ERROR_WORDS[error], ERROR_NAMES[error])
    return _CODE_WORDS.get(code, "refused")


def _claims(token):
    obj = cbor2.loads(token)
    while isinstance(obj, cbor2.CBORTag):
        obj = obj.value
    c = cbor2.loads(obj[2])
    return c if isinstance(c, dict) else {}


def diagnose(token, cfg, permission=None, now=None):
    """Reason names that the phone can see for itself, checking `token`
    against the bundle configuration `cfg` (lock.json as a dict): the lock
    would refuse for these (the signature is not checked here). [] when
    nothing is wrong that the phone can see."""
    try:
        c = _claims(token)
    except Exception:
        return ["token_malformed"]
    now = int(time.time()) if now is None else now
    skew = int(cfg.get("clock_skew_s", 60))
    out = []
    issuers = [k.get("issuer") for k in cfg.get("as_keys", ())]
    if 1 in c and c[1] not in issuers:
        out.append("iss_mismatch")
    aud = c.get(3)
    if cfg.get("device_id") not in (aud if isinstance(aud, list) else [aud]):
        out.append("aud_mismatch")
    exp, nbf, exi = c.get(4), c.get(5), c.get(40)
    if exp is None and exi is None:
        out.append("no_expiry")
    if cfg.get("clock", "unsynced") != "system" and (exi is None or nbf is not None):
        # The simulator trusts the host clock only with "clock": "system";
        # an ESP32 has none until the AS uplink (or opt-in NTP) sets it.
        out.append("clock_unsynced")
    else:
        if exp is not None and now >= exp + skew:
            out.append("expired")
        if nbf is not None and now + skew < nbf:
            out.append("not_yet_valid")
    if permission and permission != "authz-info":
        scope = c.get(9)
        perms = scope.split() if isinstance(scope, str) else []
        if permission not in perms:
            out.append("scope_insufficient")
    if 8 not in c and not cfg.get("allow_bearer"):
        out.append("bearer_not_allowed")
    if not out and exi is not None and cfg.get("clock", "unsynced") != "system":
        # Not visible from here, but the usual cause on a lock without a
        # clock: it restarted since it first saw this token.
        out.append("exi_expired")
    return out
