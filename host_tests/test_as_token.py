"""Bench AS (issue 10): the token endpoint over real CoAP (aiocoap client,
CBOR, RFC 9200 sec. 5.8) and over CoAPS with the phone's certificate
(python-mbedtls), policies applied (the seeds' Alice, Bob, Trudy),
RFC 9200 error codes on refusal; every minted token verifies in the lock's
own trust core (firmware/trust under CPython) and is bound to the phone's
key (a PoP signature with it checks, with another key fails); pycose and
python-cwt accept them too."""
import asyncio
import datetime
import time
from zoneinfo import ZoneInfo

import cbor2
import pytest

from lockctl import cose_host as ch
from lockctl.authserver import seed, tokens as T
from lockctl.authserver.clients import request_token
from lockctl.authserver.server import Server
from trust import pop
from trust.reasons import Refused
from trust.verifier import TrustedKey, Verifier

TZ = "Europe/Berlin"


def at(text):
    return int(datetime.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(TZ)).timestamp())


MONDAY_10 = at("2026-11-30T10:00:00")


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def bench(tmp_path):
    clock = Clock(MONDAY_10)
    home, keys, lock_keys = seed.bench_home(str(tmp_path / "as"), MONDAY_10, TZ)
    srv = Server(home, coap_port=0, coaps_port=0, clock=clock).start()
    yield home, keys, srv, clock
    srv.close()
    home.close()


def ask(srv, client_id, key, aud, scope):
    return asyncio.run(request_token("127.0.0.1", srv.coap_port, client_id, key, aud, scope))


def verifier(home, device_id):
    return Verifier(device_id, [TrustedKey(home.issuer, home.kid, ch.pub_bytes(home.as_key))])


def pop_ok(tok, key, device_id):
    nonce = bytes(16)
    sig = ch.sign_es256(key, ch.pop_challenge(device_id, nonce, "unlock", tok.hash))
    try:
        pop.check_signature(tok.claims.pop_key, device_id, nonce, sig, "unlock", tok.hash)
        return True
    except Refused:
        return False


def test_alice_gets_a_pop_token_the_lock_verifies(bench):
    home, keys, srv, clock = bench
    code, body = ask(srv, "alice-phone", keys["alice"], "front-door", "unlock status")
    assert code == "2.01", body
    assert body[T.SCOPE] == "unlock status" and body[T.EXPIRES_IN] == 3600
    assert body[T.TOKEN_TYPE] == T.TOKEN_TYPE_POP and body[T.ACE_PROFILE] == T.PROFILE_COAP_DTLS
    lock_pub = bytes(home.store.lock("front-door")["public_key"])
    assert body[T.RS_CNF] == {1: {1: 2, -1: 1, -2: lock_pub[1:33], -3: lock_pub[33:]}}
    tok = verifier(home, "front-door").verify(body[T.ACCESS_TOKEN], now_s=MONDAY_10)
    c = tok.claims
    assert c.sub == "alice" and set(c.scope) == {"unlock", "status"} and c.exp == MONDAY_10 + 3600
    assert c.exi is None and len(c.cti) == 16 and c.cnf_kind is not None
    assert pop_ok(tok, keys["alice"], "front-door")
    assert not pop_ok(tok, keys["bob"], "front-door")
    # The AS computes the same token id as the lock, and recorded it.
    row = home.store.issued(tok.hash)
    assert row["user"] == "alice" and row["client_id"] == "alice-phone" and row["scope"] == "unlock status"
    # Not for another lock.
    with pytest.raises(Refused):
        verifier(home, "car").verify(body[T.ACCESS_TOKEN], now_s=MONDAY_10)


def test_bob_in_office_hours_only(bench):
    home, keys, srv, clock = bench
    clock.t = at("2026-11-30T17:00:00")
    code, body = ask(srv, "bob-phone", keys["bob"], "front-door", "unlock")
    assert code == "2.01"
    tok = verifier(home, "front-door").verify(body[T.ACCESS_TOKEN], now_s=clock.t)
    assert tok.claims.exp == at("2026-11-30T18:00:00")          # ends with the office hours
    assert body[T.EXPIRES_IN] == 3600
    for t in ("2026-11-30T18:00:00", "2026-11-30T07:59:59", "2026-11-28T10:00:00"):
        clock.t = at(t)
        code, body = ask(srv, "bob-phone", keys["bob"], "front-door", "unlock")
        assert code == "4.00" and body[T.ERROR] == T.INVALID_SCOPE, (t, body)
    # Admin is never his: asking for more gives what is allowed, and says so.
    clock.t = MONDAY_10
    code, body = ask(srv, "bob-phone", keys["bob"], "front-door", "admin unlock")
    assert code == "2.01" and body[T.SCOPE] == "unlock"


def test_trudy_trunk_only_for_two_hours_on_a_lock_without_clock(bench):
    home, keys, srv, clock = bench
    v = verifier(home, "car")
    code, body = ask(srv, "trudy-phone", keys["trudy"], "car", "unlock")
    assert code == "4.00" and body[T.ERROR] == T.INVALID_SCOPE
    seqs = []
    for dt in (0, 3600):
        clock.t = MONDAY_10 + dt
        code, body = ask(srv, "trudy-phone", keys["trudy"], "car", "trunk unlock")
        assert code == "2.01" and body[T.SCOPE] == "trunk"
        # The car has no trusted clock: exi, cti = the next sequence number.
        tok = v.verify(body[T.ACCESS_TOKEN], now_s=None, boot=1, uptime_s=5 + dt)
        # Its window (two hours) or the longest lifetime (an hour), the first to end.
        assert tok.claims.exi == min(3600, 2 * 3600 - dt) == body[T.EXPIRES_IN]
        seqs.append(int.from_bytes(tok.claims.cti, "big"))
        assert pop_ok(tok, keys["trudy"], "car")
    assert seqs == [1, 2] and home.store.exi_seq(home.store.lock("car")["id"]) == 2
    clock.t = MONDAY_10 + 2 * 3600
    code, body = ask(srv, "trudy-phone", keys["trudy"], "car", "trunk")
    assert code == "4.00" and body[T.ERROR] == T.INVALID_SCOPE


@pytest.mark.parametrize("change,code,error", [
    (dict(client_id="mallory-phone"), "4.01", T.INVALID_CLIENT),
    (dict(key="other"), "4.01", T.INVALID_CLIENT),          # not alice-phone's registered key
    (dict(aud="back-door"), "4.00", T.INVALID_REQUEST),
    (dict(scope="fly"), "4.00", T.INVALID_SCOPE),
])
def test_refusals_carry_rfc9200_error_codes(bench, change, code, error):
    home, keys, srv, clock = bench
    args = dict(client_id="alice-phone", key=keys["alice"], aud="front-door", scope="unlock")
    args.update(change)
    if args["key"] == "other":
        args["key"] = ch.gen_key()
    got, body = ask(srv, args["client_id"], args["key"], args["aud"], args["scope"])
    assert got == code and body[T.ERROR] == error and isinstance(body[T.ERROR_DESCRIPTION], str)
    assert set(body) == {T.ERROR, T.ERROR_DESCRIPTION}


def test_malformed_requests(bench):
    home, keys, srv, clock = bench
    k = ch.cose_key_ec2(keys["alice"])
    good = {24: "alice-phone", 5: "front-door", 9: "unlock", 4: {1: k}}
    cases = [
        (b"\xff", T.INVALID_REQUEST),
        (cbor2.dumps([1, 2]), T.INVALID_REQUEST),
        (cbor2.dumps({**good, 33: 1}), T.UNSUPPORTED_GRANT_TYPE),
        (cbor2.dumps({k_: v for k_, v in good.items() if k_ != 4}), T.INVALID_REQUEST),
        (cbor2.dumps({**good, 4: {1: {1: 4, -1: b"k" * 16}}}), T.UNSUPPORTED_POP_KEY),
        (cbor2.dumps({**good, 24: 7}), T.INVALID_REQUEST),
        (b"\xa0" * 3000, T.INVALID_REQUEST),
    ]
    for payload, err in cases:
        code, body = T.token_request(home, payload, MONDAY_10)
        assert code == "4.00" and body[T.ERROR] == err, (payload[:20], body)


def _con(payload, mid, token):
    import aiocoap
    m = aiocoap.Message(code=aiocoap.POST, payload=payload)
    m.mtype, m.mid, m.token = aiocoap.CON, mid, token
    m.opt.uri_path = ("token",)
    return m


def test_a_retransmitted_request_mints_once(bench):
    # Same MID from the same peer within EXCHANGE_LIFETIME: the same answer.
    import socket

    import aiocoap
    home, keys, srv, clock = bench
    req = {24: "alice-phone", 5: "front-door", 9: "unlock", 4: {1: ch.cose_key_ec2(keys["alice"])}}
    m = _con(cbor2.dumps(req), 4711, b"t1")
    m.opt.content_format = 19
    wire = m.encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        answers = []
        for _ in range(2):
            s.sendto(wire, ("127.0.0.1", srv.coap_port))
            answers.append(s.recv(4096))
        # An unknown critical option: 4.02, nothing minted.
        m2 = _con(cbor2.dumps(req), 4712, b"t2")
        from aiocoap.optiontypes import OpaqueOption
        m2.opt.add_option(OpaqueOption(65001, b"x"))
        s.sendto(m2.encode(), ("127.0.0.1", srv.coap_port))
        bad = aiocoap.Message.decode(s.recv(4096))
    finally:
        s.close()
    assert answers[0] == answers[1]
    r = aiocoap.Message.decode(answers[0])
    assert r.mtype == aiocoap.ACK and r.mid == 4711 and r.token == b"t1" and int(r.code) == 65
    assert len(home.store.tokens_of("alice")) == 1
    assert int(bad.code) == (4 << 5) | 2 and bad.mid == 4712


def test_lock_resources_refuse_a_phone(bench):
    home, keys, srv, clock = bench
    import aiocoap

    async def get(path):
        ctx = await aiocoap.Context.create_client_context()
        try:
            r = await ctx.request(aiocoap.Message(code=aiocoap.GET,
                                                  uri="coap://127.0.0.1:%d/%s" % (srv.coap_port, path))).response
        finally:
            await ctx.shutdown()
        return int(r.code)

    assert asyncio.run(get("time")) == (4 << 5) | 1          # 4.01: locks only, over the uplink
    assert asyncio.run(get("trl?after=0")) == (4 << 5) | 1
    assert asyncio.run(get("nothing")) == (4 << 5) | 4


def test_independent_libraries_accept_the_as_s_tokens(bench):
    # pycose checks the COSE_Sign1 signature, python-cwt decodes the claims
    # (exp and exi tokens alike): the AS mints standard CWTs.
    import cwt as pycwt
    from cryptography.hazmat.primitives import serialization
    from pycose.keys import EC2Key
    from pycose.keys.curves import P256
    from pycose.messages import Sign1Message
    home, keys, srv, clock = bench
    clock.t = int(time.time())
    pub = ch.pub_bytes(home.as_key)
    for aud, scope in (("front-door", "unlock"), ("car", "trunk")):
        code, body = ask(srv, "alice-phone", keys["alice"], aud, scope)
        assert code == "2.01", body
        msg = Sign1Message.decode(body[T.ACCESS_TOKEN])
        msg.key = EC2Key(crv=P256, x=pub[1:33], y=pub[33:])
        assert msg.verify_signature()
        pem = home.as_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
        claims = pycwt.decode(body[T.ACCESS_TOKEN], pycwt.COSEKey.from_pem(pem, alg="ES256", kid=home.kid))
        assert claims[3] == aud and claims[9] == scope and claims[8] == {1: ch.cose_key_ec2(keys["alice"])}
        assert (40 in claims) == (aud == "car")


def test_a_phone_over_coaps_with_its_certificate(bench):
    # The token endpoint over CoAPS: the phone authenticated by the client
    # certificate the AS issued it, so client_id must be its own.
    from cryptography.hazmat.primitives import serialization

    from lockctl.authserver.clients import CoapsClient, request_token_coaps
    from lockctl.dtls import DtlsError
    home, keys, srv, clock = bench
    certs = {u: home.issue_phone_cert(u + "-phone") for u in ("alice", "bob")}

    def coaps(who, client_id=None, scope="unlock", cert=None):
        return request_token_coaps("127.0.0.1", srv.coaps_port, client_id or who + "-phone", keys[who],
                                   cert or certs[who], home.ca_der, "front-door", scope)

    code, body = coaps("alice", scope="unlock status")
    assert code == "2.01" and body[T.SCOPE] == "unlock status"
    tok = verifier(home, "front-door").verify(body[T.ACCESS_TOKEN], now_s=MONDAY_10)
    assert tok.claims.sub == "alice" and pop_ok(tok, keys["alice"], "front-door")
    # Bob's certificate, Alice's client_id (and Bob's key: req_cnf is checked after).
    code, body = request_token_coaps("127.0.0.1", srv.coaps_port, "alice-phone", keys["bob"], certs["bob"],
                                     home.ca_der, "front-door", "unlock")
    assert code == "4.01" and body[T.ERROR] == T.INVALID_CLIENT
    # A lock's certificate is no phone's: no token; a phone's is no lock's: no uplink.
    der = lambda k: k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    with CoapsClient("127.0.0.1", srv.coaps_port, certs["bob"], der(keys["bob"]), home.ca_der) as c:
        assert c.cbor("GET", "time")[0] == "4.01"
        assert c.cbor("POST", "audit", {"lock": "front-door", "boot": 1, "dropped": 0, "records": []})[0] == "4.01"
    # A certificate issued again: the old one is refused in the handshake's wake.
    old = certs["bob"]
    certs["bob"] = home.issue_phone_cert("bob-phone")
    with pytest.raises(DtlsError):
        coaps("bob", cert=old)
    assert coaps("bob")[0] == "2.01"


def test_lock_certificates_ask_no_tokens(bench):
    from cryptography.hazmat.primitives import serialization

    from lockctl.authserver.clients import CoapsClient, token_request_body
    home, keys, srv, clock = bench
    k = ch.gen_key()
    cert = home.issue_lock_cert("shed", k.public_key(), exi=False)
    kd = k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                         serialization.NoEncryption())
    with CoapsClient("127.0.0.1", srv.coaps_port, cert, kd, home.ca_der) as c:
        code, payload, _ = c.request("POST", "token", token_request_body("alice-phone", keys["alice"],
                                                                         "front-door", "unlock"), 19)
    assert code == "4.01" and cbor2.loads(payload)[T.ERROR] == T.INVALID_CLIENT


def test_phones_over_coaps_only(tmp_path):
    home, keys, lock_keys = seed.bench_home(str(tmp_path / "as"), MONDAY_10, TZ)
    try:
        with Server(home, coap_port=0, coaps_port=0, plain=False) as srv:
            assert srv.coap_port is None and srv.coap_sock is None
    finally:
        home.close()
