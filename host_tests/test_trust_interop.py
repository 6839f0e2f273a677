"""Tokens minted by independent libraries (python-cwt, pycose) and by the
project's own host tool verify in the firmware's trust core, on CPython and
on the MicroPython unix port."""
import pytest
from cryptography.hazmat.primitives import serialization

import cwt as pycwt
from lockctl import cose_host as ch
from tokencases import DEVICE, ISS, KID, World, run_cases

W = World()


def _pycwt_token(claims):
    pem = W.as_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    key = pycwt.COSEKey.from_pem(pem, alg="ES256", kid=KID)
    return pycwt.encode(claims, key)


def _pycose_token(claims, tagged=True):
    from pycose.headers import KID as HKID, Algorithm
    from pycose.algorithms import Es256
    from pycose.keys import EC2Key
    from pycose.keys.curves import P256
    from pycose.messages import Sign1Message
    nums = W.as_key.private_numbers()
    key = EC2Key(crv=P256, d=nums.private_value.to_bytes(32, "big"),
                 x=nums.public_numbers.x.to_bytes(32, "big"), y=nums.public_numbers.y.to_bytes(32, "big"))
    msg = Sign1Message(phdr={Algorithm: Es256}, uhdr={HKID: KID}, payload=ch.enc(claims))
    msg.key = key
    return msg.encode(tag=tagged)


def _cases():
    c = W.claims()
    bearer = W.claims({8: None})
    exi = W.claims({4: None, 40: 120})
    out = [
        W.case("pycwt_pop", _pycwt_token(c), "OK", permission="unlock"),
        W.case("pycwt_bearer", _pycwt_token(bearer), "OK", allow_bearer=True),
        W.case("pycwt_exi", _pycwt_token(exi), "OK"),
        W.case("pycwt_expired", _pycwt_token(W.claims({4: W.now - 1000, 5: W.now - 2000, 6: W.now - 2000})),
               "EXPIRED"),
        W.case("pycose_pop", _pycose_token(c), "OK", permission="status"),
        W.case("pycose_untagged", _pycose_token(c, tagged=False), "OK"),
        W.case("pycose_scope", _pycose_token(c), "SCOPE_INSUFFICIENT", permission="admin"),
        W.case("own_tool", ch.make_sign1(c, W.as_key, kid=KID), "OK", permission="unlock"),
        W.case("own_tool_cwt_tag", ch.make_sign1(c, W.as_key, kid=KID, tag=61), "OK"),
    ]
    return out


CASES = _cases()


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_independent_minters(interpreter):
    from trust import reasons
    got = run_cases(CASES, interpreter)
    bad = ["%s: want %s got %s" % (c["id"], c["expect"], got.get(c["id"])) for c in CASES
           if got.get(c["id"], (None,))[0] != getattr(reasons, c["expect"])]
    assert not bad, "\n".join(bad)


def test_pycwt_decodes_our_token():
    """The other direction: python-cwt accepts what the project's tool mints."""
    tok = ch.make_sign1(W.claims({8: None}), W.as_key, kid=KID)
    pub = W.as_key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    key = pycwt.COSEKey.from_pem(pub, alg="ES256", kid=KID)
    claims = pycwt.decode(tok, key)
    assert claims[1] == ISS and claims[3] == DEVICE
