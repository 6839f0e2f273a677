"""The lock killed (SIGKILL) and started again keeps its decision log and
seq, its exi/cti replay state, its stored tokens and their revocation
state; an admin token reads the log over CoAP."""
import asyncio
import time

import cbor2

from lockctl import cose_host as ch
from simlock import SimLock, act, upload, upload_and


def _log(lock, admin_tok, admin_key, after=0):
    out = asyncio.run(act(lock, admin_tok, admin_key, "log", query=("after=%d" % after,)))
    assert out.code == "2.05", out.describe()
    return cbor2.loads(out.payload)


def test_restart_keeps_log_seq_replay_and_revocation(tmp_path):
    # Room for the four tokens below (the default store holds 4).
    lock = SimLock(tmp_path, relock_ms=500, config={"lockout": {"max_failures": 1000}, "token_store": 5})
    try:
        admin_key, user_key, victim_key, exi_key = ch.gen_key(), ch.gen_key(), ch.gen_key(), ch.gen_key()
        admin = lock.token(admin_key, {9: "admin status"})
        user = lock.token(user_key, {9: "unlock lock"})
        victim = lock.token(victim_key, {9: "unlock", 7: b"victim-cti"})
        short_exi = lock.token(exi_key, {4: None, 7: b"exi-cti", 40: 2, 9: "unlock"})
        assert asyncio.run(upload(lock, admin, admin_key)).code == "2.01"
        assert asyncio.run(upload_and(lock, user, user_key, "unlock")).code == "2.04"
        assert asyncio.run(upload_and(lock, victim, victim_key, "unlock")).code == "2.04"
        assert asyncio.run(upload_and(lock, short_exi, exi_key, "unlock")).code == "2.04"
        # Revoke the victim's token by cti, as an admin.
        out = asyncio.run(act(lock, admin, admin_key, "revoke",
                               payload=cbor2.dumps({"ctis": [b"victim-cti"]})))
        assert out.code == "2.04", out.describe()
        assert asyncio.run(upload_and(lock, victim, victim_key, "unlock")).code == "4.01"
        before = _log(lock, admin, admin_key)
        seq_before = before["next_seq"]
        assert before["boot"] == 1 and seq_before > 5
        time.sleep(2.2)  # the exi token's 2 s run out

        lock.restart()   # SIGKILL, then a fresh process on the same flash image

        after = _log(lock, admin, admin_key)
        assert after["boot"] == 2
        assert after["next_seq"] > seq_before           # seq persisted and increasing
        recs = after["records"]
        assert recs and recs[0][0] == 1                 # the first record survived
        seqs = [r[0] for r in recs]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # Stored token restored: the user opens without uploading again.
        assert asyncio.run(act(lock, user, user_key, "unlock")).code == "2.04"
        # Revocation survived, for the stored and the re-posted token.
        up = asyncio.run(upload(lock, victim, victim_key))
        assert up.code == "4.01" and up.error == 1
        # exi replay state survived: the expired exi token stays refused.
        up = asyncio.run(upload(lock, short_exi, exi_key))
        assert up.code == "4.01" and up.error == 1
        # Records written after the restart carry the new boot counter.
        last = _log(lock, admin, admin_key, after["next_seq"] - 1)["records"]
        assert all(r[2] == 2 for r in last)
    finally:
        lock.stop()
