"""A token has one identity, whatever its envelope (PROFILE sec. 2 v2).

Every re-encoding of the same signed content that can be built (tags,
unprotected headers, length heads, s or n-s) has the token id the AS
computes (lockctl.cose_host.token_id); revoked by that id, none of them is
accepted, on CPython and on the simulator's MicroPython (same driver).
End to end, a token revoked through /revoke stays refused in every
envelope."""
import asyncio

import cbor2
import pytest

from lockctl import cose_host as ch
from tokencases import KID, World, enc, run_cases
from trust import reasons

W = World()


def _head(major, n, width):
    # A CBOR head with an explicit (possibly non-minimal) argument width.
    ai = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([(major << 5) | ai]) + n.to_bytes(width, "big")


def _bstr(b, width=None):
    return (_head(2, len(b), width) + b) if width else enc(b)


def _sign1(prot, unprot, payload, sig, tag=18, widths=(None, None, None)):
    body = (b"\x84" + _bstr(prot, widths[0]) + unprot + _bstr(payload, widths[1])
            + _bstr(sig, widths[2]))
    if tag is None:
        return body
    pre = enc(cbor2.CBORTag(tag, 0))[:-1]  # the tag head alone
    return pre + body


def variants():
    """(name, token bytes) built from one signed content."""
    prot = enc({1: -7})
    payload = enc(W.claims())
    sig = ch.sign_es256(W.as_key, enc(["Signature1", prot, b"", payload]))
    r, s = sig[:32], int.from_bytes(sig[32:], "big")
    high = r + (ch.N - s).to_bytes(32, "big")
    kid = enc({4: KID})
    t18 = _sign1(prot, kid, payload, sig)
    out = [
        ("tag18", t18),
        ("tag61", bytes([0xd8, 61]) + t18),
        ("untagged", _sign1(prot, kid, payload, sig, tag=None)),
        ("high_s", _sign1(prot, kid, payload, high)),
        ("tag61_high_s", bytes([0xd8, 61]) + _sign1(prot, kid, payload, high)),
        ("untagged_high_s", _sign1(prot, kid, payload, high, tag=None)),
        ("extra_unprotected", _sign1(prot, enc({4: KID, 33: b"x"}), payload, sig)),
        ("unprotected_order", _sign1(prot, b"\xa2" + enc(33) + enc(b"x") + enc(4) + enc(KID), payload, sig)),
        ("tag_head_2byte", b"\xd9\x00\x12" + _sign1(prot, kid, payload, sig, tag=None)),
        ("payload_head_4byte", _sign1(prot, kid, payload, sig, widths=(None, 4, None))),
        ("prot_head_1byte", _sign1(prot, kid, payload, sig, widths=(1, None, None))),
        ("sig_head_2byte", _sign1(prot, kid, payload, sig, widths=(None, None, 2))),
    ]
    return out, ch.token_id(t18)


VARIANTS, TID = variants()


def test_the_as_computes_one_id_for_every_envelope():
    for name, tok in VARIANTS:
        assert ch.token_id(tok) == TID, name


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_no_envelope_escapes_a_revocation(interpreter):
    cases = []
    for name, tok in VARIANTS:
        cases.append(W.case(name, tok, "OK"))
        cases.append(W.case(name + "+revoked", tok, "REVOKED", revoked_hashes=[TID.hex()]))
    got = run_cases(cases, interpreter)
    accepted = [n for n, _ in VARIANTS if got[n][0] == 0]
    # The plain envelopes the profile names are accepted...
    for name in ("tag18", "tag61", "untagged", "high_s"):
        assert name in accepted, (name, got[name])
    for name, _ in VARIANTS:
        revoked = got[name + "+revoked"][0]
        if name in accepted:
            # ...and each accepted envelope is refused once its id is revoked.
            assert revoked == reasons.REVOKED, (name, got[name + "+revoked"])
        else:
            # Refused anyway (e.g. a strict decoder's non-minimal head): never OK.
            assert revoked != 0, name
    # Same results on both interpreters (the other run is the other param).
    print(interpreter, {n: got[n][0] for n, _ in VARIANTS})


def test_revoked_token_stays_refused_end_to_end(tmp_path):
    from simlock import SimLock
    from simlock import act as _act, upload as _upload
    lock = SimLock(tmp_path)
    try:
        admin_key = ch.gen_key()
        admin = lock.token(admin_key, over={9: "admin"})
        key = ch.gen_key()
        claims = lock.claims(client=key)
        prot = enc({1: -7})
        payload = enc(claims)
        sig = ch.sign_es256(lock.as_key, enc(["Signature1", prot, b"", payload]))
        high = sig[:32] + (ch.N - int.from_bytes(sig[32:], "big")).to_bytes(32, "big")
        kid = enc({4: lock.kid})
        t18 = _sign1(prot, kid, payload, sig)
        envelopes = [t18, bytes([0xd8, 61]) + t18, _sign1(prot, kid, payload, sig, tag=None),
                     _sign1(prot, kid, payload, high)]
        assert asyncio.run(_upload(lock, admin, admin_key)).code == "2.01"
        for tok in envelopes:
            assert asyncio.run(_upload(lock, tok, key)).code == "2.01"
        out = asyncio.run(_act(lock, admin, admin_key, "revoke",
                               payload=cbor2.dumps({"ids": [ch.token_id(t18)]})))
        assert out.code == "2.04", out.describe()
        for tok in envelopes:
            up = asyncio.run(_upload(lock, tok, key))
            assert up.code == "4.01" and up.error == 1, up.describe()
        # Malformed revocation bodies are 4.00, not stored.
        for body in ({"ids": b"x" * 32}, {"ids": [b"short"]}, {"hashes": [TID]}, [TID], {"ctis": [b""]}):
            out = asyncio.run(_act(lock, admin, admin_key, "revoke", payload=cbor2.dumps(body)))
            assert out.code == "4.00", (body, out.describe())
    finally:
        lock.stop()
