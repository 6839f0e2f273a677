"""Online checks (issue 10; PROFILE sec. 7; RFC 9200 sec. 5.9): a permission
configured with "online_check" asks the AS (POST /introspect over the
lock's uplink, lock/uplink.py) after every local check, and never waits
for it: no fresh answer means introspection_pending (5.03, Max-Age 1, a
fresh cnonce; the phone asks again), the AS unreachable means the
permission's offline policy (as_unreachable, or a grant logged as
offline_allowed).

On the simulator (32-bit, the ESP32's heap, firmware frozen) against the
test AS of test_uplink_e2e.py given a /introspect here, over plain CoAP
and CoAPS; once against the bench AS (`lockctl as serve`); and the pure
parts (configuration, the answer check, the table) under CPython and on
MicroPython.
"""
import asyncio
import json
import os
import re
import subprocess
import threading
import time

import cbor2
import pytest

from coap import message as cm
from lockctl import cose_host as ch
from simlock import RawClient, SimLock, free_udp_port, upload_and
from test_uplink_e2e import _as_for, wait
from trust import reasons

UNLOCK_ONLINE = [{"path": "lock/unlock", "online_check": "deny"},
                 {"path": "lock/lock", "online_check": "allow"}]


class Introspection:
    """POST /introspect for a test_uplink_e2e.TestAS, as the bench AS
    answers it (tools/lockctl/authserver/tokens.py): `answers` token id ->
    answer map (unknown ids: {10: False}); `asked` the token ids asked, in
    order; `silent`: no answer at all; `code`: the answer's code."""

    def __init__(self, asrv):
        import aiocoap
        self.answers = {}
        self.asked = []
        self.bad = []
        self.silent = False
        self.code = aiocoap.CREATED
        inner = asrv._answer

        def answer(data):
            try:
                req = aiocoap.Message.decode(data)
            except Exception:
                return inner(data)
            if req.mtype != aiocoap.CON or tuple(req.opt.uri_path) != ("introspect",):
                return inner(data)
            body = cbor2.loads(req.payload)
            # The lock's request: {11: its 32-byte token id}, ace+cbor.
            if (req.code != aiocoap.POST or req.opt.content_format != 19 or not isinstance(body, dict)
                    or set(body) != {11} or len(body[11]) != 32):
                self.bad.append((req.code, req.opt.content_format, body))
            tid = body.get(11) if isinstance(body, dict) else None
            self.asked.append(tid)
            if self.silent:
                return None
            resp = aiocoap.Message(code=self.code, payload=cbor2.dumps(self.answers.get(tid, {10: False})))
            resp.opt.content_format = 19
            resp.mtype = aiocoap.ACK
            resp.mid = req.mid
            resp.token = req.token
            return resp.encode()
        asrv._answer = answer


def active(lock, scope):
    return {10: True, 1: lock.issuer, 3: lock.device_id, 9: scope, 2: "phone"}


def nonce_of(c):
    """A cnonce: the 4.01's hints for a request that presents nothing
    (token_missing: summarized, not counted)."""
    resp, _ = c.request(cm.GET, "lock")
    assert resp.code == cm.UNAUTHORIZED
    return cbor2.loads(resp.payload)[39]


def prove(lock, c, key, tok, nonce, path="lock/unlock", perm="unlock", code=cm.POST, inline=False):
    proof = ch.pop_proof(key, lock.device_id, nonce, perm, ch.token_id(tok))
    opts = ([(cm.BEARER, tok)] if inline else []) + [(cm.POP, proof)]
    resp, _ = c.request(code, path, opts)
    return resp


def upload(lock, c, tok):
    resp, _ = c.request(cm.POST, "authz-info", [(cm.CONTENT_FORMAT, b"\x3d")], tok)
    assert resp.code == cm.CREATED, cm.code_str(resp.code)
    return cbor2.loads(resp.payload)[39]


def logged(asrv, timeout=30, lock=None, n=1, **want):
    """Records at the AS with these fields (reason, permission, granted),
    once there are `n` of them."""
    cols = {"permission": 5, "granted": 8, "reason": 9}

    def match():
        with asrv.lock:
            recs = list(asrv.stored.values())
        return [r for r in recs if all(r[cols[k]] == v for k, v in want.items())]
    wait(lambda: len(match()) >= n, timeout, "a record %s at the AS" % (want,), lock)
    return match()


def pending(resp):
    """A 5.03 introspection_pending: Max-Age 1, a fresh cnonce."""
    assert resp.code == cm.SERVICE_UNAVAILABLE, cm.code_str(resp.code)
    assert cm.decode_uint(resp.get(cm.MAX_AGE)) == 1
    assert cm.decode_uint(resp.get(cm.CONTENT_FORMAT)) == 19
    return cbor2.loads(resp.payload)[39]


@pytest.mark.parametrize("dtls", [False, True], ids=["coap", "coaps"])
def test_granted_after_the_pending_round(tmp_path, dtls):
    with _as_for(tmp_path, dtls, resources=UNLOCK_ONLINE) as (asrv, lock):
        intro = Introspection(asrv)
        lock.wait_for("uplink: the AS answers", 30)
        key = ch.gen_key()
        tok = lock.token(key)
        tid = ch.token_id(tok)
        intro.answers[tid] = active(lock, "unlock lock status")
        c = RawClient(lock.port)
        try:
            nonce = upload(lock, c, tok)
            t0 = time.time()
            nonce = pending(prove(lock, c, key, tok, nonce))
            wait(lambda: tid in intro.asked, 15, "the lock asking the AS", lock)
            asked_s = time.time() - t0
            time.sleep(1.0)                       # Max-Age
            assert prove(lock, c, key, tok, nonce).code == cm.CHANGED
            # Fresh for uplink.introspect_s: the next one is not asked again.
            assert prove(lock, c, key, tok, nonce_of(c)).code == cm.CHANGED
            assert intro.asked == [tid] and not intro.bad
            # A permission without online_check asks nobody.
            assert prove(lock, c, key, tok, nonce_of(c), "lock", "status", cm.GET).code == cm.CONTENT
            assert intro.asked == [tid]
        finally:
            c.close()
        # lockctl's phone waits Max-Age out by itself and says so.
        key2 = ch.gen_key()
        tok2 = lock.token(key2)
        intro.answers[ch.token_id(tok2)] = active(lock, "unlock")
        out = asyncio.run(upload_and(lock, tok2, key2, "unlock"))
        assert out.code == "2.04" and out.waits >= 1, (out.code, out.waits)
        recs = logged(asrv, lock=lock, n=2, reason=reasons.INTROSPECTION_PENDING, permission="unlock")
        assert all(r[8] is False for r in recs)
        logged(asrv, lock=lock, n=3, reason=reasons.OK, permission="unlock", granted=True)
        print("\n%s: the lock asked the AS %.0f ms after the first request" % (asrv.scheme, asked_s * 1000))


def test_inactive_or_narrowed_at_the_as_is_denied(tmp_path):
    with _as_for(tmp_path, False, resources=UNLOCK_ONLINE) as (asrv, lock):
        intro = Introspection(asrv)
        lock.wait_for("uplink: the AS answers", 30)
        c = RawClient(lock.port)
        try:
            key = ch.gen_key()
            gone = lock.token(key)             # revoked at the AS, or no policy allows it now
            nonce = pending(prove(lock, c, key, gone, upload(lock, c, gone)))
            wait(lambda: intro.asked, 15, "the lock asking the AS", lock)
            time.sleep(1.0)
            resp = prove(lock, c, key, gone, nonce)
            assert resp.code == cm.UNAUTHORIZED and cm.decode_uint(resp.get(cm.ERROR)) == 1
            key2 = ch.gen_key()
            narrow = lock.token(key2)          # active, but the AS allows only status now
            intro.answers[ch.token_id(narrow)] = active(lock, "status lock")
            nonce = pending(prove(lock, c, key2, narrow, upload(lock, c, narrow)))
            wait(lambda: len(intro.asked) == 2, 15, "the lock asking the AS", lock)
            time.sleep(1.0)
            resp = prove(lock, c, key2, narrow, nonce)
            assert resp.code == cm.FORBIDDEN and cm.decode_uint(resp.get(cm.ERROR)) == 2
            # "lock" is still in the AS's scope for it: granted.
            assert prove(lock, c, key2, narrow, nonce_of(c), "lock/lock", "lock").code == cm.CHANGED
        finally:
            c.close()
        logged(asrv, lock=lock, reason=reasons.INTROSPECTION_INACTIVE, permission="unlock", granted=False)
        logged(asrv, lock=lock, reason=reasons.SCOPE_INSUFFICIENT, permission="unlock", granted=False)


def test_as_down_offline_policies(tmp_path):
    # Nothing listens at the AS's address: the first round finds no AS.
    with _as_for(tmp_path, False, start_as=False, resources=UNLOCK_ONLINE) as (asrv, lock):
        lock.wait_for("retrying with backoff", 40)
        key = ch.gen_key()
        tok = lock.token(key)
        c = RawClient(lock.port)
        try:
            t0 = time.perf_counter()
            resp = prove(lock, c, key, tok, upload(lock, c, tok))
            took = time.perf_counter() - t0
            # "deny": as_unreachable, 5.03 without Max-Age (nothing to wait for).
            assert resp.code == cm.SERVICE_UNAVAILABLE and resp.get(cm.MAX_AGE) is None
            # "allow": granted without the AS.
            assert prove(lock, c, key, tok, nonce_of(c), "lock/lock", "lock").code == cm.CHANGED
            # A permission without online_check is unaffected.
            assert prove(lock, c, key, tok, nonce_of(c), "lock", "status", cm.GET).code == cm.CONTENT
        finally:
            c.close()
        out = asyncio.run(upload_and(lock, tok, key, "unlock"))
        assert out.code == "5.03" and out.waits == 0        # no Max-Age: lockctl does not wait
        asrv.__enter__()                                    # the AS comes back: the log arrives
        Introspection(asrv)
        logged(asrv, 60, lock, reason=reasons.AS_UNREACHABLE, permission="unlock", granted=False)
        logged(asrv, 60, lock, reason=reasons.OFFLINE_ALLOWED, permission="lock", granted=True)
        print("\nAS down: as_unreachable answered in %.1f ms" % (took * 1000))


def test_the_as_silent_then_the_offline_policy(tmp_path):
    # The AS answers the other jobs but not /introspect: pending for 3 s at
    # most, then the offline policy; nothing waits.
    with _as_for(tmp_path, False, resources=UNLOCK_ONLINE) as (asrv, lock):
        lock.wait_for("uplink: the AS answers", 20)
        intro = Introspection(asrv)
        intro.silent = True
        key = ch.gen_key()
        tok = lock.token(key)
        c = RawClient(lock.port)
        codes = []
        try:
            nonce = upload(lock, c, tok)
            t0 = time.time()
            while time.time() - t0 < 6:
                resp = prove(lock, c, key, tok, nonce)
                codes.append(resp.get(cm.MAX_AGE) is not None)
                nonce = cbor2.loads(resp.payload)[39] if resp.payload else nonce_of(c)
                time.sleep(0.5)
        finally:
            c.close()
        assert codes[0] and not codes[-1], codes      # pending first, as_unreachable at the end


def test_pending_rounds_are_not_counted_and_the_table_is_bounded(tmp_path):
    # The lockout refuses a peer after 2 counted failures; 6 tokens' pending
    # rounds (one peer) lock nobody out. The table holds 2 answers: the
    # oldest goes for a third token and is asked again.
    with _as_for(tmp_path, False, resources=UNLOCK_ONLINE, uplink={"introspect_entries": 2},
                 lockout={"max_failures": 2, "window_s": 60, "penalty_s": 30}) as (asrv, lock):
        intro = Introspection(asrv)
        lock.wait_for("uplink: the AS answers", 30)
        key = ch.gen_key()
        toks = [lock.token(key) for _ in range(6)]
        for t in toks:
            intro.answers[ch.token_id(t)] = active(lock, "unlock")
        c = RawClient(lock.port)
        try:
            nonce = nonce_of(c)
            for i, t in enumerate(toks):
                nonce = pending(prove(lock, c, key, t, nonce, inline=True))
                wait(lambda: len(intro.asked) == i + 1, 15, "the lock asking the AS", lock)
            assert intro.asked == [ch.token_id(t) for t in toks]
            # The last two are answered and kept: granted at once.
            for t in toks[-2:]:
                resp = prove(lock, c, key, t, nonce, inline=True)
                assert resp.code == cm.CHANGED, cm.code_str(resp.code)
                nonce = nonce_of(c)
            # The first was pushed out: asked again (pending), then granted.
            nonce = pending(prove(lock, c, key, toks[0], nonce, inline=True))
            wait(lambda: len(intro.asked) == 7, 15, "the lock asking the AS again", lock)
            time.sleep(1.0)
            assert prove(lock, c, key, toks[0], nonce, inline=True).code == cm.CHANGED
            assert intro.asked[-1] == ch.token_id(toks[0])
        finally:
            c.close()


# Pure parts ---------------------------------------------------------------

def test_configuration():
    from lock import config
    rs = {r.path: r for r in config.resources([{"path": "lock/unlock", "online_check": "deny"},
                                               {"path": "trunk", "permission": "trunk", "online_check": "allow"},
                                               {"path": "rebind", "online_check": "allow"}])}
    assert rs["lock/unlock"].online_check == "deny" and rs["trunk"].online_check == "allow"
    assert rs["lock"].online_check is None and rs["lock/lock"].online_check is None
    # The check belongs to the permission: every admin resource has it.
    assert rs["log"].online_check == rs["revoke"].online_check == "allow"
    assert config.resources([{"path": "lock/unlock", "online_check": None}])[1].online_check is None
    for bad in ([{"path": "nothing-here", "online_check": "deny"}],
                [{"path": "lock/unlock", "online_check": "yes"}],
                [{"path": "lock/unlock", "online_check": True}],
                [{"path": "log", "online_check": "deny"}, {"path": "rebind", "online_check": "allow"}],
                [{"path": "x", "permission": "x", "online_check": "Deny"}],
                [{"path": "lock/unlock", "online_check": "deny", "method": "GET"}],
                "lock/unlock", [3]):
        with pytest.raises(config.ConfigError):
            config.resources(bad)
    u = config.uplink({})
    assert u.introspect_ms == 60000 and u.introspect_entries == 8
    u = config.uplink({"introspect_s": 5, "introspect_entries": 32})
    assert u.introspect_ms == 5000 and u.introspect_entries == 32
    for bad in ({"introspect_s": 0}, {"introspect_s": "60"}, {"introspect_entries": 0},
                {"introspect_entries": 33}, {"introspect_entries": True}, {"introspect_entries": 2.0}):
        with pytest.raises(config.ConfigError):
            config.uplink(bad)


def test_introspect_request_bytes():
    import aiocoap
    from lock import uplink
    buf = bytearray(1152)
    tid = bytes(range(32))
    n = uplink.put_introspect(buf, 0x0102, b"\x0a\x0b", tid)
    msg = aiocoap.Message.decode(bytes(buf[:n]))
    assert msg.code == aiocoap.POST and msg.opt.uri_path == ("introspect",) and msg.opt.content_format == 19
    assert msg.payload == cbor2.dumps({11: tid}) and len(msg.payload) == 36


@pytest.mark.parametrize("answer,want", [
    ({10: False}, (False, None)),
    ({10: True}, (True, None)),                                  # no scope: the token's own
    ({10: True, 9: "unlock status", 3: "lock-1", 8: {1: {1: 2, -1: 1}}}, (True, "unlock status")),
    ({10: True, 9: "unlock", 3: ["x", "lock-1"]}, (True, "unlock")),
    ({10: False, 9: 5}, (False, None)),                          # inactive: nothing else matters
])
def test_introspect_answer(answer, want):
    from lock import uplink
    assert uplink.introspect_answer(cbor2.dumps(answer), "lock-1") == want


@pytest.mark.parametrize("answer", [
    {}, {10: 1}, {10: "true"}, {10: True, 9: b"unlock"}, {10: True, 9: "x" * 256}, {10: True, 3: "lock-2"},
    {10: True, 3: ["lock-2"]}, [True], True,
])
def test_introspect_answer_refused(answer):
    from lock import uplink
    with pytest.raises(uplink.Refusal):
        uplink.introspect_answer(cbor2.dumps(answer), "lock-1")
    with pytest.raises(uplink.Refusal):
        uplink.introspect_answer(b"\xa1\x0a", "lock-1")


def test_scope_has():
    from lock.authz import scope_has
    assert scope_has("unlock status", "unlock") and scope_has("unlock status", "status")
    assert not scope_has("unlock status", "lock") and not scope_has("unlocks", "unlock")
    assert not scope_has("", "lock") and scope_has("lock unlock", "unlock")


class _Clock:
    def __init__(self):
        self.t = 1000

    def uptime_ms(self):
        return self.t


class _Authz:
    introspection = None


class _Log:
    dropped = -1

    def pending(self):
        return False


def _uplink(entries=2, fresh_s=60):
    from lock import config, uplink
    ucfg = config.uplink({"uri": "coap://127.0.0.1", "introspect_s": fresh_s, "introspect_entries": entries})
    clock = _Clock()
    authz = _Authz()
    u = uplink.Uplink(ucfg, "lock-1", _Log(), clock, authz, [0, None], lambda: None, None, say=lambda *a: None)
    assert authz.introspection is u
    return u, clock


def test_ask_never_waits_and_the_table_is_bounded():
    from lock.authz import INTRO_ACTIVE, INTRO_INACTIVE, INTRO_OFFLINE, INTRO_PENDING
    u, clock = _uplink(entries=2, fresh_s=60)
    a, b, c = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32
    assert u.ask(a) == (INTRO_PENDING, None) and u.answers.queued()[0] == a
    assert u._due(clock.t)[0] == "introspect"          # ahead of the other jobs
    e = u.answers.queued()
    u.answers.answer(e, a, True, "unlock", clock.t)
    assert u.ask(a) == (INTRO_ACTIVE, "unlock")
    assert u.ask(b) == (INTRO_PENDING, None)
    assert u.ask(c) == (INTRO_PENDING, None)
    # Two entries: b queued, c took a's slot (the only answered one).
    assert u.answers.find(a) is None and u.answers.find(c) is not None
    for x in (b, c):
        clock.t += 1
        u.answers.answer(u.answers.find(x), x, x == b, None, clock.t)
    assert u.ask(b) == (INTRO_ACTIVE, None) and u.ask(c) == (INTRO_INACTIVE, None)
    clock.t += 60000                                     # stale: asked again
    assert u.ask(b) == (INTRO_PENDING, None)
    clock.t += 3000                                      # not answered in 3 s: the AS is not there
    assert u.ask(b) == (INTRO_OFFLINE, None)
    u.unreachable = True
    assert u.ask(a) == (INTRO_OFFLINE, None) and u.answers.find(a) is None
    u.rebound()
    assert all(x[0] is None for x in u.answers.table)


def test_a_failed_introspection_means_offline_until_its_backoff_is_over():
    from lock.authz import INTRO_OFFLINE, INTRO_PENDING
    u, clock = _uplink()
    a = bytes([1]) * 32
    assert u.ask(a) == (INTRO_PENDING, None)
    u._done("introspect", "the AS answered 4.04")
    assert u.answers.queued() is None and u.ask(a) == (INTRO_OFFLINE, None)
    clock.t = u.next["introspect"]
    assert u.ask(a) == (INTRO_PENDING, None)
    u._done("introspect")
    assert u.offline_until <= clock.t and u.fails["introspect"] == 0


class _Tok:
    def __init__(self, scope="unlock"):
        self.hash = bytes(32)


class _Asks:
    def __init__(self, state, scope=None):
        self.r = (state, scope)

    def ask(self, tid):
        return self.r


@pytest.mark.parametrize("state,scope,policy,want", [
    ("active", None, "deny", reasons.OK),
    ("active", "unlock status", "deny", reasons.OK),
    ("active", "status", "allow", reasons.SCOPE_INSUFFICIENT),
    ("inactive", None, "allow", reasons.INTROSPECTION_INACTIVE),
    ("pending", None, "allow", reasons.INTROSPECTION_PENDING),
    ("offline", None, "deny", reasons.AS_UNREACHABLE),
    ("offline", None, "allow", reasons.OFFLINE_ALLOWED),
    (None, None, "deny", reasons.AS_UNREACHABLE),          # no uplink at all
    (None, None, "allow", reasons.OFFLINE_ALLOWED),
])
def test_online_check_table(state, scope, policy, want):
    from lock import authz as az
    a = az.Authorizer.__new__(az.Authorizer)
    states = {"active": az.INTRO_ACTIVE, "inactive": az.INTRO_INACTIVE, "pending": az.INTRO_PENDING,
              "offline": az.INTRO_OFFLINE}
    a.introspection = _Asks(states[state], scope) if state else None
    try:
        got = a.online_check(_Tok(), "unlock", policy)
    except reasons.Refused as e:
        got = e.reason
    assert got == want


_MP_HEAP = r'''
import gc
from lock import uplink, authz
gc.collect()
before = gc.mem_free()
t = uplink.Answers(8, 60000)
for i in range(8):
    t.queue(bytes([i]) * 32, i)
    t.answer(t.find(bytes([i]) * 32), bytes([i]) * 32, True, "unlock lock status %d" % i, i)
gc.collect()
full = before - gc.mem_free()
print("ANSWERS", full)
a = uplink.introspect_answer(bytes.fromhex("a30af503666c6f636b2d3109646c6f636b"), "lock-1")
print("ANSWER", a[0], a[1], authz.scope_has(a[1], "lock"))
'''


def test_the_table_on_micropython_and_its_heap():
    """The table of 8 answers, full, on the simulator's MicroPython: the
    heap it holds (token ids and scopes included)."""
    from mp import run_mp
    r = run_mp(["-c", _MP_HEAP], heapsize="256K")
    assert r.returncode == 0, r.stdout + r.stderr
    out = dict(l.split(" ", 1) for l in r.stdout.strip().splitlines())
    assert out["ANSWER"] == "True lock True"
    held = int(out["ANSWERS"])
    print("\nintrospection table, 8 entries full: %d bytes of heap" % held)
    assert held < 2048


# The bench AS (lockctl as), end to end -----------------------------------

def test_against_the_bench_as(tmp_path):
    """`lockctl as init`, `lock add --provision`, `seed`, `serve`; the lock's
    unlock made online-check ("deny"). Alice's token: lockctl's phone waits
    the pending round out and opens the door; her policy for unlock removed
    at the AS: a token she got before is refused (introspection_inactive)."""
    from lockctl.cli import sim_command, sim_env
    from test_as_e2e import AS, ENV, LOCKCTL, run, wait_for
    d = tmp_path
    asdir, bundle, keys = str(d / "as"), str(d / "bundle"), str(d / "keys")
    env = dict(ENV, LOCKCTL_AS_DIR=asdir)
    ports = dict(as_coap=free_udp_port(), as_coaps=free_udp_port(), coap=free_udp_port(), coaps=free_udp_port())
    assert run(AS, "init", asdir, "--coap-port", str(ports["as_coap"]), "--coaps-port", str(ports["as_coaps"]),
               env=env).returncode == 0
    r = run(AS, "lock", "add", "front-door", "--provision", bundle, "--clock", "system", "--bind", "127.0.0.1",
            "--coap-port", str(ports["coap"]), "--coaps-port", str(ports["coaps"]), env=env)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(bundle, "lock.json")) as f:
        cfg = json.load(f)
    cfg["uplink"].update(audit_s=0.5, trl_s=1, time_s=1, retry_s=0.5, max_retry_s=2)
    cfg["resources"] = [{"path": "lock/unlock", "online_check": "deny"}]
    with open(os.path.join(bundle, "lock.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    assert run(AS, "seed", "--lock", "front-door", "--keys", keys, "--tz", "Europe/Berlin", env=env).returncode == 0
    server = subprocess.Popen(AS + ["serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock = subprocess.Popen(sim_command(bundle, str(d / "flash.img"), heapsize=256 * 1024), env=sim_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, as_lines = [], []
    for p, out in ((lock, lines), (server, as_lines)):
        threading.Thread(target=lambda p=p, out=out: [out.append(l) for l in p.stdout], daemon=True).start()
    try:
        wait_for(lines, "READY", 30)
        wait_for(lines, "uplink: the AS answers", 30)

        def req(scope, out):
            return run(AS, "request", "--port", str(ports["as_coap"]), "--client-id", "alice-phone", "--key",
                       os.path.join(keys, "alice.pem"), "--aud", "front-door", "--scope", scope, "--out", out,
                       env=env)

        def unlock(tok):
            return run(LOCKCTL, "coap", "unlock", "--bundle", bundle, "--token", tok, "--key",
                       os.path.join(keys, "alice.pem"), "--port", str(ports["coaps"]))
        first, second = str(d / "a1.cwt"), str(d / "a2.cwt")
        assert req("unlock status", first).returncode == 0
        assert req("unlock", second).returncode == 0
        r = unlock(first)
        assert r.returncode == 0 and "unlock: 2.04" in r.stdout, (r.stdout, r.stderr, "".join(lines[-30:]))
        assert "asking its AS" in r.stderr, r.stderr
        # The policy that allows Alice to unlock goes at the AS.
        r = run(AS, "policy", "list", "--user", "alice", "--lock", "front-door", env=env)
        ids = [row.split()[0] for row in r.stdout.splitlines()[2:] if row.split()[3:4] == ["unlock"]]
        assert ids, r.stdout
        for i in ids:
            assert run(AS, "policy", "remove", i, env=env).returncode == 0
        r = unlock(second)
        assert r.returncode == 1 and "invalid_token" in r.stdout, (r.stdout, r.stderr)
        assert "asking its AS" in r.stderr
        # The decisions reach the AS: pending, the grant, the refusal.
        deadline = time.time() + 30
        while time.time() < deadline:
            r = run(AS, "audit", "--lock", "front-door", env=env)
            if "introspection_inactive" in r.stdout or re.search(r"\b%d\b" % reasons.INTROSPECTION_INACTIVE,
                                                                 r.stdout):
                break
            time.sleep(0.5)
        assert "introspection_inactive" in r.stdout or re.search(r"\b48\b", r.stdout), r.stdout
    finally:
        for p in (server, lock):
            p.kill()
            p.wait(10)


def test_ble_results_of_the_online_check():
    """Over BLE (ble/access.py): the resource's offline policy reaches the
    authorizer; the Result names the reason (a pending one is retried with
    the next Challenge), and a grant without the AS says so."""
    from ble.access import Access
    from ble.frag import Reassembler, fragments
    from lock import config
    from lock.authz import Decision

    class Authz:
        def __init__(self, d):
            self.d = d
            self.online = []

        def decide(self, perm, transport, peer, tok, proof, session, ready, online=None):
            self.online.append(online)
            return self.d

    class Actuator:
        moved = 0

        def ready(self):
            return None

        def unlock(self):
            self.moved += 1

    res = config.resources([{"path": "lock/unlock", "online_check": "allow"}])
    for d, want, moved in (
            (Decision(False, reasons.INTROSPECTION_PENDING, None, "unlock", retry_s=1),
             [False, None, "introspection_pending"], 0),
            (Decision(False, reasons.AS_UNREACHABLE, None, "unlock"), [False, None, "as_unreachable"], 0),
            (Decision(False, reasons.INTROSPECTION_INACTIVE, None, "unlock"), [False, 1, "introspection_inactive"], 0),
            (Decision(True, reasons.OFFLINE_ALLOWED, None, "unlock"), [True, None, "offline_allowed"], 1),
            (Decision(True, reasons.OK, None, "unlock"), [True, None, "ok"], 1)):
        act = Actuator()
        a = Access(Authz(d), act, res, "lock-1")
        r = Reassembler()
        for f in fragments(cbor2.dumps([bytes(32), "unlock", bytes(16), bytes(64)]), 20):
            r.feed(f)
        out, got = a.request(r, "peer")
        assert cbor2.loads(out) == want and got is d and a.authz.online == ["allow"] and act.moved == moved
