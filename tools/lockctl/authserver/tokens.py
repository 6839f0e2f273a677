"""Bench AS: the token endpoint and introspection (RFC 9200 sec. 5.8, 5.9),
transport-free: CBOR in, (response code, CBOR map) out.

Token request (POST /token, Content-Format 19 application/ace+cbor), RFC
9200 sec. 5.8.1 with its CBOR abbreviations (sec. 5.8.4.1, 8):
  {33 grant_type: 2 (client_credentials), optional,
   24 client_id: text, 5 audience: text (the lock's device_id),
   9 scope: text (space-separated permissions),
   4 req_cnf: {1: COSE_Key} (the phone's EC2 P-256 key), 38 ace_profile: optional}
The phone is known by client_id and its registered key: req_cnf must be
exactly that key (otherwise invalid_client). Over CoAPS the phone has also
authenticated with the client certificate this AS issued it: client_id
must then be that phone's (a lock, or another phone, is invalid_client).
The policies decide which of the requested permissions are granted now
and until when.

Response 2.01 (sec. 5.8.2): {1 access_token, 2 expires_in, 9 scope (what
was granted), 34 token_type: 2 (pop), 38 ace_profile: 1 (coap_dtls),
41 rs_cnf: {1: the lock's COSE_Key}}. The token (PROFILE sec. 2): COSE_Sign1
tag 18, protected {alg: ES256}, unprotected {kid}; claims iss, sub (the
user's name), aud, iat, exp, cti, cnf {1: phone key}, scope; for a lock
without a trusted clock also exi (seconds left in the policy window) with
cti = the lock's next exi sequence number.

Errors (sec. 5.8.3): 4.00, or 4.01 for invalid_client, payload {30 error,
31 error_description}, error codes in RFC 9200's CBOR mapping (sec. 5.8.3).

Introspection (POST /introspect, Content-Format 19; only locks, over the
uplink): request {11 token: the token, or its 32-byte token id}; response
2.01 {10 active: false} or {10 active: true, 1 iss, 2 sub, 3 aud, 4 exp,
6 iat, 7 cti, 8 cnf, 9 scope (what the policies allow now, within the
token's scope), 24 client_id, 34 token_type, 40 exi when it has one}. A lock
learns only about tokens for itself.
"""
import os

import cbor2

from .. import cose_host as ch
from .policy import decide

# RFC 9200 CBOR mappings: token endpoint (sec. 5.8) and introspection (sec. 5.9)
ACCESS_TOKEN, EXPIRES_IN, REQ_CNF, AUDIENCE, CNF, SCOPE = 1, 2, 4, 5, 8, 9
ACTIVE, TOKEN = 10, 11
CLIENT_ID, ERROR, ERROR_DESCRIPTION, GRANT_TYPE, TOKEN_TYPE = 24, 30, 31, 33, 34
ACE_PROFILE, RS_CNF = 38, 41
GRANT_CLIENT_CREDENTIALS = 2
TOKEN_TYPE_POP = 2
PROFILE_COAP_DTLS = 1          # RFC 9202 sec. 11.2
# RFC 9200 sec. 5.8.3, OAuth error code CBOR mappings
INVALID_REQUEST, INVALID_CLIENT, INVALID_GRANT, UNAUTHORIZED_CLIENT = 1, 2, 3, 4
UNSUPPORTED_GRANT_TYPE, INVALID_SCOPE, UNSUPPORTED_POP_KEY = 5, 6, 7
ERROR_NAMES = {1: "invalid_request", 2: "invalid_client", 3: "invalid_grant", 4: "unauthorized_client",
               5: "unsupported_grant_type", 6: "invalid_scope", 7: "unsupported_pop_key",
               8: "incompatible_ace_profiles"}
# CWT claims (RFC 8392, RFC 9200 5.10.3)
C_ISS, C_SUB, C_AUD, C_EXP, C_IAT, C_CTI, C_CNF, C_SCOPE, C_EXI = 1, 2, 3, 4, 6, 7, 8, 9, 40

MAX_REQUEST = 2048
CREATED, BAD_REQUEST, UNAUTHORIZED = "2.01", "4.00", "4.01"


class Refusal(Exception):
    """An RFC 9200 sec. 5.8.3 error: renders itself as (code, payload)."""

    def __init__(self, error, description):
        super().__init__(description)
        self.error = error
        self.description = description

    def render(self):
        code = UNAUTHORIZED if self.error == INVALID_CLIENT else BAD_REQUEST
        return code, {ERROR: self.error, ERROR_DESCRIPTION: self.description}


def _decode_map(payload):
    if len(payload) > MAX_REQUEST:
        raise Refusal(INVALID_REQUEST, "request over %d bytes" % MAX_REQUEST)
    try:
        m = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError):
        raise Refusal(INVALID_REQUEST, "not CBOR") from None
    if not isinstance(m, dict):
        raise Refusal(INVALID_REQUEST, "not a CBOR map")
    return m


def _text(m, key, what):
    v = m.get(key)
    if not isinstance(v, str) or not v:
        raise Refusal(INVALID_REQUEST, "%s (%d) must be non-empty text" % (what, key))
    return v


def cose_key_point(k):
    """65-byte SEC1 point of an EC2 P-256 COSE_Key, or Refusal."""
    if not isinstance(k, dict) or k.get(1) != 2 or k.get(-1) != 1:
        raise Refusal(UNSUPPORTED_POP_KEY, "req_cnf: an EC2 P-256 COSE_Key is needed (kty 2, crv 1)")
    x, y = k.get(-2), k.get(-3)
    if not (isinstance(x, bytes) and isinstance(y, bytes) and len(x) == 32 and len(y) == 32):
        raise Refusal(UNSUPPORTED_POP_KEY, "req_cnf: x and y must be 32-byte strings")
    return b"\x04" + x + y


def cose_key_of(point):
    return {1: 2, -1: 1, -2: bytes(point[1:33]), -3: bytes(point[33:65])}


def token_request(home, payload, now_s, peer=None):
    """(code, response map) for a token request (see the module docstring).
    `peer`: None on an unauthenticated transport, else the phone row the
    DTLS client certificate named, or False (an authenticated peer that is
    not a phone)."""
    try:
        return _token_request(home, payload, now_s, peer)
    except Refusal as r:
        return r.render()


def _token_request(home, payload, now_s, peer):
    m = _decode_map(payload)
    gt = m.get(GRANT_TYPE, GRANT_CLIENT_CREDENTIALS)
    if gt != GRANT_CLIENT_CREDENTIALS:
        raise Refusal(UNSUPPORTED_GRANT_TYPE, "only client_credentials (2)")
    client_id = _text(m, CLIENT_ID, "client_id")
    audience = _text(m, AUDIENCE, "audience")
    scope = _text(m, SCOPE, "scope")
    cnf = m.get(REQ_CNF)
    if not isinstance(cnf, dict) or set(cnf) != {1}:
        raise Refusal(INVALID_REQUEST, "req_cnf (4) must be {1: COSE_Key} (RFC 8747 3.1)")
    point = cose_key_point(cnf[1])
    store = home.store
    if peer is not None and (not peer or peer["client_id"] != client_id):
        raise Refusal(INVALID_CLIENT, "client_id %r is not the phone whose certificate opened this "
                                      "session" % client_id)
    phone = store.phone(client_id)
    if phone is None or not phone["enabled"]:
        raise Refusal(INVALID_CLIENT, "unknown client %r" % client_id)
    if bytes(phone["public_key"]) != point:
        raise Refusal(INVALID_CLIENT, "req_cnf is not the key registered for %r" % client_id)
    try:
        lock = store.lock(audience)
    except ValueError:
        raise Refusal(INVALID_REQUEST, "unknown audience %r" % audience) from None
    requested = scope.split()
    granted, horizon = decide(store.rules(phone["user"], audience), requested, now_s,
                              home.cfg["token_ttl_s"])
    if not granted:
        raise Refusal(INVALID_SCOPE, "no policy allows %s %r on %s now" % (phone["user"], scope, audience))
    granted_scope = " ".join(granted)
    claims = {C_ISS: home.issuer, C_SUB: phone["user"], C_AUD: audience, C_IAT: now_s, C_EXP: horizon,
              C_CNF: {1: cose_key_of(point)}, C_SCOPE: granted_scope}
    exi = None
    if lock["exi"]:
        # RFC 9200 5.10.3: the lock may have no clock; exi bounds the
        # lifetime from first receipt, the cti is the next sequence number.
        exi = horizon - now_s
        claims[C_EXI] = exi
        claims[C_CTI] = ch.seq_cti(store.next_exi_seq(lock["id"]))
    else:
        claims[C_CTI] = os.urandom(16)
    token = ch.make_sign1(claims, home.as_key, kid=home.kid)
    tid = ch.token_id(token)
    store.record_token(tid, claims[C_CTI], lock["id"], phone["id"], phone["user_id"], granted_scope, now_s,
                       horizon, exi)
    resp = {ACCESS_TOKEN: token, EXPIRES_IN: horizon - now_s, SCOPE: granted_scope,
            TOKEN_TYPE: TOKEN_TYPE_POP, ACE_PROFILE: PROFILE_COAP_DTLS,
            RS_CNF: {1: cose_key_of(bytes(lock["public_key"]))}}
    return CREATED, resp


def introspect(home, lock, payload, now_s):
    """(code, response map) for a lock's introspection request."""
    try:
        m = _decode_map(payload)
    except Refusal as r:
        return r.render()
    tok = m.get(TOKEN)
    if not isinstance(tok, bytes) or not tok:
        return Refusal(INVALID_REQUEST, "token (11) must be a byte string").render()
    try:
        tid = ch.token_id(tok)
    except (ValueError, cbor2.CBORDecodeError):
        if len(tok) != 32:
            return CREATED, {ACTIVE: False}
        tid = tok
    row = home.store.issued(tid)
    if row is None or row["device_id"] != lock["device_id"]:
        return CREATED, {ACTIVE: False}
    exi_seq = int.from_bytes(bytes(row["cti"]), "big") if row["exi_s"] is not None else None
    if home.store.is_revoked(lock["id"], tid, row["cti"], exi_seq):
        return CREATED, {ACTIVE: False}
    if row["exp_s"] is not None and now_s >= row["exp_s"]:
        return CREATED, {ACTIVE: False}
    # An online check asks the policies now, not when the token was minted.
    granted, _ = decide(home.store.rules(row["user"], lock["device_id"]), row["scope"].split(), now_s,
                        home.cfg["token_ttl_s"])
    if not granted:
        return CREATED, {ACTIVE: False}
    out = {ACTIVE: True, C_ISS: home.issuer, C_SUB: row["user"], C_AUD: lock["device_id"],
           C_IAT: row["iat_s"], C_CTI: bytes(row["cti"]), C_CNF: {1: cose_key_of(bytes(row["public_key"]))},
           SCOPE: " ".join(granted), CLIENT_ID: row["client_id"], TOKEN_TYPE: TOKEN_TYPE_POP}
    if row["exp_s"] is not None:
        out[C_EXP] = row["exp_s"]
    if row["exi_s"] is not None:
        out[C_EXI] = row["exi_s"]
    return CREATED, out
