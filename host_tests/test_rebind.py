"""Rebinding a lock to another AS (PROFILE sec. 7, seed sec. 5.1): the
record's checks under CPython, and the whole move on the simulator: POST
/rebind with an admin token of the old AS, the old AS's tokens refused and
the new one's accepted across a restart, a non-admin token refused, a
damaged record trusting no AS, and the offline rebind with presence."""
import asyncio
import os

import cbor2
import pytest

from lock import rebind as fw
from lockctl import cose_host as ch
from lockctl import provision as prov
from lockctl.rebind import record
from simlock import SimLock, phone

NEW_ISSUER = "https://as2.example"
NEW_KID = b"as2-key-1"


def new_as():
    key = ch.gen_key()
    cert = prov._cert(key, "as2.example", key, "as2.example", True, 365)
    return key, cert


def rec_bytes(key, cert, **kw):
    return record(kw.pop("issuer", NEW_ISSUER), kw.pop("kid", NEW_KID), key, cert,
                  kw.pop("uri", "coaps://127.0.0.1:5999"), **kw)


# The record, under CPython -------------------------------------------------
def test_record_round_trip(tmp_path):
    key, cert = new_as()
    rec = fw.parse(rec_bytes(key, cert, as_lock_key=bytes(16), hint="coaps://as2.example/token"))
    path = str(tmp_path / "as.cbor")
    assert fw.load(path) is None
    fw.save(path, rec)
    assert fw.load(path) == rec
    assert not os.path.exists(path + ".tmp")


@pytest.mark.parametrize("change, field", [
    ({"issuer": ""}, "issuer"),
    ({"issuer": 7}, "issuer"),
    ({"kid": b""}, "kid"),
    ({"kid": "as2"}, "kid"),
    ({"pub": b"\x04" + bytes(64)}, "pub"),
    ({"pub": b"\x04" + bytes(63)}, "pub"),
    ({"cert": b""}, "cert"),
    ({"cert": bytes(1025)}, "cert"),
    ({"cert": bytes(400)}, "cert"),
    ({"cert": b"\x30\x03\x02\x01\x01junk"}, "cert"),
    ({"uri": "http://as2.example"}, "uri"),
    ({"uri": "coaps://as2.example/audit"}, "uri"),
    ({"as_lock_key": bytes(15)}, "as_lock_key"),
    ({"hint": b"x"}, "hint"),
    ({"extra": 1}, "extra"),
])
def test_bad_records_name_their_field(change, field):
    key, cert = new_as()
    rec = cbor2.loads(rec_bytes(key, cert))
    rec.update(change)
    with pytest.raises(fw.RebindError) as e:
        fw.parse(cbor2.dumps(rec))
    assert field in str(e.value)


@pytest.mark.parametrize("raw", [b"", b"\xa1", cbor2.dumps([1, 2]), cbor2.dumps({}), bytes(2000)])
def test_garbage_is_refused(raw):
    with pytest.raises(fw.RebindError):
        fw.parse(raw)


def test_damaged_record_is_an_error_not_absent(tmp_path):
    key, cert = new_as()
    path = str(tmp_path / "as.cbor")
    fw.save(path, fw.parse(rec_bytes(key, cert)))
    data = bytearray(open(path, "rb").read())
    data[10] ^= 1
    open(path, "wb").write(bytes(data))
    with pytest.raises(fw.RebindError):
        fw.load(path)


# On the simulator ------------------------------------------------------------
def _token(lock, key, as_key, kid, issuer, scope="unlock lock status"):
    return ch.make_sign1(lock.claims({1: issuer, 9: scope}, key), as_key, kid=kid)


async def _req(lock, tok, key, method, path, perm, payload=b""):
    async with phone(lock, tok, key) as p:
        return await p.request(method, path, perm, inline=True, payload=payload)


def _unlock(lock, tok, key):
    return asyncio.run(_req(lock, tok, key, "POST", "lock/unlock", "unlock"))


def _rebind(lock, tok, key, payload):
    return asyncio.run(_req(lock, tok, key, "POST", "rebind", "admin", payload))


def test_rebind_moves_the_lock_to_the_new_as(tmp_path):
    lock = SimLock(tmp_path)
    try:
        admin_key, user_key = ch.gen_key(), ch.gen_key()
        admin = lock.token(admin_key, over={9: "admin"})
        old = lock.token(user_key)
        assert _unlock(lock, old, user_key).ok
        as2, cert2 = new_as()
        payload = rec_bytes(as2, cert2)
        # A token of the old AS without the admin scope cannot move it.
        r = _rebind(lock, old, user_key, payload)
        assert r.code == "4.03", r.describe()
        # A bad record is 4.00 and changes nothing.
        r = _rebind(lock, admin, admin_key, b"\xa1\x61x\x01")
        assert r.code == "4.00", r.describe()
        assert _unlock(lock, old, user_key).ok
        r = _rebind(lock, admin, admin_key, payload)
        assert r.code == "2.04", r.describe()
        lock.wait_for("TRUST: rebound to %s" % NEW_ISSUER)
        new = _token(lock, user_key, as2, NEW_KID, NEW_ISSUER)
        for _ in range(2):
            r = _unlock(lock, old, user_key)
            assert not r.ok and r.code == "4.01", r.describe()
            r = _unlock(lock, new, user_key)
            assert r.ok, r.describe() + "\n" + lock.output()
            # The old AS's admin token cannot move it back.
            assert _rebind(lock, admin, admin_key, payload).code == "4.01"
            lock.restart()
        # The change is in the log (uploaded to the new AS with the rest).
        admin2 = _token(lock, admin_key, as2, NEW_KID, NEW_ISSUER, "admin")
        async def logs():
            out, after = [], 0
            async with phone(lock, admin2, admin_key) as p:
                while True:
                    r = await p.request("GET", "log", "admin", inline=True, query=("after=%d" % after,))
                    recs = cbor2.loads(r.payload)["records"]
                    if not recs:
                        return out
                    out += recs
                    after = recs[-1][0]
        recs = asyncio.run(logs())
        assert any("rebind" in rec and NEW_ISSUER in rec for rec in recs), recs
    finally:
        lock.stop()


def test_damaged_record_trusts_no_as(tmp_path):
    lock = SimLock(tmp_path)
    try:
        admin_key = ch.gen_key()
        admin = lock.token(admin_key, over={9: "admin"})
        as2, cert2 = new_as()
        assert _rebind(lock, admin, admin_key, rec_bytes(as2, cert2)).code == "2.04"
        lock.kill()
        # Flip a byte of as.cbor inside the lock's littlefs image.
        img = bytearray(open(lock.flash, "rb").read())
        i = img.find(NEW_ISSUER.encode())
        assert i > 0
        img[i] ^= 0x20
        open(lock.flash, "wb").write(bytes(img))
        lock.start()
        lock.wait_for("TRUST:")
        assert "trusts no AS" in lock.output()
        key = ch.gen_key()
        for tok in (lock.token(key), _token(lock, key, as2, NEW_KID, NEW_ISSUER)):
            assert not _unlock(lock, tok, key).ok
    finally:
        lock.stop()


def test_offline_rebind_needs_presence(tmp_path):
    lock = SimLock(tmp_path)
    try:
        as2, cert2 = new_as()
        with open(os.path.join(lock.bundle, "rebind.cbor"), "wb") as f:
            f.write(rec_bytes(as2, cert2))
        key = ch.gen_key()
        old, new = lock.token(key), _token(lock, key, as2, NEW_KID, NEW_ISSUER)
        lock.restart()
        assert "hold the pairing button" in lock.output()
        assert _unlock(lock, old, key).ok
        lock.kill()
        lock.start(presence=True)
        lock.wait_for("TRUST: rebound to %s" % NEW_ISSUER)
        assert not os.path.exists(os.path.join(lock.bundle, "rebind.cbor"))
        assert not _unlock(lock, old, key).ok
        assert _unlock(lock, new, key).ok
    finally:
        lock.stop()


def test_the_same_record_again_keeps_revocations(tmp_path):
    """A rebind to the AS already trusted (a retry after a lost 2.04) must
    not bring back what it revoked (found by the attack pass: the second
    rebind cleared the revocations)."""
    lock = SimLock(tmp_path)
    try:
        admin_key, user_key = ch.gen_key(), ch.gen_key()
        admin = lock.token(admin_key, over={9: "admin"})
        as2, cert2 = new_as()
        payload = rec_bytes(as2, cert2)
        assert _rebind(lock, admin, admin_key, payload).code == "2.04"
        admin2 = _token(lock, admin_key, as2, NEW_KID, NEW_ISSUER, "admin")
        user2 = _token(lock, user_key, as2, NEW_KID, NEW_ISSUER)
        assert _unlock(lock, user2, user_key).ok
        body = cbor2.dumps({"ids": [ch.token_id(user2)]})
        r = asyncio.run(_req(lock, admin2, admin_key, "POST", "revoke", "admin", body))
        assert r.code == "2.04", r.describe()
        assert not _unlock(lock, user2, user_key).ok
        n = len(lock.lines)
        assert _rebind(lock, admin2, admin_key, payload).code == "2.04"
        lock.wait_for("tokens and revocations kept", 10, n)
        for _ in range(2):
            assert not _unlock(lock, user2, user_key).ok, lock.output()
            lock.restart()
    finally:
        lock.stop()
