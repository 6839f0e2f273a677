"""The defect table: each crafted defect maps to exactly one reason, on
CPython and on the MicroPython unix port (same driver, same cases)."""
import cbor2
import pytest

from lockctl import cose_host as ch
from tokencases import DEVICE, ISS, KID, World, enc, make_nonce, run_cases
from trust import reasons

W = World()


def _sig_with(r, s):
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _raw_sign1(prot, unprot, payload, sig, tag=18):
    msg = [prot, unprot, payload, sig]
    return enc(cbor2.CBORTag(tag, msg)) if tag else enc(msg)


def _defects():
    w = W
    good_claims = w.claims()
    body = enc(good_claims)
    prot = enc({1: -7})
    tbs = enc(["Signature1", prot, b"", body])
    sig = ch.sign_es256(w.as_key, tbs)
    cases = [
        ("ok", w.token(), "OK", {}),
        ("ok_tag61", w.token(tag=61), "OK", {}),
        ("ok_untagged", w.token(tag=None), "OK", {}),
        ("ok_kid_protected", w.token(protected={1: -7, 4: KID}, unprotected={}), "OK", {}),
        ("ok_high_s", _raw_sign1(prot, {4: KID}, body,
                                 _sig_with(int.from_bytes(sig[:32], "big"), ch.N - int.from_bytes(sig[32:], "big"))),
         "OK", {}),
        ("wrong_tag_17", w.token(tag=17), "WRONG_TAG", {}),
        ("wrong_tag_61_untagged", enc(cbor2.CBORTag(61, cbor2.loads(w.token(tag=None)))), "WRONG_TAG", {}),
        ("wrong_tag_98", w.token(tag=98), "WRONG_TAG", {}),
        ("alg_missing", w.token(protected={5: b"x" * 13}), "ALG_MISSING", {}),
        ("alg_missing_empty_prot", w.token(protected={}), "ALG_MISSING", {}),
        ("alg_unprotected", w.token(protected={}, unprotected={1: -7, 4: KID}), "ALG_UNPROTECTED", {}),
        ("alg_other_es384", w.token(protected={1: -35}), "ALG_UNSUPPORTED", {}),
        ("alg_other_eddsa", w.token(protected={1: -8}), "ALG_UNSUPPORTED", {}),
        ("alg_text", w.token(protected={1: "ES256"}), "ALG_UNSUPPORTED", {}),
        ("crit_unknown", w.token(protected={1: -7, 2: [99], 99: 1}), "CRIT_UNKNOWN", {}),
        ("crit_absent_label", w.token(protected={1: -7, 2: [4]}, unprotected={4: KID}), "CRIT_UNKNOWN", {}),
        ("crit_empty", w.token(protected={1: -7, 2: []}), "CRIT_UNKNOWN", {}),
        ("crit_unprotected", w.token(unprotected={2: [1], 4: KID}), "CRIT_UNPROTECTED", {}),
        ("dup_param_buckets", w.token(protected={1: -7, 4: KID}, unprotected={4: KID}), "DUPLICATE_PARAMETER", {}),
        ("dup_key_protected", w.token(protected_raw=bytes.fromhex("a20126" + "0126")), "TOKEN_MALFORMED", {}),
        ("dup_key_claims", w.token(payload=bytes.fromhex("a2") + enc(1) + enc(ISS) + enc(1) + enc(ISS)),
         "CLAIMS_MALFORMED", {}),
        ("dup_key_unprotected", bytes.fromhex("d284") + enc(prot) + bytes.fromhex("a2044161044162")
         + enc(body) + enc(sig), "TOKEN_MALFORMED", {}),
        ("trailing_bytes", w.token() + b"\x00", "TOKEN_MALFORMED", {}),
        ("depth_bomb", b"\x81" * 10000, "TOKEN_TOO_LARGE", {}),
        ("depth_bomb_small", b"\x81" * 1000, "TOKEN_MALFORMED", {}),
        ("huge_bstr_len", bytes.fromhex("d2845bffffffffffffffff"), "TOKEN_MALFORMED", {}),
        ("huge_array_count", bytes.fromhex("d29bffffffffffffffff"), "TOKEN_MALFORMED", {}),
        ("huge_map_count", bytes.fromhex("d28443a10126bb7fffffffffffffff"), "TOKEN_MALFORMED", {}),
        ("indefinite_array", bytes.fromhex("d29f") + enc(prot) + bytes.fromhex("a0") + enc(body) + enc(sig) + b"\xff",
         "TOKEN_MALFORMED", {}),
        ("too_large", w.token(w.claims({99: "x" * 1100})), "TOKEN_TOO_LARGE", {}),
        ("not_array", enc(cbor2.CBORTag(18, {1: 2})), "NOT_COSE_SIGN1", {}),
        ("three_elements", enc(cbor2.CBORTag(18, [prot, {}, body])), "NOT_COSE_SIGN1", {}),
        ("detached_payload", _raw_sign1(prot, {4: KID}, None, sig), "NOT_COSE_SIGN1", {}),
        ("r_zero", _raw_sign1(prot, {4: KID}, body, _sig_with(0, 1)), "SIG_FORMAT", {}),
        ("s_zero", _raw_sign1(prot, {4: KID}, body, _sig_with(1, 0)), "SIG_FORMAT", {}),
        ("r_eq_n", _raw_sign1(prot, {4: KID}, body, _sig_with(ch.N, 1)), "SIG_FORMAT", {}),
        ("s_eq_n", _raw_sign1(prot, {4: KID}, body, _sig_with(1, ch.N)), "SIG_FORMAT", {}),
        ("r_gt_n", _raw_sign1(prot, {4: KID}, body, _sig_with(2**256 - 1, 1)), "SIG_FORMAT", {}),
        ("sig_63", _raw_sign1(prot, {4: KID}, body, sig[:63]), "SIG_FORMAT", {}),
        ("sig_65", _raw_sign1(prot, {4: KID}, body, sig + b"\x00"), "SIG_FORMAT", {}),
        ("sig_der", _raw_sign1(prot, {4: KID}, body, b"\x30\x44" + sig + b"\x00\x00"), "SIG_FORMAT", {}),
        ("sig_other_key", ch.make_sign1(good_claims, w.other_key, kid=KID), "SIG_INVALID", {}),
        ("sig_bitflip", _raw_sign1(prot, {4: KID}, body, sig[:40] + bytes([sig[40] ^ 4]) + sig[41:]), "SIG_INVALID", {}),
        ("payload_swapped", _raw_sign1(prot, {4: KID}, enc(w.claims({9: "admin"})), sig),
         "SIG_INVALID", {}),
        ("unknown_kid", w.token(kid=b"nope"), "UNKNOWN_KEY", {}),
        ("no_kid_two_keys", w.token(kid=None, unprotected={}), "UNKNOWN_KEY",
         {"keys": [[ISS, KID.hex(), ch.pub_bytes(w.as_key).hex()], [ISS, "6b32", ch.pub_bytes(w.other_key).hex()]]}),
        ("no_kid_one_key", w.token(kid=None, unprotected={}), "OK", {}),
        ("kid_not_bytes", w.token(unprotected={4: "as-key-1"}), "NOT_COSE_SIGN1", {}),
        ("invalid_curve_cnf", w.token(w.claims({8: {1: {1: 2, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32}}})),
         "CNF_INVALID", {}),
        ("cnf_wrong_crv", w.token(w.claims({8: {1: {**ch.cose_key_ec2(w.client), -1: 2}}})), "CNF_INVALID", {}),
        ("cnf_short_x", w.token(w.claims({8: {1: {**ch.cose_key_ec2(w.client), -2: b"\x01" * 31}}})),
         "CNF_INVALID", {}),
        ("cnf_two_methods", w.token(w.claims({8: {1: ch.cose_key_ec2(w.client), 3: b"k"}})), "CNF_INVALID", {}),
        ("cnf_kid_only", w.token(w.claims({8: {3: b"k"}})), "CNF_INVALID", {}),
        ("wrong_iss", w.token(w.claims({1: "https://as.example.evil"})), "ISS_MISMATCH", {}),
        ("iss_missing", w.token(w.claims({1: None})), "ISS_MISMATCH", {}),
        ("aud_prefix", w.token(w.claims({3: "lock-10"})), "AUD_MISMATCH", {}),
        ("aud_prefix_rev", w.token(w.claims({3: "lock-1"})), "AUD_MISMATCH", {"device_id": "lock-10"}),
        ("aud_array_ok", w.token(w.claims({3: ["lock-9", DEVICE]})), "OK", {}),
        ("aud_missing", w.token(w.claims({3: None})), "AUD_MISMATCH", {}),
        ("expired", w.token(w.claims({4: W.now - 61})), "EXPIRED", {}),
        ("expired_in_skew", w.token(w.claims({4: W.now - 59})), "OK", {}),
        ("not_yet_valid", w.token(w.claims({5: W.now + 61})), "NOT_YET_VALID", {}),
        ("no_exp_no_exi", w.token(w.claims({4: None})), "NO_EXPIRY", {}),
        ("exi_without_cti", w.token(w.claims({4: None, 7: None, 40: 60})), "NO_EXPIRY", {}),
        ("exi_ok_unsynced", w.token(w.claims({4: None, 5: None, 40: 60})), "OK", {"now": None}),
        # An exi token's cti is its sequence number: 1-8 bytes, one encoding.
        ("exi_cti_9_bytes", w.token(w.claims({4: None, 7: b"\x01" * 9, 40: 60})), "CLAIMS_MALFORMED", {}),
        ("exi_cti_leading_zero", w.token(w.claims({4: None, 7: b"\x00\x05", 40: 60})), "CLAIMS_MALFORMED", {}),
        ("exi_cti_zero", w.token(w.claims({4: None, 7: b"\x00", 40: 60})), "OK", {}),
        ("exp_unsynced", w.token(), "CLOCK_UNSYNCED", {"now": None}),
        ("exp_float", w.token(w.claims({4: float(W.now + 100)})), "CLAIMS_MALFORMED", {}),
        ("scope_not_text", w.token(w.claims({9: b"unlock"})), "CLAIMS_MALFORMED", {}),
        ("scope_lacking", w.token(w.claims({9: "status lock"})), "SCOPE_INSUFFICIENT", {"permission": "unlock"}),
        ("scope_prefix", w.token(w.claims({9: "unlocked"})), "SCOPE_INSUFFICIENT", {"permission": "unlock"}),
        ("scope_ok", w.token(), "OK", {"permission": "unlock"}),
        ("claims_not_map", w.token(payload=enc([1, 2])), "CLAIMS_MALFORMED", {}),
        ("bearer_refused", w.token(w.claims({8: None})), "BEARER_NOT_ALLOWED", {}),
        ("bearer_allowed", w.token(w.claims({8: None})), "OK", {"allow_bearer": True}),
    ]
    tok = w.token()
    cases += [
        ("revoked_hash", tok, "REVOKED", {"revoked_hashes": [ch.token_id(tok).hex()]}),
        ("revoked_cti", tok, "REVOKED", {"revoked_ctis": [b"cti-1".hex()]}),
    ]
    # PSK mode: cnf {2: Encrypt0}.
    enc0 = ch.encrypt0_key(w.psk_key, b"psk-kid-1", b"S" * 16)
    cases.append(("psk_ok", w.token(w.claims({8: {2: enc0}})), "OK", {}))
    cases.append(("psk_wrong_key", w.token(w.claims({8: {2: ch.encrypt0_key(b"K" * 16, b"k", b"S" * 16)}})),
                  "PSK_KEY_INVALID", {}))
    tampered = list(enc0)
    tampered[2] = bytes([enc0[2][0] ^ 1]) + enc0[2][1:]
    cases.append(("psk_tampered", w.token(w.claims({8: {2: tampered}})), "PSK_KEY_INVALID", {}))
    cases.append(("psk_wrong_alg", w.token(w.claims({8: {2: [enc({1: 11}), enc0[1], enc0[2]]}})),
                  "PSK_KEY_INVALID", {}))
    # Proof of possession.
    th = ch.token_id(tok)
    nkey = bytes(range(16))
    nonce = make_nonce(nkey, 1000, peer="phone")
    good = ch.pop_proof(w.client, DEVICE, nonce, "unlock", th)
    fresh = {"nonce_key": nkey.hex(), "peer": "phone", "now_ms": 2000}
    cases += [
        ("pop_ok", tok, "OK", {"permission": "unlock", "pop": dict(fresh, proofs=[good.hex()])}),
        ("pop_replayed", tok, "NONCE_UNKNOWN", {"permission": "unlock", "pop": dict(fresh, proofs=[good.hex(), good.hex()])}),
        ("pop_stale", tok, "NONCE_EXPIRED", {"permission": "unlock",
                                             "pop": dict(fresh, now_ms=31001, proofs=[good.hex()])}),
        ("pop_foreign_nonce", tok, "NONCE_UNKNOWN", {"permission": "unlock",
                                                     "pop": dict(fresh, proofs=[ch.pop_proof(w.client, DEVICE, b"\x07" * 16, "unlock", th).hex()])}),
        ("pop_other_peers_nonce", tok, "NONCE_UNKNOWN", {"permission": "unlock", "pop": dict(fresh, peer="mallory",
                                                                                         proofs=[good.hex()])}),
        ("pop_other_boot_key", tok, "NONCE_UNKNOWN", {"permission": "unlock", "pop": dict(fresh, nonce_key="00" * 16,
                                                                                      proofs=[good.hex()])}),
        ("pop_other_key", tok, "POP_SIG_INVALID", {"permission": "unlock",
                                                   "pop": dict(fresh, proofs=[ch.pop_proof(w.other_key, DEVICE, nonce, "unlock", th).hex()])}),
        ("pop_other_permission", tok, "POP_SIG_INVALID", {"permission": "unlock",
                                                          "pop": dict(fresh, proofs=[ch.pop_proof(w.client, DEVICE, nonce, "status", th).hex()])}),
        ("pop_other_token", tok, "POP_SIG_INVALID", {"permission": "unlock",
                                                     "pop": dict(fresh, proofs=[ch.pop_proof(w.client, DEVICE, nonce, "unlock", b"\x00" * 32).hex()])}),
        ("pop_other_device", tok, "POP_SIG_INVALID", {"permission": "unlock",
                                                      "pop": dict(fresh, proofs=[ch.pop_proof(w.client, "lock-10", nonce, "unlock", th).hex()])}),
        ("pop_malformed", tok, "POP_MALFORMED", {"permission": "unlock", "pop": dict(fresh, proofs=["8150" + nonce.hex()])}),
        ("pop_bearer_token", w.token(w.claims({8: None})), "POP_MISSING",
         {"permission": "unlock", "allow_bearer": True, "pop": dict(fresh, proofs=[good.hex()])}),
    ]
    return [W.case(cid, t, exp, **over) for cid, t, exp, over in cases]


CASES = _defects()


def test_table_covers_the_issue_list():
    names = {c["expect"] for c in CASES}
    for needed in ("WRONG_TAG", "ALG_MISSING", "ALG_UNPROTECTED", "ALG_UNSUPPORTED", "CRIT_UNKNOWN",
                   "CRIT_UNPROTECTED", "TOKEN_MALFORMED", "TOKEN_TOO_LARGE", "SIG_FORMAT", "SIG_INVALID",
                   "CNF_INVALID", "ISS_MISMATCH", "AUD_MISMATCH", "EXPIRED", "NOT_YET_VALID", "NO_EXPIRY",
                   "SCOPE_INSUFFICIENT", "REVOKED", "NONCE_UNKNOWN", "NONCE_EXPIRED", "POP_SIG_INVALID"):
        assert needed in names, needed


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_defect_table(interpreter):
    got = run_cases(CASES, interpreter)
    wrong = []
    for c in CASES:
        want = getattr(reasons, c["expect"])
        r = got.get(c["id"])
        if r is None or r[0] != want:
            wrong.append("%s: want %s, got %s" % (c["id"], c["expect"], r and (reasons.name(r[0]), r[1])))
    assert not wrong, "\n".join(wrong)
