"""Bench AS (issue 10): the locks' uplink (PROFILE sec. 7) through a real
DTLS stack on both ends (python-mbedtls server in the AS, python-mbedtls
client as the lock): mutual certificates (a lock with the certificate the
AS issued it gets through; a self-signed one, another CA's, none, or one
signed by the AS but not on record does not), POST /audit idempotent by
(lock, seq) answering the highest seq stored, GET /trl diffs with
pagination, introspection (RFC 9200 sec. 5.9), GET /time."""
import time

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lockctl import cose_host as ch
from lockctl.authserver import ca, seed, tokens as T
from lockctl.authserver.clients import CoapsClient
from lockctl.dtls import DtlsError
from lockctl.provision import _cert
from lockctl.authserver.server import Server

NOW = int(time.time())


def der_key(k):
    return k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    home, keys, lock_keys = seed.bench_home(str(tmp_path_factory.mktemp("as") / "as"), NOW, "Europe/Berlin")
    home.cfg["trl_page"] = 3
    srv = Server(home, coap_port=0, coaps_port=0).start()
    yield home, keys, lock_keys, srv
    srv.close()
    home.close()


def uplink(home, srv, device_id, lock_keys, cert=None, key=None):
    cert = cert if cert is not None else bytes(home.store.lock(device_id)["cert_der"])
    key = key if key is not None else lock_keys[device_id]
    return CoapsClient("127.0.0.1", srv.coaps_port, cert, der_key(key) if key else None, home.ca_der,
                  handshake_timeout=5, exchange_timeout=10)


def record(seq, granted=True, sub="alice"):
    return [seq, NOW + seq, 3, 1000 * seq, "coaps", "unlock", sub, bytes(32), granted, 0 if granted else 7]


def test_a_lock_with_its_issued_certificate_gets_through(bench):
    home, keys, lock_keys, srv = bench
    with uplink(home, srv, "front-door", lock_keys) as u:
        code, t = u.cbor("GET", "time")
        assert code == "2.05" and isinstance(t, int) and abs(t - time.time()) < 5
        code, payload, cf = u.request("GET", "time")
        assert cf == 60 and cbor2.loads(payload) >= t
        assert "ECDHE-ECDSA" in u.channel.cipher
    assert any(e[0] == "handshake" and e[2] == "front-door" for e in srv.events)


def _refused(home, srv, lock_keys, cert, key):
    with pytest.raises(DtlsError):
        with uplink(home, srv, "front-door", lock_keys, cert=cert, key=key) as u:
            # A handshake the AS ends right after (certificate not on record)
            # leaves the client no answer.
            u.coap.exchange_timeout = 3
            code, _ = u.cbor("GET", "time")
            raise DtlsError("answered %s" % code)


def test_foreign_self_signed_and_missing_certificates_are_refused(bench):
    home, keys, lock_keys, srv = bench
    k = ch.gen_key()
    self_signed = _cert(k, "front-door", k, "front-door", False, 30).public_bytes(serialization.Encoding.DER)
    other_ca = ch.gen_key()
    foreign = _cert(k, "front-door", other_ca, "ACE AS https://as.example", False, 30).public_bytes(
        serialization.Encoding.DER)
    n = len(srv.events)
    _refused(home, srv, lock_keys, self_signed, k)
    _refused(home, srv, lock_keys, foreign, k)
    _refused(home, srv, lock_keys, b"", None)          # no client certificate at all
    ev = list(srv.events)[n:]
    assert sum(1 for e in ev if e[0] == "fail") >= 3, ev
    assert not any(e[0] == "handshake" for e in ev)
    # Signed by the AS key but never recorded (or replaced since): refused
    # after the handshake, before any request.
    stray = ca.issue_lock_cert(home.as_key, home.issuer, "front-door", k.public_key())
    n = len(srv.events)
    _refused(home, srv, lock_keys, stray, k)
    assert any(e[0] == "refused" for e in list(srv.events)[n:])
    assert not any(e[0] == "request" for e in list(srv.events)[n:])


def test_a_replaced_certificate_is_refused(bench, tmp_path):
    home, keys, lock_keys, srv = bench
    old = bytes(home.store.lock("car")["cert_der"])
    k = ch.gen_key()
    home.issue_lock_cert("car", k.public_key())
    try:
        _refused(home, srv, lock_keys, old, lock_keys["car"])
        with uplink(home, srv, "car", {"car": k}) as u:
            assert u.cbor("GET", "time")[0] == "2.05"
    finally:
        home.store.replace_lock_cert("car", ch.pub_bytes(lock_keys["car"]), old,
                                     "%x" % x509.load_der_x509_certificate(old).serial_number)


def test_audit_is_idempotent_by_lock_and_seq(bench):
    home, keys, lock_keys, srv = bench
    with uplink(home, srv, "front-door", lock_keys) as u:
        up = lambda recs, dropped=0: u.cbor("POST", "audit", {"lock": "front-door", "boot": 3,
                                                               "dropped": dropped, "records": recs})
        assert up([]) == ("2.04", {"seq": 0})
        assert up([record(1), record(2), record(3, False, "trudy")]) == ("2.04", {"seq": 3})
        assert up([record(2), record(3), record(4)]) == ("2.04", {"seq": 4})       # a resend overlaps
        assert up([record(1)]) == ("2.04", {"seq": 4})
        # A changed copy of a stored seq does not replace the first.
        changed = record(2, False, "mallory")
        assert up([changed, record(6)], dropped=1) == ("2.04", {"seq": 6})         # 5 was lost on the lock
        # Records wrapped in byte strings are taken too.
        assert up([cbor2.dumps(record(7))]) == ("2.04", {"seq": 7})
        # Only its own records.
        code, _ = u.cbor("POST", "audit", {"lock": "car", "boot": 1, "dropped": 0, "records": [record(8)]})
        assert code == "4.03"
        for bad in ({"lock": "front-door", "records": [["x"]]}, {"lock": "front-door"}, [1, 2],
                    {"lock": "front-door", "boot": -1, "dropped": 0, "records": []}):
            assert u.cbor("POST", "audit", bad)[0] == "4.00", bad
    rows = {r["seq"]: r for r in home.store.audit("front-door")}
    assert sorted(rows) == [1, 2, 3, 4, 6, 7]
    assert rows[2]["sub"] == "alice" and rows[2]["granted"] is True
    assert rows[3]["sub"] == "trudy" and rows[3]["granted"] is False and rows[3]["reason"] == 7
    assert cbor2.loads(rows[4]["raw"]) == record(4) and rows[4]["wall_s"] == NOW + 4
    assert home.store.audit("car") == []
    ups = home.store.uploads("front-door")
    assert [u_["stored"] for u_ in ups][:5] == [0, 3, 1, 0, 1] and ups[4]["dropped"] == 1


def test_trl_is_a_diff_in_pages(bench):
    home, keys, lock_keys, srv = bench
    lid = home.store.lock("front-door")["id"]
    car = home.store.lock("car")["id"]
    ids = [bytes([i]) * 32 for i in range(1, 8)]
    for i in ids[:4]:
        home.store.revoke(lid, token_id=i)
    home.store.revoke(car, token_id=bytes([0xCC]) * 32)           # another lock's: never shown here
    home.store.revoke(lid, cti=b"\x05")
    with uplink(home, srv, "front-door", lock_keys) as u:
        def page(after):
            code, body = u.cbor("GET", "trl?after=%d" % after)
            assert code == "2.05" and set(body) == {"pos", "ids", "ctis", "more"}
            return body
        got_ids, got_ctis, pos, n = [], [], 0, 0
        while True:
            b = page(pos)
            got_ids += b["ids"]
            got_ctis += b["ctis"]
            assert len(b["ids"]) + len(b["ctis"]) <= 3
            pos = b["pos"]
            n += 1
            if not b["more"]:
                break
        assert got_ids == ids[:4] and got_ctis == [b"\x05"] and n == 2
        # Nothing new: the same position, nothing more.
        assert page(pos) == {"pos": pos, "ids": [], "ctis": [], "more": False}
        for i in ids[4:]:
            home.store.revoke(lid, token_id=i)
        assert home.store.revoke(lid, token_id=ids[0]) is None        # already there: no new position
        b = page(pos)
        assert b["ids"] == ids[4:] and b["more"] is False and b["pos"] > pos
        assert page(0)["ids"] == ids[:3]
        assert u.cbor("GET", "trl")[1]["ids"] == ids[:3]             # no after: from the start
        assert u.cbor("GET", "trl?after=x")[0] == "4.00"


def test_introspection_for_the_lock_s_own_tokens(bench):
    home, keys, lock_keys, srv = bench
    now = int(time.time())
    code, body = T.token_request(home, cbor2.dumps({24: "alice-phone", 5: "front-door", 9: "unlock status",
                                                    4: {1: ch.cose_key_ec2(keys["alice"])}}), now)
    assert code == "2.01"
    tok = body[T.ACCESS_TOKEN]
    tid = ch.token_id(tok)
    code, car_body = T.token_request(home, cbor2.dumps({24: "alice-phone", 5: "car", 9: "unlock",
                                                        4: {1: ch.cose_key_ec2(keys["alice"])}}), now)
    with uplink(home, srv, "front-door", lock_keys) as u:
        def ask(t):
            code, payload, cf = u.request("POST", "introspect", cbor2.dumps({T.TOKEN: t}), 19)
            assert code == "2.01" and cf == 19
            return cbor2.loads(payload)
        for form in (tok, tid):
            r = ask(form)
            assert r[T.ACTIVE] is True and r[T.SCOPE] == "unlock status" and r[2] == "alice"
            assert r[3] == "front-door" and r[T.CLIENT_ID] == "alice-phone" and r[4] == now + 3600
            assert r[8] == {1: ch.cose_key_ec2(keys["alice"])}
        assert ask(car_body[T.ACCESS_TOKEN]) == {T.ACTIVE: False}          # another lock's token
        assert ask(bytes(32)) == {T.ACTIVE: False}
        assert ask(b"\xd2\x84garbage") == {T.ACTIVE: False}
        code, payload, _ = u.request("POST", "introspect", cbor2.dumps({1: "x"}), 19)
        assert code == "4.00" and cbor2.loads(payload)[T.ERROR] == T.INVALID_REQUEST
        home.store.revoke(home.store.lock("front-door")["id"], token_id=tid)
        assert ask(tok) == {T.ACTIVE: False}
    assert u.channel.sock is None


def test_introspection_asks_the_policies_now(bench):
    # An online check follows the policies as they are, not as they were
    # when the token was minted: Bob's rule removed, his token is inactive.
    home, keys, lock_keys, srv = bench
    import datetime
    from zoneinfo import ZoneInfo
    mon = int(datetime.datetime(2026, 11, 30, 10, tzinfo=ZoneInfo("Europe/Berlin")).timestamp())
    code, body = T.token_request(home, cbor2.dumps({24: "bob-phone", 5: "front-door", 9: "unlock",
                                                    4: {1: ch.cose_key_ec2(keys["bob"])}}), mon)
    assert code == "2.01"
    lock = home.store.lock("front-door")
    req = cbor2.dumps({T.TOKEN: body[T.ACCESS_TOKEN]})
    assert T.introspect(home, lock, req, mon + 60)[1][T.ACTIVE] is True
    assert T.introspect(home, lock, req, mon + 3600)[1] == {T.ACTIVE: False}     # expired
    rule = [r for r in home.store.rules("bob", "front-door") if r.permission == "unlock"][0]
    home.store.remove_policy(rule.id)
    try:
        assert T.introspect(home, lock, req, mon + 60)[1] == {T.ACTIVE: False}
    finally:
        home.store.add_policy("bob", "front-door", rule)


def test_trl_pages_fit_the_lock_s_answer_and_carry_exi_floors(tmp_path):
    home, keys, lock_keys = seed.bench_home(str(tmp_path / "as"), NOW, "UTC")
    srv = Server(home, coap_port=0, coaps_port=0).start()
    try:
        car = home.store.lock("car")["id"]
        long_ctis = [bytes([i]) * 64 for i in range(1, 21)]          # 20 x 66 bytes: not one answer
        for c in long_ctis:
            home.store.revoke(car, cti=c)
        for _ in range(3):
            home.store.next_exi_seq(car)
        assert home.store.revoke(car, exi_floor=3) is not None
        assert home.store.revoke(car, exi_floor=2) is None             # below a floor already given
        with uplink(home, srv, "car", lock_keys) as u:
            pos, got, floors = 0, [], []
            while True:
                code, payload, _ = u.request("GET", "trl?after=%d" % pos)
                assert code == "2.05" and len(payload) <= 1024, len(payload)
                b = cbor2.loads(payload)
                got += b["ctis"]
                if "exi" in b:
                    floors.append(b["exi"])
                pos = b["pos"]
                if not b["more"]:
                    break
        assert got == long_ctis and floors == [{home.issuer: 3}]
        # An exi token numbered at or below the floor is inactive.
        code, body = T.token_request(home, cbor2.dumps({24: "alice-phone", 5: "car", 9: "unlock",
                                                        4: {1: ch.cose_key_ec2(keys["alice"])}}), NOW + 1)
        lock = home.store.lock("car")
        req = cbor2.dumps({T.TOKEN: body[T.ACCESS_TOKEN]})
        assert T.introspect(home, lock, req, NOW + 2)[1][T.ACTIVE] is True      # number 4
        home.store.revoke(car, exi_floor=4)
        assert T.introspect(home, lock, req, NOW + 2)[1] == {T.ACTIVE: False}
    finally:
        srv.close()
        home.close()


def test_the_ca_registers_only_bundles_it_issued(tmp_path):
    from lockctl.authserver.home import HomeError
    from lockctl.provision import provision
    home, keys, lock_keys = seed.bench_home(str(tmp_path / "as"), NOW, "UTC", locks=())
    try:
        # A bundle of its own (lockctl as lock add --provision): registered.
        mine = str(tmp_path / "mine")
        cfg = home.provision_lock(mine, "door-1", coaps_port=5999)
        assert home.store.lock("door-1")["exi"] is True                  # clock unsynced by default
        with open(str(tmp_path / "mine" / "lock-cert.der"), "rb") as f:
            assert f.read() == bytes(home.store.lock("door-1")["cert_der"])
        assert home.import_bundle(mine) == "door-1"
        # A bundle another AS provisioned: refused.
        theirs = str(tmp_path / "theirs")
        provision(theirs, "door-2", say=lambda *a: None)
        with pytest.raises(HomeError, match="does not trust this AS"):
            home.import_bundle(theirs)
        # Trusting this AS's key, but with a certificate it did not issue.
        with open(tmp_path / "as" / "as-key.pem", "rb") as f:
            pem = f.read()
        forged = str(tmp_path / "forged")
        provision(forged, "door-3", issuer="https://other.example", as_key_pem=pem, say=lambda *a: None)
        with pytest.raises(HomeError, match="certificate refused"):
            home.import_bundle(forged)
        # A raw certificate for a key that is not P-256: refused by the CA.
        from cryptography.hazmat.primitives.asymmetric import ed25519
        with pytest.raises(ca.CertError):
            ca.issue_lock_cert(home.as_key, home.issuer, "x", ed25519.Ed25519PrivateKey.generate().public_key())
        assert cfg["device_id"] == "door-1"
    finally:
        home.close()


def test_a_lock_provisioned_anew_starts_a_new_audit_epoch(tmp_path):
    # A new bundle means a new flash: the lock's seq starts over at 1. The
    # AS keeps the old records and answers for the new log only (else the
    # lock would refuse an acknowledgment above every seq it issued).
    home, keys, lock_keys = seed.bench_home(str(tmp_path / "as"), NOW, "UTC", locks=())
    try:
        home.provision_lock(str(tmp_path / "b1"), "door-1")
        lid = home.store.lock("door-1")["id"]
        cols = lambda seq: {"seq": seq, "raw": cbor2.dumps(record(seq)), "sub": "alice"}
        assert home.store.store_audit(lid, 1, 0, [cols(s) for s in (1, 2, 3)]) == (3, 3)
        home.import_bundle(str(tmp_path / "b1"))                       # the same bundle: same log
        assert home.store.store_audit(lid, 1, 0, [cols(3)]) == (3, 0)
        home.provision_lock(str(tmp_path / "b2"), "door-1", force=True)
        assert home.store.lock("door-1")["log_epoch"] == 2
        assert home.store.store_audit(lid, 1, 0, [cols(1)]) == (1, 1)
        rows = home.store.audit("door-1")
        assert [(r["log_epoch"], r["seq"]) for r in rows] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    finally:
        home.close()


def test_a_log_that_starts_over_opens_a_new_epoch(bench):
    """A lock whose log starts over at seq 1 (a wiped flash) names another
    log identity: its records are stored in a new epoch, not dropped as
    copies of the old log's (second attack pass: they were dropped, and the
    AS acknowledged them)."""
    home, keys, lock_keys, srv = bench
    with uplink(home, srv, "car", lock_keys) as u:
        up = lambda log, recs: u.cbor("POST", "audit", {"log": log, "lock": "car", "boot": 1, "dropped": 0,
                                                        "records": recs})
        assert up(b"A" * 8, [record(s) for s in range(1, 11)]) == ("2.04", {"seq": 10})
        assert up(b"A" * 8, [record(3)]) == ("2.04", {"seq": 10})            # the same log: a resend
        assert up(b"B" * 8, [record(s) for s in range(1, 5)]) == ("2.04", {"seq": 4})
        assert u.cbor("POST", "audit", {"log": "text", "lock": "car", "records": []})[0] == "4.00"
    rows = home.store.audit("car", limit=100)
    assert len(rows) == 14 and sorted({r["log_epoch"] for r in rows}) == [1, 2]
