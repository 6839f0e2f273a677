"""Trust core vectors that need no signing: RFC 8392 A.3, RFC 3610, claims,
nonce table. Runs under CPython and the MicroPython unix port."""
import time

from mpunit import raises, unhex
from trust import cbor, ccm, cwt, pop, reasons
from trust.reasons import Refused
from trust.verifier import TrustedKey, Verifier

# RFC 8392 A.3 (signed CWT) and the A.2.3 public key.
A3 = unhex("""
d28443a10126a104524173796d6d657472696345434453413235365850a70175
636f61703a2f2f61732e6578616d706c652e636f6d02656572696b7703781863
6f61703a2f2f6c696768742e6578616d706c652e636f6d041a5612aeb0051a56
10d9f0061a5610d9f007420b7158405427c1ff28d23fbad1f29c4c7c6a555e60
1d6fa29f9179bc3d7438bacaca5acd08c8d4d4f96131680c429a01f85951ecee
743a52b9b63632c57209120e1c9e30""")
A23_PUB = unhex("04"
                "143329cce7868e416927599cf65a34f3ce2ffda55a7eca69ed8919a394d42f0f"
                "60f7f1a780d8a783bfb7a2dd6b2796e8128dbbcef9d3d168db9529971a36e7b9")
A23_KID = b"AsymmetricECDSA256"


def _a3_verifier():
    key = TrustedKey("coap://as.example.com", A23_KID, A23_PUB)
    return Verifier("coap://light.example.com", [key], allow_bearer=True)


def test_rfc8392_a3_verifies_in_its_validity_window():
    tok = _a3_verifier().verify(A3, 1444000000)
    c = tok.claims
    assert c.iss == "coap://as.example.com" and c.sub == "erikw"
    assert c.exp == 1444064944 and c.nbf == 1443944944 and c.cti == b"\x0b\x71"
    assert tok.is_bearer


def test_rfc8392_a3_refused_with_real_clock():
    e = raises(Refused, _a3_verifier().verify, A3, int(time.time()))
    assert e.reason == reasons.EXPIRED


def test_rfc8392_a3_inside_cwt_tag():
    tok = _a3_verifier().verify(unhex("d83d") + A3, 1444000000)
    assert tok.claims.sub == "erikw"


def test_rfc8392_a3_flipped_signature_bit():
    bad = bytearray(A3)
    bad[-1] ^= 1
    e = raises(Refused, _a3_verifier().verify, bytes(bad), 1444000000)
    assert e.reason == reasons.SIG_INVALID


def test_rfc8392_a3_wrong_kid_and_audience():
    key = TrustedKey("coap://as.example.com", b"other", A23_PUB)
    e = raises(Refused, Verifier("coap://light.example.com", [key], allow_bearer=True).verify, A3, 1444000000)
    assert e.reason == reasons.UNKNOWN_KEY
    key = TrustedKey("coap://as.example.com", A23_KID, A23_PUB)
    e = raises(Refused, Verifier("coap://light.example.co", [key], allow_bearer=True).verify, A3, 1444000000)
    assert e.reason == reasons.AUD_MISMATCH
    e = raises(Refused, Verifier("coap://light.example.com", [key]).verify, A3, 1444000000)
    assert e.reason == reasons.BEARER_NOT_ALLOWED


def test_rfc3610_packet_vector_1():
    key = bytes(range(0xC0, 0xD0))
    nonce = unhex("00000003020100a0a1a2a3a4a5")
    aad = bytes(range(8))
    ct = unhex("588c979a61c663d2f066d0c2c0f989806d5f6b61dac38417e8d12cfdf926e0")
    assert ccm.decrypt(key, nonce, ct, aad, 8) == bytes(range(8, 0x1F))
    bad = bytearray(ct)
    bad[0] ^= 0x80
    raises(ccm.CCMError, ccm.decrypt, key, nonce, bytes(bad), aad, 8)
    raises(ccm.CCMError, ccm.decrypt, key, nonce, ct, b"x", 8)
    raises(ccm.CCMError, ccm.decrypt, key, nonce, ct[:7], aad, 8)


def test_ct_equal():
    assert ccm.ct_equal(b"abc", b"abc")
    assert not ccm.ct_equal(b"abc", b"abd")
    assert not ccm.ct_equal(b"abc", b"ab")


def _claims(**kw):
    m = {1: "https://as", 3: "lock-1", 4: 2000, 9: "unlock status"}
    for k, v in kw.items():
        m[cwt.__dict__["C_" + k.upper()]] = v
    return m


def _check(m, now=1000, skew=60, device="lock-1"):
    c = cwt.parse(cbor.encode(m))
    cwt.check(c, "https://as", device, now, skew)
    return c


def _reason(m, **kw):
    return raises(Refused, _check, m, **kw).reason


def test_claims_accept_and_scope():
    c = _check(_claims())
    assert c.allows("unlock") and c.allows("status") and not c.allows("admin")
    assert not c.allows("unloc")


def test_claims_audience_exact_element_match():
    assert _reason(_claims(aud="lock-10")) == reasons.AUD_MISMATCH
    assert _reason(_claims(aud=["lock-10", "lock"])) == reasons.AUD_MISMATCH
    assert _check(_claims(aud=["lock-10", "lock-1"])).aud == ("lock-10", "lock-1")
    assert _reason(_claims(aud=[])) == reasons.CLAIMS_MALFORMED
    assert _reason(_claims(aud=5)) == reasons.CLAIMS_MALFORMED


def test_claims_time_with_skew():
    assert _reason(_claims(exp=1000), skew=0) == reasons.EXPIRED
    _check(_claims(exp=1001), skew=0)
    _check(_claims(exp=950), skew=60)
    assert _reason(_claims(exp=940), skew=60) == reasons.EXPIRED
    assert _reason(_claims(nbf=1061), skew=60) == reasons.NOT_YET_VALID
    _check(_claims(nbf=1060), skew=60)
    assert _reason(_claims(exp="2000")) == reasons.CLAIMS_MALFORMED
    assert _reason(_claims(exp=True)) == reasons.CLAIMS_MALFORMED


def test_claims_need_exp_or_exi():
    m = _claims()
    del m[4]
    assert _reason(m) == reasons.NO_EXPIRY
    m[40] = 60
    assert _reason(m) == reasons.NO_EXPIRY  # exi without cti
    m[7] = b"c1"
    _check(m)


def test_claims_unsynced_clock():
    m = _claims()
    c = cwt.parse(cbor.encode(m))
    e = raises(Refused, cwt.check, c, "https://as", "lock-1", None, 60)
    assert e.reason == reasons.CLOCK_UNSYNCED
    del m[4]
    m[40] = 60
    m[7] = b"c1"
    cwt.check(cwt.parse(cbor.encode(m)), "https://as", "lock-1", None, 60)


def test_claims_issuer_exact():
    assert _reason(_claims(iss="https://as/")) == reasons.ISS_MISMATCH
    m = _claims()
    del m[1]
    assert _reason(m) == reasons.ISS_MISMATCH


def test_claims_malformed_payloads():
    for raw in (b"\x80", b"\xa1\x01", b"\xa2\x01\x60\x01\x60", cbor.encode([1])):
        e = raises(Refused, cwt.parse, raw)
        assert e.reason == reasons.CLAIMS_MALFORMED


def _seq(n):
    return n.to_bytes(2, "big")


def test_exi_table_within_boot_and_across_reboot():
    t = cwt.ExiTable(2)
    t.check("as", _seq(1), 60, 1, 100, None)      # first receipt
    t.check("as", _seq(1), 60, 1, 159, None)      # 59 s later: fine
    assert raises(Refused, t.check, "as", _seq(1), 60, 1, 160, None).reason == reasons.EXI_EXPIRED
    # After a reboot without a clock the age is unknown: refused.
    assert raises(Refused, t.check, "as", _seq(1), 60, 2, 5, None).reason == reasons.EXI_EXPIRED
    t2 = cwt.ExiTable(2)
    t2.check("as", _seq(5), 60, 1, 100, 5000)
    t2.check("as", _seq(5), 60, 2, 1, 5030)       # rebooted, wall clock says 30 s
    assert raises(Refused, t2.check, "as", _seq(5), 60, 2, 2, 5061).reason == reasons.EXI_EXPIRED
    t3 = cwt.ExiTable(2)
    t3.load(t2.to_state())
    assert raises(Refused, t3.check, "as", _seq(5), 60, 2, 5, 5100).reason == reasons.EXI_EXPIRED


def test_exi_window_never_forgets_and_never_fills():
    # RFC 9200 5.10.3: sequence numbers. Leaving the window raises the floor,
    # so an expired token can never come back with a new lifetime, and new
    # tokens are always accepted, even after a reboot without a clock.
    t = cwt.ExiTable(3)
    for n in (10, 11, 12):
        t.check("as", _seq(n), 60, 1, 0, None)
    t.check("as", _seq(13), 60, 1, 61, None)       # 10 leaves: floor 10
    assert t.issuers["as"][0] == 10 and len(t.issuers["as"][1]) == 3
    for n in (10, 9, 0):                           # at or below the floor
        e = raises(Refused, t.check, "as", _seq(n), 60, 1, 62, None)
        assert e.reason == reasons.EXI_EXPIRED, n
    assert raises(Refused, t.check, "as", _seq(11), 60, 1, 62, None).reason == reasons.EXI_EXPIRED
    t.check("as", _seq(14), 60, 1, 62, None)       # floor 11
    e = raises(Refused, t.check, "as", _seq(12), 60, 1, 200, None)   # seen at 0: expired
    assert e.reason == reasons.EXI_EXPIRED
    # Reboot without a clock: old entries refused, new numbers accepted.
    t2 = cwt.ExiTable(3)
    t2.load(t.to_state())
    assert raises(Refused, t2.check, "as", _seq(13), 60, 2, 1, None).reason == reasons.EXI_EXPIRED
    for n in range(15, 40):
        t2.check("as", _seq(n), 60, 2, 2, None)
    assert len(t2.issuers["as"][1]) == 3 and t2.issuers["as"][0] == 36
    # Issuers are separate windows; 8-byte numbers work on a 32-bit word.
    t2.check("other", b"\xff" * 8, 60, 2, 3, None)
    assert raises(Refused, t2.check, "other", b"\xff" * 8, 60, 2, 64, None).reason == reasons.EXI_EXPIRED


def test_exi_blocked_until_floors():
    t = cwt.ExiTable(3)
    t.blocked = True
    assert raises(Refused, t.check, "as", _seq(1), 60, 1, 0, None).reason == reasons.STATE_DAMAGED
    t.set_floor({"as": 100})
    assert not t.blocked and t.dirty
    assert raises(Refused, t.check, "as", _seq(100), 60, 1, 0, None).reason == reasons.EXI_EXPIRED
    t.check("as", _seq(101), 60, 1, 0, None)
    t.set_floor({"as": 50})                        # a floor never goes down
    assert t.issuers["as"][0] == 100


def test_nonce_single_use_expiry_and_peer_binding():
    now = [1000]
    t = pop.NonceTable(lambda: now[0], key=bytes(range(16)))
    a = t.issue("A")
    b = t.issue("A")
    assert len(a) == 16 and a != b and t._body(a) < t._body(b)  # in issue order
    assert raises(Refused, t.consume, a, "B").reason == reasons.NONCE_UNKNOWN  # not B's
    t.consume(a, "A")
    assert raises(Refused, t.consume, a, "A").reason == reasons.NONCE_UNKNOWN  # spent
    forged = a[:8] + bytes(8)
    assert raises(Refused, t.consume, forged, "A").reason == reasons.NONCE_UNKNOWN
    flipped = bytes([a[0] ^ 1]) + a[1:]
    assert raises(Refused, t.consume, flipped, "A").reason == reasons.NONCE_UNKNOWN
    assert a[:5] != bytes(5) and b[:5] != bytes(5)    # the uptime does not show
    now[0] += 30001
    assert raises(Refused, t.consume, b, "A").reason == reasons.NONCE_EXPIRED
    assert len(t) == 0                                  # spent entries leave after the TTL
    other = pop.NonceTable(lambda: now[0], key=bytes(16))   # another boot key
    assert raises(Refused, other.consume, t.issue("A"), "A").reason == reasons.NONCE_UNKNOWN
    assert raises(Refused, t.consume, b"short", "A").reason == reasons.POP_MALFORMED


def test_nonce_strangers_cannot_spoil_a_peers_nonce():
    # PROFILE sec. 3 v2: requests from other peers, however many, never make
    # the victim's outstanding nonce fail (there is no table to flush).
    now = [0]
    t = pop.NonceTable(lambda: now[0], capacity=24)
    mine = t.issue("victim")
    for i in range(5000):
        t.issue("mallory%d" % (i % 50))
    for i in range(200):                                # more spent than the set holds
        who = "mallory%d" % i
        t.consume(t.issue(who), who)
    now[0] = 29000
    t.consume(mine, "victim")
    assert len(t) == 24


def test_nonce_spent_set_full():
    # Unverified entries give way to a new proof (oldest first); verified
    # ones go only when nothing else can, raising a floor below which every
    # nonce counts as spent: never a replay, never a refusal for lack of room.
    now = [0]
    t = pop.NonceTable(lambda: now[0], capacity=3)
    first = t.issue("A")
    t.consume(first, "A")
    used = [t.issue("B"), t.issue("C")]
    for n, who in zip(used, "BC"):
        t.consume(n, who)
    now[0] = 10
    d = t.issue("D")
    t.consume(d, "D")                                    # pushes out A's unverified entry
    assert len(t) == 3
    t.consume(first, "A")                                # A's refused proof may come again
    verified = t.issue("V")
    early = t.issue("W")                                 # outstanding, not yet presented
    now[0] = 20
    for n in used[1:] + [d, first]:
        t.confirm(n)
    t.consume(verified, "V")
    t.confirm(verified)
    now[0] = 30
    for who in "XYZ":                                    # evicts verified entries: floor rises
        n = t.issue(who)
        t.consume(n, who)
        t.confirm(n)
    now[0] = 40
    t.consume(t.issue("E"), "E")
    assert len(t) == 3
    for n, who in ((first, "A"), (verified, "V")):      # never a replay
        assert raises(Refused, t.consume, n, who).reason == reasons.NONCE_UNKNOWN
    assert raises(Refused, t.consume, early, "W").reason == reasons.NONCE_UNKNOWN  # below the floor


def test_pop_challenge_bytes():
    # Deterministic CBOR: array(5), "lock-pop-v1", "lock-1", h'00'*16, "unlock", h'11'*32
    got = pop.challenge("lock-1", bytes(16), "unlock", b"\x11" * 32)
    want = (unhex("85 6b") + b"lock-pop-v1" + unhex("66") + b"lock-1" + unhex("50") + bytes(16)
            + unhex("66") + b"unlock" + unhex("5820") + b"\x11" * 32)
    assert got == want


def test_pop_proof_parsing():
    for raw in (b"\x80", cbor.encode([bytes(16)]), cbor.encode([bytes(15), bytes(64)]),
                cbor.encode([bytes(16), bytes(63)]), cbor.encode([bytes(16), "x" * 64]), b"\xff"):
        assert raises(Refused, pop.parse_proof, raw).reason == reasons.POP_MALFORMED


# The reason table, spelled out: name -> (Error option value, CoAP code).
REASONS = {
    "ok": (None, "2.04"), "token_malformed": (1, "4.01"), "token_too_large": (1, "4.01"),
    "wrong_tag": (1, "4.01"), "not_cose_sign1": (1, "4.01"), "duplicate_parameter": (1, "4.01"),
    "alg_missing": (1, "4.01"), "alg_unprotected": (1, "4.01"), "alg_unsupported": (1, "4.01"),
    "crit_unprotected": (1, "4.01"), "crit_unknown": (1, "4.01"), "unknown_key": (1, "4.01"),
    "sig_format": (1, "4.01"), "sig_invalid": (1, "4.01"), "claims_malformed": (1, "4.01"),
    "iss_mismatch": (1, "4.01"), "aud_mismatch": (1, "4.01"), "expired": (1, "4.01"),
    "not_yet_valid": (1, "4.01"), "no_expiry": (1, "4.01"), "clock_unsynced": (1, "4.01"),
    "revoked": (1, "4.01"), "exi_expired": (1, "4.01"), "scope_insufficient": (2, "4.03"),
    "cnf_invalid": (1, "4.01"), "bearer_not_allowed": (1, "4.01"), "pop_missing": (1, "4.01"),
    "pop_malformed": (0, "4.00"), "nonce_unknown": (1, "4.01"), "nonce_expired": (1, "4.01"),
    "pop_sig_invalid": (1, "4.01"), "token_missing": (None, "4.01"), "token_unknown": (1, "4.01"),
    "psk_key_invalid": (1, "4.01"), "exi_table_full": (None, "5.03"), "locked_out": (None, "4.29"),
    "log_failure": (None, "5.03"), "actuator_fault": (None, "5.03"), "bad_request": (0, "4.00"),
    "store_full": (None, "5.03"), "wrong_session": (1, "4.01"), "no_memory": (None, "5.03"),
    "state_damaged": (None, "5.03"), "state_failure": (None, "5.03"), "token_superseded": (1, "4.01"),
    "revocations_full": (None, "5.03"), "dtls_failed": (None, "4.00"), "psk_mismatch": (1, "4.01"),
    "introspection_inactive": (1, "4.01"), "introspection_pending": (None, "5.03"),
    "as_unreachable": (None, "5.03"), "offline_allowed": (None, "2.04"),
}


def test_reason_table():
    assert reasons.COUNT == len(REASONS)
    for code in range(reasons.COUNT):
        n = reasons.name(code)
        err, coap = REASONS[n]
        c = reasons.coap_code(code)
        assert reasons.error_value(code) == err, n
        assert "%d.%02d" % (c >> 5, c & 31) == coap, n
        assert getattr(reasons, n.upper()) == code, n
    assert reasons.name(99) == "unknown_99"
    assert str(Refused(reasons.EXPIRED, "x")) == "expired: x"
