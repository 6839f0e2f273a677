"""The lock layer's pure parts: token store, lockout, fail-secure actuator,
and the authorizer's fail-closed paths. CPython and MicroPython."""
from mpunit import raises
from lock.actuator import ActuatorFault, SimActuator
from lock.authz import Authorizer
from lock.lockout import Lockout
from lock.tokens import TokenStore
from trust import pop, reasons
from trust.verifier import Verifier


class _Claims:
    def __init__(self, pop_key=None, psk_kid=None, scope=("unlock",), cti=None, iat=None):
        self.iat = iat
        self.pop_key = pop_key
        self.psk_kid = psk_kid
        self.scope = scope
        self.cti = cti
        self.sub = "alice"
        self.exi = None
        self.cnf_kind = "ec2" if pop_key else ("psk" if psk_kid else None)


class _Tok:
    def __init__(self, h, **kw):
        self.hash = h
        self.claims = _Claims(**kw)
        self.issuer = "https://as"
        self.raw = h

    def allows(self, p):
        return p in self.claims.scope


def test_store_one_token_per_pop_key_once_used_never_an_older_one():
    s = TokenStore(4)
    a, b = _Tok(b"a", pop_key=b"K1", iat=10), _Tok(b"b", pop_key=b"K1", iat=20)
    s.add(a, lambda t: False)
    s.add(b, lambda t: False)                          # both wait for a proof
    s.add(_Tok(b"c", pop_key=b"K2"), lambda t: False)
    assert s.get(b"a") and s.get(b"b") and len(s) == 3
    assert s.used(b, 1)                                # the key holder proved with b
    assert s.get(b"a") is None and s.get(b"b") and len(s) == 2
    # An older token for the key in use (a sniffed one, replayed) is refused.
    e = raises(reasons.Refused, s.add, _Tok(b"a", pop_key=b"K1", iat=10), lambda t: False)
    assert e.reason == reasons.TOKEN_SUPERSEDED and s.get(b"b")
    e = raises(reasons.Refused, s.add, _Tok(b"d", pop_key=b"K1"), lambda t: False)  # no iat
    assert e.reason == reasons.TOKEN_SUPERSEDED
    s.add(b, lambda t: False)                          # the same token again: no change
    assert len(s) == 2


def test_store_psk_kid_names_the_newest_token_only():
    # RFC 9202 sec. 3.3: the kid names one token. A newer one replaces it;
    # an older one (a stranger re-posting a sniffed token of wider scope
    # after the AS narrowed it) is refused.
    s = TokenStore(4)
    wide, narrow = _Tok(b"w", psk_kid=b"P", iat=10), _Tok(b"n", psk_kid=b"P", iat=20)
    s.add(wide, lambda t: False)
    s.add(narrow, lambda t: False)
    assert s.get(b"w") is None and s.by_psk_kid(b"P") is narrow
    e = raises(reasons.Refused, s.add, _Tok(b"w", psk_kid=b"P", iat=10), lambda t: False)
    assert e.reason == reasons.TOKEN_SUPERSEDED and s.by_psk_kid(b"P") is narrow
    e = raises(reasons.Refused, s.add, _Tok(b"x", psk_kid=b"P"), lambda t: False)  # no iat
    assert e.reason == reasons.TOKEN_SUPERSEDED


# (name, stored: [(id, uploader, used, at_ms)], new uploader, now_ms, expected victim or reason)
_FAIRNESS = (
    ("expired_first", [(b"1", "A", True, 0), (b"2", "A", True, 0)], "B", 1000, b"2"),
    ("own_unused_upload", [(b"1", "A", False, 990), (b"2", "B", False, 995)], "B", 1000, b"2"),
    ("strangers_fresh_upload_kept", [(b"1", "A", False, 990), (b"2", "A", False, 995)], "B", 1000,
     reasons.STORE_FULL),
    ("unused_after_grace", [(b"1", "A", False, 0), (b"2", "A", False, 995)], "B", 30000, b"1"),
    ("used_kept_while_active", [(b"1", "A", True, 0), (b"2", "A", True, 10)], "B", 60000,
     reasons.STORE_FULL),
    ("used_idle_longest", [(b"1", "A", True, 50), (b"2", "A", True, 10)], "B", 3600050, b"2"),
    ("unused_before_used", [(b"1", "A", True, 0), (b"2", "A", False, 0)], "B", 3600000, b"2"),
)


def test_store_full_fairness_table():
    for name, stored, peer, now, want in _FAIRNESS:
        s = TokenStore(2)
        for h, who, used, at in stored:
            s.add(_Tok(h, pop_key=h), lambda t: False, who, at, used)
        expired = (lambda t: t.hash == b"2") if name == "expired_first" else (lambda t: False)
        if isinstance(want, int):
            e = raises(reasons.Refused, s.add, _Tok(b"new", pop_key=b"new"), expired, peer, now)
            assert e.reason == want, name
            assert len(s) == 2, name
        else:
            dropped = s.add(_Tok(b"new", pop_key=b"new"), expired, peer, now)
            assert [t.hash for t in dropped] == [want], (name, dropped)
            assert s.get(b"new") and len(s) == 2, name


def test_store_use_protects_a_token():
    s = TokenStore(1)
    t = _Tok(b"1", pop_key=b"1")
    s.add(t, lambda x: False, "A", 0)
    s.used(t, 40000)
    e = raises(reasons.Refused, s.add, _Tok(b"2", pop_key=b"2"), lambda x: False, "B", 50000)
    assert e.reason == reasons.STORE_FULL and s.is_used(t)


def test_store_candidates_newest_first_with_permission():
    s = TokenStore(4)
    s.add(_Tok(b"1", pop_key=b"1", scope=("status",)), lambda t: False)
    s.add(_Tok(b"2", pop_key=b"2"), lambda t: False)
    s.add(_Tok(b"3", pop_key=b"3"), lambda t: False)
    s.add(_Tok(b"4", psk_kid=b"p"), lambda t: False)
    assert [t.hash for t in s.candidates("unlock")] == [b"3", b"2"]
    assert s.by_psk_kid(b"p").hash == b"4"
    # A used token is tried first, the most recently used before others:
    # a phone in use matches on its first signature check.
    s.used(s.get(b"2"), 100)
    assert [t.hash for t in s.candidates("unlock")] == [b"2", b"3"]
    s.used(s.get(b"3"), 200)
    assert [t.hash for t in s.candidates("unlock")] == [b"3", b"2"]
    s.used(s.get(b"2"), 300)
    assert [t.hash for t in s.candidates("unlock")] == [b"2", b"3"]


def test_lockout_window_penalty_and_bound():
    lo = Lockout(max_failures=3, window_s=10, penalty_s=5, capacity=2)
    for t in (0, 1000, 2000):
        assert lo.remaining_s("a", t) == 0
        lo.failure("a", t)
    assert lo.remaining_s("a", 2500) == 5
    assert lo.remaining_s("a", 7001) == 0
    lo.failure("b", 0)
    lo.failure("b", 11000)          # outside the window: counts from 1 again
    lo.failure("b", 11001)
    assert lo.remaining_s("b", 11002) == 0
    lo.failure("c", 0)               # table full: the idle one is forgotten
    assert len(lo.peers) <= 2
    lo.success("c")
    assert "c" not in lo.peers
    lo.failure("d", 20000, 3)        # a refusal that cost 3 signature checks
    assert lo.remaining_s("d", 20001) == 5


def test_actuator_fail_secure():
    t = [0]
    events = []
    a = SimActuator(lambda: t[0], 1000, lambda w, y: events.append(w))
    assert a.state() == "locked" and a.history == ["lock"] and events == ["locked"]
    a.unlock()
    t[0] = 999
    a.poll()
    assert a.state() == "unlocked"
    t[0] = 1000
    a.poll()
    assert a.state() == "locked" and a.history[-1] == "lock"
    a.set_fault("jammed")
    raises(ActuatorFault, a.unlock)
    assert a.state() == "locked"
    a.lock()                         # locking is always attempted
    a.clear_fault()
    a.sensor = False                 # bolt sensor says unlocked while locked
    assert a.ready() is not None and a.fault


class _Log:
    def __init__(self, fail=False):
        self.fail = fail
        self.rows = []

    def append(self, *row):
        if self.fail:
            raise OSError(28)
        self.rows.append(row)
        return len(self.rows)


class _Clock:
    def wall(self):
        return 1000

    def uptime_ms(self):
        return 5000

    def uptime_s(self):
        return 5


def _authz(log):
    v = Verifier("lock-1", [])
    return Authorizer("lock-1", v, TokenStore(4), pop.NonceTable(lambda: 0), _Clock(), log, Lockout())


def test_decision_without_token_is_logged_deny():
    log = _Log()
    d = _authz(log).decide("unlock", "coap", "peer")
    assert not d.granted and d.reason == reasons.TOKEN_MISSING and d.seq == 1
    assert log.rows[0][3] == "unlock" and log.rows[0][6] is False and log.rows[0][7] == reasons.TOKEN_MISSING


def test_unwritable_log_turns_decision_into_deny():
    az = _authz(_Log(fail=True))
    d = az.decide("unlock", "coap", "peer", bearer=b"\x00" * 10)
    assert not d.granted and d.reason == reasons.LOG_FAILURE


def test_unknown_hash_reference_and_garbage():
    az = _authz(_Log())
    assert az.decide("unlock", "coap", "p", bearer=b"\x11" * 32).reason == reasons.TOKEN_UNKNOWN
    assert az.decide("unlock", "coap", "p", bearer=b"\xd2\x84").reason == reasons.TOKEN_MALFORMED
    assert az.decide("unlock", "coap", "p", proof=b"\x82").reason == reasons.POP_MALFORMED


def test_token_uploads_count_toward_lockout():
    log = _Log()
    az = _authz(log)
    for _ in range(5):
        d = az.post_token(b"\xd2\x84garbage", "coap", "peer")
        assert d.reason == reasons.TOKEN_MALFORMED
    d = az.post_token(b"\xd2\x84garbage", "coap", "peer")
    assert d.reason == reasons.LOCKED_OUT and d.retry_s > 0
    assert az.post_token(b"", "coap", "other").reason == reasons.TOKEN_MISSING
    assert [r[3] for r in log.rows] == ["authz-info"] * 7


def test_presented_nonce_is_spent_even_when_the_token_is_refused_first():
    # A proof refused before its signature is checked (here: the token's
    # issuer is no longer trusted) still spends its nonce.
    from trust import cbor
    az = _authz(_Log())
    az.store.add(_Tok(b"\x22" * 32, pop_key=b"K"), lambda t: False)
    n = az.nonce("p")
    d = az.decide("unlock", "coap", "p", bearer=b"\x22" * 32, proof=cbor.encode([n, b"\x00" * 64]))
    assert not d.granted and d.reason == reasons.UNKNOWN_KEY
    assert len(az.nonces) == 1
    e = raises(reasons.Refused, az.nonces.consume, n, "p")
    assert e.reason == reasons.NONCE_UNKNOWN


def test_tokenless_requests_are_summarized_once_a_minute():
    # PROFILE sec. 6: a flood of requests that present nothing cannot fill
    # the log: one record per minute, whose `sub` counts the unwritten ones.
    class Clock(_Clock):
        t = 5000

        def uptime_ms(self):
            return self.t

    log = _Log()
    clock = Clock()
    az = Authorizer("lock-1", Verifier("lock-1", []), TokenStore(4), pop.NonceTable(lambda: 0), clock, log,
                    Lockout())
    for _ in range(500):
        d = az.decide("unlock", "coap", "p")
        assert not d.granted and d.reason == reasons.TOKEN_MISSING
    assert len(log.rows) == 1 and log.rows[0][4] == 0
    # Anything that presents something is still written, one record each.
    az.decide("unlock", "coap", "p", bearer=b"\x11" * 32)
    assert len(log.rows) == 2
    clock.t += 60000
    az.decide("unlock", "coap", "p")
    assert len(log.rows) == 3 and log.rows[2][4] == 499 and log.rows[2][7] == reasons.TOKEN_MISSING


def test_store_a_used_token_pushes_out_the_idlest_used_one():
    # Segmented like an LRU cache: used tokens hold capacity - 1 slots, so a
    # new phone gets in once it proves its key, and uploads alone never can.
    s = TokenStore(3)
    a, b, c = _Tok(b"a", pop_key=b"a"), _Tok(b"b", pop_key=b"b"), _Tok(b"c", pop_key=b"c")
    for i, t in enumerate((a, b)):
        s.add(t, lambda x: False, "P%d" % i, 0)
        assert s.used(t, 10 + i)
    s.add(c, lambda x: False, "P2", 20)
    assert not s.used(a, 30)                 # already used: only refreshed
    assert s.used(c, 40)                     # third used token: b, idle longest, goes
    assert s.get(b"b") is None and s.get(b"a") and s.get(b"c")


def test_lockout_full_of_locked_peers_shares_one_budget():
    lo = Lockout(max_failures=2, window_s=60, penalty_s=10, capacity=2)
    for p in ("a", "b"):
        lo.failure(p, 0, 2)                  # both locked out until 10 s
    assert lo.remaining_s("a", 1) == 10
    # Newcomers find no room: they share the overflow entry's budget.
    assert lo.remaining_s("c", 1) == 0
    lo.failure("c", 1)
    lo.failure("d", 2)
    assert lo.remaining_s("e", 3) == 10      # the shared budget is spent
    assert lo.remaining_s("a", 3) == 10
    # Penalties that ran out free the table: newcomers get their own entry.
    assert lo.remaining_s("f", 10001) == 0
    lo.failure("f", 10001)
    assert "f" in lo.peers and lo.remaining_s("f", 10002) == 0


def test_locked_out_requests_are_summarized_too():
    # A locked-out peer's requests are refused unchecked: like token-less
    # ones, one record a minute per reason, so they cannot fill the log.
    log = _Log()
    az = _authz(log)
    for _ in range(5):
        az.decide("unlock", "coap", "p", bearer=b"\x11" * 32)
    for _ in range(300):
        assert az.decide("unlock", "coap", "p", bearer=b"\x11" * 32).reason == reasons.LOCKED_OUT
    assert [r[7] for r in log.rows] == [reasons.TOKEN_UNKNOWN] * 5 + [reasons.LOCKED_OUT]


def test_actuator_history_bounded_and_events_cannot_stop_a_move():
    t = [0]

    def bad_event(what, why):
        raise MemoryError

    a = SimActuator(lambda: t[0], 1000, bad_event)
    for _ in range(100):
        a.unlock()
        a.lock()
    assert len(a.history) <= 16 and a.state() == "locked" and a.moves == 200


def test_lockout_overflow_never_holds_a_peer_in_good_standing():
    lo = Lockout(max_failures=2, window_s=60, penalty_s=10, capacity=2)
    lo.success("phone")
    for p in ("a", "b", "c", "d"):
        lo.failure(p, 0, 2)
    assert lo.remaining_s("e", 1) == 10          # strangers share the spent budget
    assert lo.remaining_s("phone", 1) == 0       # the phone that proved itself does not


def test_store_a_sniffed_newer_token_cannot_displace_the_one_in_use():
    # Outside reports: a stranger uploaded a newer, smaller-scope token for a
    # phone's key, before or after the phone's first proof, and the phone's
    # next unlock failed. Same-key tokens now wait side by side; only a
    # proof naming one makes it the key's token.
    s = TokenStore(4)
    a = _Tok(b"a", pop_key=b"K", iat=10)
    s.add(a, lambda t: False, "phone", 0)
    b = _Tok(b"b", pop_key=b"K", iat=20, scope=("status",))
    s.add(b, lambda t: False, "stranger", 1)          # before the phone's proof
    assert s.get(b"a") and s.get(b"b") and [t.hash for t in s.candidates("unlock")] == [b"a"]
    assert s.used(a, 2)                               # the phone proves with a: b goes
    assert s.get(b"a") and s.get(b"b") is None
    s.add(b, lambda t: False, "stranger", 3)          # and after it: b waits again
    assert [t.hash for t in s.candidates("unlock")] == [b"a"] and s.get(b"b")
    c = _Tok(b"c", pop_key=b"K", iat=30)
    s.add(c, lambda t: False, "phone", 4)
    assert s.used(c, 5)                               # the key holder moves to c
    assert s.get(b"a") is None and s.get(b"b") is None and s.get(b"c") and len(s) == 1
    e = raises(reasons.Refused, s.add, _Tok(b"b", pop_key=b"K", iat=20), lambda t: False, "x", 6)
    assert e.reason == reasons.TOKEN_SUPERSEDED


def test_lockout_many_addresses_taking_turns_share_one_budget():
    # An outside report: 60 addresses taking turns, each failing a little
    # less than the limit, had each entry pushed out by the next address and
    # were never locked out. Entries with recent failures now stay.
    lo = Lockout(max_failures=5, window_s=60, penalty_s=30, capacity=12)
    locked = 0
    for rnd in range(3):
        for i in range(60):
            p = "10.0.0.%d" % i
            if lo.remaining_s(p, rnd * 100 + i):
                locked += 1
            else:
                lo.failure(p, rnd * 100 + i, 4)
    assert len(lo.peers) == 12 and lo.overflow is not None and lo.overflow[2]
    assert locked >= 150                     # nearly all of them held after the first round


def test_strangers_budget_never_holds_a_peers_outstanding_nonce():
    # PROFILE sec. 3 v2: a newcomer without an entry of its own, while the
    # strangers' shared budget is spent, still gets its proof over a nonce
    # it was given (and has not used) checked; without one it waits (4.29).
    from trust import cbor
    az = Authorizer("lock-1", Verifier("lock-1", []), TokenStore(4), pop.NonceTable(lambda: 0), _Clock(),
                    _Log(), Lockout(max_failures=2, capacity=1))
    n = az.nonce("phone")
    az.lockout.failure("a", 5000, 2)             # the table: full of a locked-out peer
    az.lockout.failure("b", 5000, 2)             # strangers outside: the shared budget spent
    assert az.decide("unlock", "coap", "c", bearer=b"\x11" * 32).reason == reasons.LOCKED_OUT
    proof = cbor.encode([n, b"\x00" * 64])
    d = az.decide("unlock", "coap", "phone", proof=proof)
    assert d.reason == reasons.TOKEN_UNKNOWN     # checked, not held
    d = az.decide("unlock", "coap", "phone", proof=proof)
    assert d.reason == reasons.LOCKED_OUT        # that nonce is spent now
