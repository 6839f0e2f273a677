"""Trust core: COSE (RFC 9052) COSE_Sign1 verification with ES256 and
COSE_Encrypt0 decryption with AES-CCM-16-64-128.

Every failure raises reasons.Refused with exactly one reason from the table.
"""
import hashlib

from micropython import const

from trust import cbor, ccm, p256
from trust.reasons import (
    ALG_MISSING, ALG_UNPROTECTED, ALG_UNSUPPORTED, CRIT_UNKNOWN, CRIT_UNPROTECTED,
    DUPLICATE_PARAMETER, NOT_COSE_SIGN1, PSK_KEY_INVALID, SIG_FORMAT, SIG_INVALID,
    TOKEN_MALFORMED, TOKEN_TOO_LARGE, UNKNOWN_KEY, WRONG_TAG, Refused,
)

TAG_SIGN1 = const(18)
TAG_ENCRYPT0 = const(16)
TAG_CWT = const(61)
H_ALG = const(1)
H_CRIT = const(2)
H_KID = const(4)
H_IV = const(5)
H_PARTIAL_IV = const(6)
ALG_ES256 = const(-7)
ALG_AES_CCM_16_64_128 = const(10)
MAX_TOKEN = const(1024)
_MAX_DEPTH = const(8)

# P-256 group order (SEC 2 2.4.2); r and s must lie in [1, n-1].
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# Header labels this implementation understands (RFC 9052 3.1 "crit").
_UNDERSTOOD = (H_ALG, H_KID)


class Sign1:
    """A parsed, not yet verified COSE_Sign1."""
    __slots__ = ("protected_raw", "protected", "unprotected", "payload", "signature", "kid")


def _decode_header(raw):
    if len(raw) == 0:
        return {}
    try:
        h = cbor.decode(raw, _MAX_DEPTH)
    except cbor.CBORError as e:
        raise Refused(TOKEN_MALFORMED, "protected header: %s" % e)
    if not isinstance(h, dict):
        raise Refused(NOT_COSE_SIGN1, "protected header is not a map")
    return h


def _check_headers(prot, unprot, alg):
    """RFC 9052 3: no label in both buckets; alg protected and as expected;
    crit protected, non-empty, listing only present, understood labels."""
    for k in unprot:
        if k in prot:
            raise Refused(DUPLICATE_PARAMETER, "label %r in both buckets" % (k,))
    if H_CRIT in unprot:
        raise Refused(CRIT_UNPROTECTED)
    if H_ALG not in prot:
        if H_ALG in unprot:
            raise Refused(ALG_UNPROTECTED)
        raise Refused(ALG_MISSING)
    a = prot[H_ALG]
    if a != alg or isinstance(a, bool):
        raise Refused(ALG_UNSUPPORTED, "alg %r" % (a,))
    if H_CRIT in prot:
        crit = prot[H_CRIT]
        if not isinstance(crit, list) or not crit:
            raise Refused(CRIT_UNKNOWN, "crit must be a non-empty array")
        for label in crit:
            if label not in _UNDERSTOOD or label not in prot:
                raise Refused(CRIT_UNKNOWN, "label %r" % (label,))
    kid = prot.get(H_KID, unprot.get(H_KID))
    if kid is not None and not isinstance(kid, bytes):
        raise Refused(NOT_COSE_SIGN1, "kid must be a byte string")
    return kid


def parse_sign1(token):
    """Strictly parse a COSE_Sign1: tag 18, tag 61 around tag 18, or untagged."""
    if len(token) > MAX_TOKEN:
        raise Refused(TOKEN_TOO_LARGE, "%d bytes" % len(token))
    try:
        obj = cbor.decode(token, _MAX_DEPTH, MAX_TOKEN)
    except cbor.CBORError as e:
        raise Refused(TOKEN_MALFORMED, str(e))
    if isinstance(obj, cbor.Tag):
        # RFC 8392 6: the CWT tag prefixes a tagged COSE object.
        if obj.tag == TAG_CWT:
            obj = obj.value
            if not isinstance(obj, cbor.Tag):
                raise Refused(WRONG_TAG, "CWT tag must wrap a COSE tag")
        if obj.tag != TAG_SIGN1:
            raise Refused(WRONG_TAG, "tag %d" % obj.tag)
        obj = obj.value
    if not isinstance(obj, list) or len(obj) != 4:
        raise Refused(NOT_COSE_SIGN1, "not a 4-element array")
    prot_raw, unprot, payload, sig = obj
    if not isinstance(prot_raw, bytes) or not isinstance(unprot, dict):
        raise Refused(NOT_COSE_SIGN1, "header types")
    if not isinstance(payload, bytes):
        raise Refused(NOT_COSE_SIGN1, "payload must be an attached byte string")
    if not isinstance(sig, bytes):
        raise Refused(NOT_COSE_SIGN1, "signature must be a byte string")
    s = Sign1()
    s.protected_raw = prot_raw
    s.protected = _decode_header(prot_raw)
    s.unprotected = unprot
    s.payload = payload
    s.signature = sig
    s.kid = _check_headers(s.protected, unprot, ALG_ES256)
    return s


def sig_structure(protected_raw, payload, external_aad=b""):
    """RFC 9052 4.4: the bytes that are signed."""
    return cbor.encode(["Signature1", protected_raw, external_aad, payload])


def check_es256_format(sig, reason=SIG_FORMAT):
    if len(sig) != 64:
        raise Refused(reason, "signature is %d bytes, not 64" % len(sig))
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if r == 0 or s == 0 or r >= _N or s >= _N:
        raise Refused(reason, "r or s out of range")


def es256_verify(pub, msg, sig, reason=SIG_INVALID):
    """ES256 over msg with a 65-byte SEC1 key; raises Refused(reason), or
    Refused(SIG_FORMAT) for a token signature (reason SIG_INVALID) whose r
    or s is out of range (a proof's is just an invalid proof: `reason`)."""
    check_es256_format(sig, SIG_FORMAT if reason == SIG_INVALID else reason)
    if not p256.verify(pub, hashlib.sha256(msg).digest(), sig):
        raise Refused(reason)


def select_key(keys, kid):
    """keys: list of objects with .kid (bytes or None). RFC 9052 3.1: kid
    is a hint; without kid only a lock with exactly one key proceeds."""
    if kid is None:
        if len(keys) == 1:
            return keys[0]
        raise Refused(UNKNOWN_KEY, "no kid and %d trusted keys" % len(keys))
    for k in keys:
        if k.kid is not None and ccm.ct_equal(k.kid, kid):
            return k
    raise Refused(UNKNOWN_KEY, "kid not trusted")


def verify_sign1(s, pub):
    es256_verify(pub, sig_structure(s.protected_raw, s.payload), s.signature)


def decrypt_encrypt0(obj, key):
    """Decrypt a decoded COSE_Encrypt0 (RFC 9052 5.2) made with
    AES-CCM-16-64-128 under `key`; returns the plaintext bytes.
    Any defect is PSK_KEY_INVALID (the cnf cannot be used)."""
    if isinstance(obj, cbor.Tag):
        if obj.tag != TAG_ENCRYPT0:
            raise Refused(PSK_KEY_INVALID, "tag %d" % obj.tag)
        obj = obj.value
    if not isinstance(obj, list) or len(obj) != 3:
        raise Refused(PSK_KEY_INVALID, "not a COSE_Encrypt0")
    prot_raw, unprot, ct = obj
    if not isinstance(prot_raw, bytes) or not isinstance(unprot, dict) or not isinstance(ct, bytes):
        raise Refused(PSK_KEY_INVALID, "Encrypt0 types")
    try:
        prot = _decode_header(prot_raw)
        _check_headers(prot, unprot, ALG_AES_CCM_16_64_128)
    except Refused as e:
        raise Refused(PSK_KEY_INVALID, str(e))
    if H_PARTIAL_IV in prot or H_PARTIAL_IV in unprot:
        raise Refused(PSK_KEY_INVALID, "partial IV needs a context IV")
    iv = prot.get(H_IV, unprot.get(H_IV))
    if not isinstance(iv, bytes) or len(iv) != 13:
        raise Refused(PSK_KEY_INVALID, "IV must be 13 bytes")
    aad = cbor.encode(["Encrypt0", prot_raw, b""])
    try:
        return ccm.decrypt(key, iv, ct, aad, 8)
    except ccm.CCMError as e:
        raise Refused(PSK_KEY_INVALID, str(e))
