"""End to end over Bluetooth LE (PROFILE.md sec. 5): the simulated lock on
MicroPython's real `bluetooth` module (NimBLE over an H4 UART), Bumble's
virtual controller pair (lockctl.blelink) and the Bumble phone of
`lockctl ble`. Decisions are read back from the lock's decision log over
CoAP with an admin token; the door is watched on the lock's EVENT lines."""
import asyncio
import os
import re
import time

import cbor2
import pytest

from lockctl import ble
from lockctl import cose_host as ch
from simlock import SimLock, act

# A loaded CI machine (two workers, each lock with its Bumble controller
# and phone) makes an attempt slow, not wrong: the phone waits up to 20 s
# for a Result, and the lock gives an idle phone 25 s (so the phone's own
# timeout, with its clear message, comes first).
PHONE_TIMEOUT_S = 20.0
SLOW_MACHINE_BLE = {"idle_s": 25, "conn_s": 60}
REASON_ERRORS = {"scope_insufficient": 2, "expired": 1, "revoked": 1, "bearer_not_allowed": 1,
                 "pop_sig_invalid": 1, "nonce_unknown": 1, "token_unknown": 1}


@pytest.fixture(scope="module")
def lock(tmp_path_factory):
    # Every attempt is a new connection, i.e. a new peer for the lockout:
    # give the table room for this module's refused connections (the
    # shared overflow budget is tested for CoAP). The heap: BLE takes
    # about 5.8 KB of the 56 KiB at READY (bench/bench_ble.py), and with
    # stored tokens a verification then finds no room now and then
    # (a clean no_memory deny); the ESP32 grows its heap from ESP-IDF's
    # (MICROPY_GC_SPLIT_HEAP_AUTO), so these tests run the simulator's model
    # of it (56 KiB growing once; on a fixed 64 KiB a log page got 5.03 now
    # and then).
    s = SimLock(tmp_path_factory.mktemp("blelock"), relock_ms=1500, ble=True,
                config={"lockout": {"capacity": 64}, "ble": SLOW_MACHINE_BLE})
    s.key = ch.gen_key()
    s.tok = s.token(s.key)
    s.admin_key = ch.gen_key()
    s.admin_tok = s.token(s.admin_key, over={9: "admin"})
    yield s
    s.stop()


# No test waits for ever on the phone's stack (a hung CI run tells nothing).
RUN_TIMEOUT_S = 240


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, RUN_TIMEOUT_S))


async def connect(p, device_id):
    """Find the lock and connect, as lockctl's phone does: Bumble's virtual
    link completes a connection only when the address it was made to
    advertises, and a lock whose host reset advertises from a new random
    static address (a real central's connect would time out the same way),
    so a connect that takes PHONE_TIMEOUT_S looks again."""
    for _ in range(3):
        try:
            return await asyncio.wait_for(p.device.connect(await p.find(device_id)), PHONE_TIMEOUT_S)
        except asyncio.TimeoutError:
            pass
    raise AssertionError("no connection to %s" % device_id)


async def attempt(lock, token, key, permission="unlock", **kw):
    async with ble.BlePhone(lock.ble_transport, timeout=PHONE_TIMEOUT_S) as p:
        return await p.attempt(lock.device_id, permission, token, key, **kw)


def admin(lock, action, **kw):
    """An admin request over CoAP with the admin token inline (no store
    slot needed: the BLE tests fill the store with used tokens)."""
    r = run(act(lock, lock.admin_tok, lock.admin_key, action, inline=True, **kw))
    assert r.ok, "%s %r: %s\n%s" % (action, kw, r.describe(), lock.output())
    return r


def log_after(lock, seq):
    """BLE decision records with seq > `seq`, up to the log's end when
    called (GET /log pages, admin token; reading the log is logged too)."""
    out = []
    end = None
    while end is None or seq < end:
        body = cbor2.loads(admin(lock, "log", query=["after=%d" % seq]).payload)
        end = body["next_seq"] if end is None else end
        if not body["records"]:
            break
        out += [x for x in body["records"] if x[4] == "ble" and x[0] < end]
        seq = body["records"][-1][0]
    return out


def mark(lock):
    """Where this test's output starts: once the lock's output is quiet
    (the reader thread may still hand over the previous test's last lines)."""
    k = -1
    while k != len(lock.lines):
        k = len(lock.lines)
        time.sleep(0.15)
    return k


def ble_lines(lock, start):
    return [l for l in lock.lines[start:] if l.startswith("BLE: ")]


def unlocks(lock, start, expect):
    """How many times the door unlocked since line `start`, once `expect`
    moves were printed or 3 s went by (the lock's output is read by a
    thread: a line may land just after the phone got its Result)."""
    def count():
        return sum(1 for l in lock.lines[start:] if l == "EVENT unlocked command")
    end = time.time() + 3
    while count() < expect and time.time() < end:
        time.sleep(0.02)
    time.sleep(0.1)
    return count()


# The flow --------------------------------------------------------------------

def test_advertises_and_says_so(lock):
    line = lock.wait_for("BLE: advertising")
    assert lock.device_id in line and "random static" in line
    heap = int(re.search(r"(\d+) free", lock.wait_for("heap:")).group(1))
    assert heap > 8000, "free heap at READY with BLE on: %d" % heap


def test_full_token_then_id_only(lock):
    n = mark(lock)
    r = run(attempt(lock, lock.tok, lock.key))             # MTU 23: 20-byte writes
    assert (r.granted, r.error, r.reason) == (True, None, "ok")
    assert r.writes == -(-(len(cbor2.dumps([lock.tok, "unlock", b"\0" * 16, b"\0" * 64]))) // 19)
    lock.wait_for("EVENT unlocked command", start=n)
    r = run(attempt(lock, lock.tok, lock.key, id_only=True, mtu=247))
    assert (r.granted, r.reason, r.writes, r.mtu) == (True, "ok", 1, 247)
    r = run(attempt(lock, lock.tok, lock.key, id_only=True))
    assert (r.granted, r.writes) == (True, 7)              # 32-byte id, 16-byte nonce, 64-byte signature
    lock.wait_for("BLE: unlock granted", start=n)
    assert unlocks(lock, n, 3) == 3


def test_status_gives_the_door_state(lock):
    r = run(attempt(lock, lock.tok, lock.key, "status", mtu=247))
    assert r.granted and r.reason in ("locked", "unlocked")


def test_lockctl_ble_caches_the_token(lock, tmp_path):
    cache = str(tmp_path / "cache.json")
    key = ch.gen_key()
    tok = lock.token(key)
    said = []
    r = run(ble.unlock(lock.ble_transport, lock.device_id, tok, key, cache_path=cache, say=said.append))
    assert r.granted and not r.id_only
    r = run(ble.unlock(lock.ble_transport, lock.device_id, tok, key, cache_path=cache, say=said.append))
    assert r.granted and r.id_only and "token id only" in said[-1]


def _bearer(lock):
    c = lock.claims()
    return ch.make_sign1(c, lock.as_key, kid=lock.kid)


def test_refusals_have_their_reason_in_result_and_log(lock):
    seq0 = _last_seq(lock)
    n = mark(lock)
    other = ch.gen_key()
    cases = []
    # wrong scope, expired, bearer, another phone's key
    cases.append(("scope_insufficient", lock.token(lock.key, over={9: "status"}), lock.key, {}))
    now = int(time.time())
    cases.append(("expired", lock.token(lock.key, over={4: now - 3600, 6: now - 7200}), lock.key, {}))
    cases.append(("bearer_not_allowed", _bearer(lock), lock.key, {}))
    cases.append(("pop_sig_invalid", lock.token(lock.key), other, {}))
    for reason, tok, key, kw in cases:
        r = run(attempt(lock, tok, key, **kw))
        assert (r.granted, r.reason, r.error) == (False, reason, REASON_ERRORS[reason]), (reason, r.describe())
    # a stale nonce: the Challenge of an earlier connection
    seen = []

    def keep_nonce(nonce):
        seen.append(nonce)
        return _request(lock, lock.tok, lock.key, nonce)
    assert run(attempt(lock, lock.tok, lock.key, message=keep_nonce)).granted
    r = run(attempt(lock, lock.tok, lock.key, message=lambda nonce: _request(lock, lock.tok, lock.key, seen[0])))
    assert (r.granted, r.reason) == (False, "nonce_unknown")
    # a replayed request on the same connection: its nonce is spent
    async def twice(peer, char, frags, results):
        for f in frags:
            await peer.write_value(char, f, with_response=True)
        first = cbor2.loads(await results.get())
        for f in frags:
            await peer.write_value(char, f, with_response=True)
        second = cbor2.loads(await results.get())
        return first, second
    first, second = run(attempt(lock, lock.tok, lock.key, mtu=247, fault=twice))
    assert first[0] is True and second == [False, 1, "nonce_unknown"]
    # revoked: the admin revokes the phone's token over CoAP, then BLE
    victim_key = ch.gen_key()
    victim = lock.token(victim_key)
    r = run(attempt(lock, victim, victim_key))
    assert r.granted, r.describe() + "\n" + lock.output()
    admin(lock, "revoke", payload=cbor2.dumps({"ids": [ch.token_id(victim)]}))
    for id_only in (True, False):
        r = run(attempt(lock, victim, victim_key, id_only=id_only))
        assert (r.granted, r.reason) == (False, "token_unknown" if id_only else "revoked"), r.describe()
    # The door moved only on the three grants; the log has every decision.
    assert unlocks(lock, n, 3) == 3
    recs = log_after(lock, seq0)
    got = [(x[5], x[8], x[9]) for x in recs]
    names = ["scope_insufficient", "expired", "bearer_not_allowed", "pop_sig_invalid", None, "nonce_unknown",
             None, "nonce_unknown", None, "token_unknown", "revoked"]
    assert len(got) == len(names), got
    for (perm, granted, reason), name in zip(got, names):
        assert perm == "unlock"
        assert granted == (name is None)
        if name is not None:
            assert reason == REASON_NUMBERS[name], (reason, name)


REASON_NUMBERS = {"scope_insufficient": 23, "expired": 17, "revoked": 21, "bearer_not_allowed": 25,
                  "pop_sig_invalid": 30, "nonce_unknown": 28, "token_unknown": 32}


def _request(lock, tok, key, nonce, permission="unlock"):
    proof = cbor2.loads(ch.pop_proof(key, lock.device_id, nonce, permission, ch.token_id(tok)))
    return cbor2.dumps([tok, permission, proof[0], proof[1]])


def _last_seq(lock):
    return cbor2.loads(admin(lock, "log", query=["after=0"]).payload)["next_seq"] - 1


# Transport faults: nothing truncated is parsed, and the next phone succeeds --

GARBAGE_RESULTS = []


def _faulty(kind):
    async def send(peer, char, frags, results):
        if kind == "plain":
            for f in frags:
                await peer.write_value(char, f, with_response=True)
        elif kind == "gap":
            for i, f in enumerate(frags):
                if i != 2:
                    await peer.write_value(char, f, with_response=True)
        elif kind == "overflow":
            # writes go on after the last fragment without waiting for
            # the Result: the lock drops them while it holds a message,
            # and the next message is then discarded for its gap
            for f in frags + frags:
                await peer.write_value(char, f, with_response=True)
            return [cbor2.loads(await results.get()), cbor2.loads(await results.get())]
        elif kind == "long_write":
            # one write longer than the characteristic buffer (a long write
            # in prepared writes): the stack would cut it to 245 bytes
            await peer.write_value(char, b"\x80" + bytes(299), with_response=True)
        elif kind == "stall":
            for f in frags[:2]:
                await peer.write_value(char, f, with_response=True)
            t0 = time.monotonic()
            r = cbor2.loads(await results.get())
            return r, time.monotonic() - t0
        elif kind == "garbage":
            # one bad message after another on one connection (a fragment
            # numbered 5 to start: a gap each time), each answered, until
            # the lock hangs up; the Results go to GARBAGE_RESULTS
            for _ in range(12):
                await peer.write_value(char, b"\x85" + bytes(10), with_response=True)
                GARBAGE_RESULTS.append(cbor2.loads(await asyncio.wait_for(results.get(), 5)))
            return GARBAGE_RESULTS
        elif kind == "disconnect":
            for f in frags[:2]:
                await peer.write_value(char, f, with_response=True)
            await peer.connection.disconnect()
            return "gone"
        return cbor2.loads(await results.get())
    return send


def _discarded(lock, start, why):
    """The message was discarded whole: said, and nothing was decided."""
    lock.wait_for("BLE: message discarded: %s" % why, 3, start)
    lines = ble_lines(lock, start)
    assert not [l for l in lines if l.startswith("BLE: unlock")], lines


def _good(lock):
    """The next phone succeeds (with its token's id, or in full if the lock
    does not hold it: tests may run in any order)."""
    r = run(attempt(lock, lock.tok, lock.key, id_only=True))
    if r.reason == "token_unknown":
        r = run(attempt(lock, lock.tok, lock.key))
    assert r.granted, r.describe()


def test_missing_fragment(lock):
    n = mark(lock)
    r = run(attempt(lock, lock.tok, lock.key, fault=_faulty("gap")))
    assert r == [False, 0, "fragment_gap"]
    _discarded(lock, n, "fragment_gap")
    _good(lock)


def test_over_1400_bytes(lock):
    big = cbor2.dumps([lock.tok + bytes(1300), "unlock", bytes(16), bytes(64)])
    assert len(big) > 1400
    n = mark(lock)
    r = run(attempt(lock, lock.tok, lock.key, mtu=247, message=lambda nonce: big, fault=_faulty("plain")))
    assert r == [False, 0, "message_too_long"], lock.output()
    _discarded(lock, n, "message_too_long")
    _good(lock)


def test_writes_overflowing_a_held_message(lock):
    n = mark(lock)
    first, second = run(attempt(lock, lock.tok, lock.key, id_only=False, fault=_faulty("overflow")))
    # Dropped from the start (a gap), or, had all of them come after the
    # Result, a whole copy whose nonce is spent: never a second unlock.
    assert first[0] is True and second in ([False, 0, "fragment_gap"], [False, 1, "nonce_unknown"])
    assert unlocks(lock, n, 1) == 1
    _good(lock)


def test_write_longer_than_the_characteristic_buffer(lock):
    n = mark(lock)
    r = run(attempt(lock, lock.tok, lock.key, mtu=247, fault=_faulty("long_write")))
    assert r == [False, 0, "fragment_too_long"]
    _discarded(lock, n, "fragment_too_long")
    _good(lock)


def test_stalled_transfer(lock):
    n = mark(lock)
    (r, waited) = run(attempt(lock, lock.tok, lock.key, fault=_faulty("stall")))
    assert r == [False, 0, "transfer_stalled"]
    _discarded(lock, n, "transfer_stalled")
    assert 4.5 < waited < 8, waited
    _good(lock)


def test_disconnect_mid_transfer(lock):
    n = mark(lock)
    assert run(attempt(lock, lock.tok, lock.key, fault=_faulty("disconnect"))) == "gone"
    _good(lock)
    assert unlocks(lock, n, 1) == 1


def test_connect_and_leave_at_once_keeps_the_lock_advertising(lock):
    """A phone that connects and drops the link before the lock's task runs
    (both events wake it once): the connect stopped advertising, so the lock
    must advertise again, or no phone finds it until a reboot."""
    async def hit():
        async with ble.BlePhone(lock.ble_transport) as p:
            conn = await connect(p, lock.device_id)
            await conn.disconnect()
    for _ in range(2):
        run(hit())
        _good(lock)


def test_no_phone_reads_the_last_connections_challenge(lock):
    """A phone that reads the Challenge the moment it connects, before the
    lock's task has made this connection's nonce (a loaded lock: CI saw
    nonce_unknown this way), reads it empty, never the last phone's nonce
    (bound to another peer); the notification brings the new one. The
    attribute handle is learnt once, so the read goes out at connect."""
    from bumble.device import Peer

    async def handle():
        async with ble.BlePhone(lock.ble_transport) as p:
            peer = Peer(await connect(p, lock.device_id))
            await peer.discover_service(ble.SERVICE)
            svc = peer.get_services_by_uuid(ble._uuid(ble.SERVICE))[0]
            await peer.discover_characteristics(service=svc)
            h = peer.get_characteristics_by_uuid(ble._uuid(ble.CHALLENGE), svc)[0].handle
            await peer.connection.disconnect()
            return h

    async def early_late(h):
        async with ble.BlePhone(lock.ble_transport) as p:
            conn = await connect(p, lock.device_id)
            early = bytes(await conn.gatt_client.read_value(h))
            await asyncio.sleep(0.3)
            late = bytes(await conn.gatt_client.read_value(h))
            await conn.disconnect()
            return early, late

    h = run(handle())
    seen = []
    for _ in range(6):
        early, late = run(early_late(h))
        assert late and cbor2.loads(late)[0] == lock.device_id
        assert early in (b"", late), "a stale Challenge: %s then %s" % (early.hex(), late.hex())
        seen.append(early == b"")
    _good(lock)
    print("early reads that found the Challenge empty: %d of %d" % (sum(seen), len(seen)))


def test_garbage_messages_are_invalid_requests(lock):
    for msg in (b"\xff", cbor2.dumps([1, 2, 3]), cbor2.dumps(["x", "unlock", b"", b""]), b"\x84" + bytes(3)):
        r = run(attempt(lock, lock.tok, lock.key, message=lambda nonce, m=msg: m, fault=_faulty("plain")))
        assert r == [False, 0, "bad_request"], msg
    _good(lock)


def test_two_phones_at_once(lock):
    """One phone at a time: the second finds the lock only once the first
    is done (the lock does not advertise while it serves), then succeeds."""
    n = mark(lock)
    k2 = ch.gen_key()
    t2 = lock.token(k2)

    connected = asyncio.Event()

    async def slow(peer, char, frags, results):
        connected.set()
        await asyncio.sleep(1.0)   # holds the lock's only connection
        for f in frags:
            await peer.write_value(char, f, with_response=True)
        return cbor2.loads(await results.get())

    async def both():
        a = asyncio.ensure_future(attempt(lock, lock.tok, lock.key, fault=slow))
        # The second phone comes once the first is connected (two phones
        # connecting in the same advertising event are a race of Bumble's
        # link: the lock refuses the second, which then tries again).
        await asyncio.wait_for(connected.wait(), 10)
        t0 = time.monotonic()
        b = await attempt(lock, t2, k2)
        return await a, b, time.monotonic() - t0

    ra, rb, waited = run(both())
    assert ra[0] is True and rb.granted, rb.describe() + "\n" + lock.output()
    assert waited > 0.8, "the second phone was served while the first held the connection"
    assert unlocks(lock, n, 2) == 2


def test_phones_connecting_in_one_advertising_event(lock):
    """Three phones connect to the same advertisement: one wins; the others'
    connections fail to be established (HCI 0x3E, as on a real link; the
    virtual link used to leave them on a connection nobody had) and they
    try again: all three are granted, one door movement each."""
    n = mark(lock)

    async def three():
        return await asyncio.gather(*(attempt(lock, lock.tok, lock.key) for _ in range(3)))
    rs = run(three())
    assert all(r.granted for r in rs), [r.describe() for r in rs]
    assert unlocks(lock, n, 3) == 3


def test_a_phone_writing_garbage_is_hung_up_on(lock):
    """Bad messages one after another on one connection: each gets its
    Result (fragment_gap), and after 8 the lock hangs up (it kept the lock
    and its console busy until the connection's time limit)."""
    n = mark(lock)
    del GARBAGE_RESULTS[:]
    with pytest.raises(ble.BleError, match="the lock ended the connection"):
        run(attempt(lock, lock.tok, lock.key, message=lambda nonce: b"", fault=_faulty("garbage")))
    assert GARBAGE_RESULTS == [[False, 0, "fragment_gap"]] * 8, GARBAGE_RESULTS
    lock.wait_for("BLE: 8 messages discarded, hanging up", 5, n)
    _good(lock)


def test_lock_refuses_without_controller_gracefully(tmp_path):
    """No MICROPYBTUART: the lock starts without BLE and says so."""
    s = SimLock(tmp_path, config={"ble": {"enabled": True}})
    try:
        assert "no MICROPYBTUART" in s.wait_for("BLE: off")
    finally:
        s.stop()


def _cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def _lock_that_granted(tmp_path):
    """A lock with BLE that hangs up an idle phone after 2 s, and a token
    and key it has granted an unlock (the token is stored): (lock, key, token)."""
    s = SimLock(tmp_path, ble=True, config={"ble": {"idle_s": 2}})
    try:
        s.wait_for("BLE: heap", 20)
        key = ch.gen_key()
        tok = s.token(key)
        assert run(attempt(s, tok, key)).granted
    except BaseException:
        s.stop()
        raise
    return s, key, tok


class CoapProbe:
    """GET lock/status over CoAP every `interval` s from a thread while the
    `with` block runs: `answered` holds the times (s after entering) the
    lock answered. A lock frozen in a wait for its radio leaves gaps."""

    def __init__(self, lock, interval=0.2):
        import threading
        self.lock = lock
        self.interval = interval
        self.answered = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)

    def _run(self):
        from coap import message as cm
        from simlock import RawClient
        c = RawClient(self.lock.port)
        c.s.settimeout(0.5)
        while not self._stop.is_set():
            try:
                c.request(cm.GET, "lock/status")
                self.answered.append(time.monotonic() - self.t0)
            except OSError:
                pass  # (socket.timeout)
            time.sleep(self.interval)

    def gaps(self, until=None):
        """(time, length) of each silence between answers, s; `until`: the
        last silence runs to then."""
        ends = self.answered + ([until] if until is not None else [])
        return [(a, b - a) for a, b in zip([0.0] + self.answered, ends)]


def test_the_lock_recovers_from_a_host_reset(tmp_path):
    """The controller stops answering (its process stopped for 8 s, as a
    loaded CI machine starved it) while the lock hangs up an idle phone:
    NimBLE's HCI command times out after 2 s and it resets its host, which
    forgets the random address. The lock must set it again and advertise
    (before, every later advertising call failed and no phone found it
    until a reboot), and its wait must not spin on the CPU the controller
    needs (the simulator's wait sleeps between polls, as the board's). The
    rest of the lock goes on meanwhile: CoAP is answered between the 2 s
    waits (on the unix port NimBLE runs on the firmware's thread, and its
    resyncs froze the lock for as long as the controller was gone; on the
    ESP32 the host has its own task)."""
    import signal
    s, key, tok = _lock_that_granted(tmp_path)
    try:

        async def idle_while_the_controller_stalls():
            async with ble.BlePhone(s.ble_transport) as p:
                await connect(p, s.device_id)
                await asyncio.sleep(1.0)
                cpu = _cpu_s(s.proc.pid)
                os.kill(s.link.pid, signal.SIGSTOP)  # this loop waits too: the phone is as stopped
                try:
                    with probe:
                        time.sleep(8)
                finally:
                    os.kill(s.link.pid, signal.SIGCONT)
                return _cpu_s(s.proc.pid) - cpu
        probe = CoapProbe(s)
        spent = run(idle_while_the_controller_stalls())
        answered = probe.answered

        async def again():
            # The lock's host resyncs first (more HCI round trips on a
            # loaded machine), or, if faults last 20 s, the lock restarts
            # its radio: the phone looks for it for up to 45 s.
            async with ble.BlePhone(s.ble_transport, scan_timeout=45) as p:
                return await p.attempt(s.device_id, "unlock", tok, key, id_only=True)
        for _ in range(2):
            try:
                r = run(again())
            except ble.BleError as e:
                raise AssertionError("%s\n%s\nthe link said:\n%s" % (e, s.output(), "".join(s.link.tail)))
            assert r.granted, (r.describe(), s.output())
        out = s.output()
        assert "BLE: advertising failed" in out and "setting the address again" in out, out
        print("lock CPU while its controller was stopped for 8 s: %.2f s; CoAP answered at %s s"
              % (spent, " ".join("%.1f" % t for t in answered)))
        assert spent < 2.0, spent  # spinning: 6 s and more (three 2 s waits)
        assert [t for t in answered if t > 5], answered  # frozen: none after the hang-up's wait
    finally:
        s.stop()


@pytest.mark.slow
def test_the_lock_restarts_a_radio_that_stays_faulty(tmp_path):
    """The controller is replaced (killed, and a new one opens the HCI
    UART's path: a board whose radio was power-cycled, or any state of the
    host stack that setting the address and advertising again do not end).
    The lock's host keeps its dead UART and every HCI command fails; after
    20 s of faults the lock turns the radio off and on (BLE().active), the
    new controller syncs and phones find the lock again, with no reboot:
    before, it stayed dark until one. CoAP is answered all along."""
    s, key, tok = _lock_that_granted(tmp_path)
    try:
        s.link.kill()
        s.link.wait(10)
        with CoapProbe(s) as probe:
            s.link, _, port = ble.start_link(os.path.join(s.dir, "hci"), 0)
            s.ble_transport = "tcp-client:127.0.0.1:%d" % port

            async def again():
                async with ble.BlePhone(s.ble_transport, scan_timeout=60) as p:
                    return await p.attempt(s.device_id, "unlock", tok, key, id_only=True)
            try:
                r = run(again())
            except ble.BleError as e:
                raise AssertionError("%s\n%s" % (e, s.output()))
            assert r.granted, (r.describe(), s.output())
            back = time.monotonic() - probe.t0
        out = s.output()
        assert re.search(r"BLE: faults for \d+ s: restarting the radio", out), out
        assert re.search(r"BLE: advertising again after \d+ s of faults", out), out
        longest = max(g for _, g in probe.gaps(until=back))
        print("radio replaced: phones find the lock again after %.1f s; longest CoAP silence %.1f s"
              % (back, longest))
        assert longest < 15, probe.gaps(until=back)  # frozen: silent until the restart and beyond
    finally:
        s.stop()


@pytest.mark.slow
def test_a_radio_that_stays_down_never_freezes_the_lock_twice_over(tmp_path):
    """The controller is gone for a minute (killed while a phone is
    connected, no new one): the lock restarts its radio after 20 s of
    faults, and that fails (no controller comes up: 2 s of waiting for its
    sync, during which nothing else runs), and it tries again at each
    retry. No two of these waits come back to back (CoAP silent for 3.5 s
    or more; with the fault it was 4-7 s, without 2.1 s): CoAP is answered and
    the relock timer runs between them. (Before, a retry's restart that
    failed at a 20 s mark was followed at once by another, and a fault
    that had just waited for the controller by the restart: the lock was
    silent 4 s, a door relocked 2.5 s late.)"""
    s = SimLock(tmp_path, ble=True, config={"ble": {"idle_s": 2}})
    silent = ()
    try:
        s.wait_for("BLE: heap", 20)

        async def connect_and_lose_the_controller():
            async with ble.BlePhone(s.ble_transport) as p:
                await connect(p, s.device_id)
                await asyncio.sleep(1.0)  # the lock serves it (and hangs up 2 s on)
                s.link.kill()
        try:
            run(connect_and_lose_the_controller())
        except Exception:
            pass  # (the phone's controller went with the lock's)
        s.link.wait(10)
        # The lock's restarts open the UART's path again: it must not lead
        # to a pty another test's controller took since (pty numbers are
        # reused). A pty nobody answers stands in for the gone controller.
        silent = os.openpty()
        os.unlink(s.ble_pty)
        os.symlink(os.ttyname(silent[1]), s.ble_pty)
        with CoapProbe(s, interval=0.1) as probe:
            time.sleep(60)
        out = s.output()
        assert len(re.findall(r"BLE: faults for \d+ s: restarting the radio", out)) >= 1, out
        assert "BLE: the radio did not restart" in out, out
        gaps = [(round(a, 1), round(g, 2)) for a, g in probe.gaps()[1:] if g > 1.0]
        print("controller gone for 60 s: CoAP silences over 1 s (at, s): %s" % gaps)
        assert all(g < 3.5 for _, g in gaps), (gaps, out)
    finally:
        s.stop()
        for fd in silent:
            os.close(fd)


def test_phone_and_lock_frame_alike():
    from ble import frag
    for n in (0, 1, 18, 19, 20, 38, 39, 243, 244, 1400):
        msg = bytes(i & 0xFF for i in range(n))
        for payload in (2, 20, 244):
            assert ble.fragments(msg, payload) == frag.fragments(msg, payload), (n, payload)


@pytest.mark.slow
def test_twenty_unlocks_with_coaps_on(tmp_path):
    """The heap with BLE and CoAPS both on (issue 9's no_memory denies): 20
    of 20 unlocks of two phones are granted on the ESP32 model's heap (56
    KiB growing once, as the board's does), full tokens, ids only and both
    payloads, each decided on the heap the lock has left once both phones'
    tokens are stored. (On a fixed 64 KiB one in about 60 got no_memory.)"""
    s = SimLock(tmp_path, ble=True, coaps=True, config={"ble": SLOW_MACHINE_BLE})
    try:
        s.wait_for("BLE: heap", 10)
        keys = [ch.gen_key(), ch.gen_key()]
        toks = [s.token(k) for k in keys]
        out = []
        for i in range(20):
            j = 1 if i % 3 == 2 else 0
            try:
                r = run(attempt(s, toks[j], keys[j], id_only=i > 2 and i % 2 == 1,
                                mtu=247 if i % 4 == 3 else None))
            except ble.BleError as e:
                raise AssertionError("attempt %d: %s\n%s" % (i, e, s.output()))
            out.append(r.describe())
        assert out == [out[0]] * 20 and out[0].startswith("granted"), "%s\n%s" % (out, s.output())
        assert not [l for l in s.lines if "no_memory" in l or "MemoryError" in l], s.output()
    finally:
        s.stop()
