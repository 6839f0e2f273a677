"""Lock application: the uplink to the AS (PROFILE sec. 7), one asyncio task.

The board hands in `connect()` (coap/dtls_client.py: a DTLS 1.2 client in
certificate mode, both sides authenticated, or plain CoAP as a development
switch); nothing here opens a socket. A door decision never waits on this
task: it runs a round (a few exchanges on one channel) only when a job is
due, every wait in it is an `await`, the work between two awaits is bounded
(one request built from at most 23 records read from flash, one answer
applied), and it holds no heap a decision could need: its one 1152-byte
buffer is the CoAPS server's plaintext buffer, shared (each uses it only
between two awaits), or, without CoAPS, made at boot; a DTLS session (its
context and wrapper, about 2.2 KB of GC heap; mbedTLS's own buffers are
on the C heap) is opened only while `uplink.min_free_bytes` are free and
kept between rounds (30 s at most, so a busy lock does not pay a
handshake's EC operations at every round) only while they still are. A
round that finds no heap, no AS or a bad answer is abandoned and retried
after an exponential backoff with jitter; failures are said once, not at
every retry.

Wire contract with the AS (PROFILE sec. 7; what the sec. leaves open is
decided here). CoAP (RFC 7252) confirmable requests, piggybacked or separate
responses; Content-Format 60 (application/cbor) both ways; resources at the
AS's root; every answer's payload at most 1024 bytes (one datagram); any
2.xx code is success (2.04 for /audit, 2.05 for the GETs), anything else
refuses the job that asked (it backs off alone). Over DTLS each session (one
per round) opens with a CoAP ping (an empty CON), which the AS answers with
RST or ignores.

- `POST /audit`: {"log": log id (8 bytes: made with the log, so a log that
  starts over, a wiped flash, is told from the one the AS holds), "lock":
  device_id, "boot": n, "dropped": n, "records":
  [record, ...]} (deterministic CBOR; the map's keys in that encoding's
  order: "log", "boot", "lock", "dropped", "records"); `boot` is the lock's boot
  counter now, `dropped` the count of decisions the full log could not keep
  since the log was made (it only grows); at most 23 records, oldest first,
  each exactly as the log stores it: the CBOR array [seq, wall s | null,
  boot, uptime_ms, transport, permission, sub, token_id (32 bytes) | null,
  granted, reason] (PROFILE sec. 6; reason: the stable numbers of
  trust/reasons.py). A request may carry no records (a new `dropped` only).
  Answer: {"seq": n}, the highest seq the AS has stored for this lock. The
  AS stores by (lock, seq) idempotently: a record sent again (an answer
  lost, the lock reset before it wrote its cursor) is stored once.
  The lock then frees its log up to min(n, the last seq of the request):
  n above every seq the lock ever issued is refused (said, the cursor
  stays), n at or below the cursor moves nothing (and fails the round).
- `GET /trl?after=POS`: {"pos": n, "ids": [token id (32 bytes), ...],
  "ctis": [cti (1-64 bytes), ...], "more": bool}, optionally "exi":
  {issuer: highest exi sequence number issued} (the floors that lift a
  damaged state's exi block, as in POST /revoke). POS is the last `pos` the
  lock applied (0 at first); `pos` never goes back (refused); the lock
  applies the entries and persists them with the new position in one
  atomic state write, then asks again while `more`.
- `GET /time`: a CBOR unsigned integer, Unix time in seconds (or that
  integer under tag 1). The lock sets its wall clock and persists it as
  the last good time; a time before the last good one (this boot or a
  previous one) is refused.
- `POST /introspect` (RFC 9200 sec. 5.9; Content-Format 19,
  application/ace+cbor, both ways): {11: the token id (32 bytes)}; the
  token itself is never sent (the AS knows the tokens it issued by id, and
  its payload stays 36 bytes). Answer (2.01 as the bench AS gives, any
  2.xx taken): a map with 10 (active) a bool; when true, 9 (scope) text is
  what the AS's policies allow now (absent: the token's own scope), 3
  (aud), when present, must name this lock; other claims are ignored.
  Anything else refuses the job. Asked only for a permission configured
  with "online_check" (lock/config.py), after every local check passed
  (lock/authz.py), and ahead of the other jobs: a decision that finds no
  fresh answer queues the token id and is refused at once
  (introspection_pending, 5.03 with Max-Age 1: nothing waits); the answer
  is kept per token id for `uplink.introspect_s` (60) in a table of
  `uplink.introspect_entries` (8). While the AS cannot be asked (the last
  round did not reach it, until one does; a refused /introspect, until
  its backoff is over; a queued id not answered within 3 s) the
  permission's offline policy decides (as_unreachable or offline_allowed).
"""
import asyncio
import gc
import os

from micropython import const

from coap import message as m
from lock.authz import INTRO_ACTIVE, INTRO_INACTIVE, INTRO_OFFLINE, INTRO_PENDING
from trust import cbor
from trust.reasons import Refused

_CON = const(0)
_ACK = const(2)
_RST = const(3)
_GET = const(1)
_POST = const(2)
_CF_CBOR = const(60)
_CF_ACE_CBOR = const(19)
_SCOPE_MAX = const(255)       # scope text an /introspect answer may carry
_PENDING_MS = const(3000)     # a queued token id not answered by then: the AS is not there
_BUF = const(1152)            # request and answer: one datagram
_MAX_ANSWER = const(1024)     # payload bytes an answer may have
_MAX_RECORDS = const(23)      # a one-byte CBOR array head
_BATCHES = const(8)           # /audit requests in one round at most
_PAGES = const(8)             # /trl answers in one round at most
_ACK_TIMEOUT_MS = const(2000)  # RFC 7252 sec. 4.8
_MAX_RETRANSMIT = const(2)
_SEPARATE_MS = const(10000)   # wait for a separate response after an empty ACK
_HANDSHAKE_MS = const(10000)
_KEEP_MS = const(30000)       # a DTLS session idle this long is closed
_POLL_MAX_MS = const(32)
_MAX_IDS = const(64)          # entries in one /trl answer at most (the lock's table is 64)
_SEQ_MAX = const(0xFFFFFFFF)


class UplinkError(Exception):
    """The AS could not be reached (no handshake, no answer)."""


class Refusal(UplinkError):
    """The AS answered, but the answer is refused (or is an error code):
    only the job that asked backs off."""


class _Out:
    """The append/extend of a bytearray onto buf[pos:] (cbor.encode_into)."""

    def __init__(self, buf, pos):
        self.buf = buf
        self.pos = pos

    def append(self, b):
        self.buf[self.pos] = b
        self.pos += 1

    def extend(self, data):
        n = len(data)
        if self.pos + n > len(self.buf):
            raise IndexError("request too large")
        self.buf[self.pos:self.pos + n] = data
        self.pos += n


def put_header(buf, code, mid, token, path, query=None, cf=None):
    """A CON request's header, token and options in buf; returns the end
    (RFC 7252 sec. 3; options in number order: Uri-Path 11,
    Content-Format 12, Uri-Query 15)."""
    buf[0] = 0x40 | (_CON << 4) | len(token)
    buf[1] = code
    buf[2] = mid >> 8
    buf[3] = mid & 0xFF
    o = _Out(buf, 4)
    o.extend(token)
    prev = 0
    opts = [(11, seg.encode()) for seg in path]
    if cf is not None:
        opts.append((12, bytes([cf]) if cf else b""))
    if query is not None:
        opts.append((15, query.encode()))
    for num, val in opts:
        _opt(o, num - prev, val)
        prev = num
    return o.pos


def _opt(o, delta, val):
    n = len(val)
    if n >= 269:
        raise ValueError("option too long")
    ext = []
    d = delta
    if delta >= 13:
        ext.append(delta - 13)
        d = 13
    ln = n
    if n >= 13:
        ext.append(n - 13)
        ln = 13
    o.append((d << 4) | ln)
    for b in ext:
        o.append(b)
    o.extend(val)


def parse_answer(data, mid, token):
    """What a datagram is to the exchange (mid, token): ("ack", None) an
    empty ACK, ("rst", None), ("resp", (code, payload, needs_ack)) the
    response, or None (not ours, or not CoAP)."""
    try:
        msg = m.parse(data)
    except m.FormatError:
        return None
    if msg.mid == mid and msg.mtype == _RST:
        return "rst", None
    if msg.mtype == _ACK and msg.mid == mid and msg.code == 0:
        return "ack", None
    if msg.code != 0 and msg.token == token and (msg.mtype != _ACK or msg.mid == mid):
        return "resp", (msg.code, msg.payload, msg.mtype == _CON, msg.mid)
    return None


def audit_ack(answer, acked, last, issued):
    """The seq to acknowledge from an /audit answer (its CBOR payload):
    `acked` the cursor, `last` the last seq the request carried (0: none),
    `issued` the highest seq the lock ever handed out. Raises UplinkError
    for an answer that is malformed or names a seq never issued."""
    try:
        d = cbor.decode(answer, 2, _MAX_ANSWER)
    except ValueError:
        raise Refusal("/audit answer is not CBOR")
    n = d.get("seq") if isinstance(d, dict) else None
    if not isinstance(n, int) or isinstance(n, bool) or n < 0 or n > _SEQ_MAX:
        raise Refusal("/audit answer without a seq")
    if n > issued:
        raise Refusal("the AS acknowledged seq %d, never sent (highest issued %d): refused" % (n, issued))
    return min(n, last)


def trl_page(answer, pos):
    """(pos, ids, ctis, exi floors, more, entries skipped) of a /trl answer,
    checked like POST /revoke (exact types, sizes, counts; an entry that
    cannot name a token is skipped); Refusal otherwise, or when its
    position is before `pos`."""
    try:
        d = cbor.decode(answer, 3, _MAX_ANSWER)
    except ValueError:
        raise Refusal("/trl answer is not CBOR")
    if not isinstance(d, dict) or any(k not in ("pos", "ids", "ctis", "more", "exi") for k in d):
        raise Refusal("/trl answer: not the expected map")
    new = d.get("pos")
    ids = d.get("ids", [])
    ctis = d.get("ctis", [])
    floors = d.get("exi", {})
    more = d.get("more", False)
    if (not isinstance(new, int) or isinstance(new, bool) or new < 0 or not isinstance(ids, list)
            or not isinstance(ctis, list) or not isinstance(floors, dict) or not isinstance(more, bool)
            or len(ids) + len(ctis) > _MAX_IDS):
        raise Refusal("/trl answer: bad field")
    # An entry that cannot name a token (a token id not of 32 bytes, a cti
    # not of 1-64) revokes nothing: it is skipped, and the rest of the page
    # applied, so one bad entry at the AS never holds back every later
    # revocation (attack pass). The caller says how many were skipped.
    good_ids = [x for x in ids if isinstance(x, bytes) and len(x) == 32]
    good_ctis = [x for x in ctis if isinstance(x, bytes) and 1 <= len(x) <= 64]
    skipped = len(ids) - len(good_ids) + len(ctis) - len(good_ctis)
    ids, ctis = good_ids, good_ctis
    for k in floors:
        v = floors[k]
        if not isinstance(k, str) or not k or isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
            raise Refusal("/trl answer: bad exi floor")
    if new < pos:
        raise Refusal("/trl position went back from %d to %d: refused" % (pos, new))
    return new, ids, ctis, floors, more, skipped


def time_answer(answer, floor):
    """Unix seconds of a /time answer; UplinkError when malformed or
    before `floor` (the last good time, or None)."""
    try:
        t = cbor.decode(answer, 2, 16)
    except ValueError:
        raise Refusal("/time answer is not CBOR")
    if isinstance(t, cbor.Tag) and t.tag == 1:
        t = t.value
    if not isinstance(t, int) or isinstance(t, bool) or not 0 < t < 1 << 40:
        raise Refusal("/time answer: not a Unix time in seconds")
    if floor is not None and t < floor:
        raise Refusal("the AS's time %d is before the last good time %d: refused" % (t, floor))
    return t


def put_introspect(buf, mid, token, tid):
    """POST /introspect {11: tid} (RFC 9200 sec. 5.9.1) in buf; returns the end."""
    pos = put_header(buf, _POST, mid, token, ("introspect",), None, _CF_ACE_CBOR)
    if len(tid) != 32 or pos + 37 > len(buf):
        raise ValueError("a token id is 32 bytes")
    buf[pos:pos + 5] = b"\xff\xa1\x0b\x58\x20"
    buf[pos + 5:pos + 37] = tid
    return pos + 37


def introspect_answer(answer, device_id):
    """(active, scope text or None) of a /introspect answer (RFC 9200 sec.
    5.9.2); Refusal when it is not CBOR, has no boolean 10 (active), a
    scope that is not text of at most 255 bytes, or an aud without this
    lock."""
    try:
        d = cbor.decode(answer, 4, _MAX_ANSWER)
    except ValueError:
        raise Refusal("/introspect answer is not CBOR")
    active = d.get(10) if isinstance(d, dict) else None
    if not isinstance(active, bool):
        raise Refusal("/introspect answer without active (10)")
    if not active:
        return False, None
    scope = d.get(9)
    if scope is not None and (not isinstance(scope, str) or len(scope) > _SCOPE_MAX):
        raise Refusal("/introspect answer: scope (9) is text of at most %d bytes" % _SCOPE_MAX)
    aud = d.get(3)
    if aud is not None and aud != device_id and not (isinstance(aud, list) and device_id in aud):
        raise Refusal("/introspect answer for another audience")
    return True, scope


class Answers:
    """Answers of the AS's /introspect, per token id (PROFILE sec. 7): at
    most `size` entries [token id, state, uptime ms, scope], made at boot.
    Who fills it: only decisions for an online-check permission whose every
    local check passed (a token the AS signed and, but for bearer tokens on
    DTLS, its proof of possession), one entry per token id. A queued entry
    (INTRO_PENDING) stays until it is asked or the AS cannot be asked; an
    answered one until `fresh_ms` are over, or until a new token id needs
    its slot (the oldest answer goes first)."""

    def __init__(self, size, fresh_ms):
        self.fresh_ms = fresh_ms
        self.table = [[None, INTRO_PENDING, 0, None] for _ in range(size)]

    def find(self, tid):
        for e in self.table:
            if e[0] == tid:
                return e
        return None

    def fresh(self, e, now):
        return e[1] != INTRO_PENDING and now - e[2] < self.fresh_ms

    def queue(self, tid, now):
        """Queue `tid` to be asked; False when every entry is queued."""
        e = self.find(tid)
        if e is None:
            for x in self.table:
                if x[0] is None:
                    e = x
                    break
        if e is None:
            for x in self.table:
                if x[1] != INTRO_PENDING and (e is None or x[2] - e[2] < 0):
                    e = x
        if e is None:
            return False
        e[0] = tid
        e[1] = INTRO_PENDING
        e[2] = now
        e[3] = None
        return True

    def queued(self):
        for e in self.table:
            if e[0] is not None and e[1] == INTRO_PENDING:
                return e
        return None

    def answer(self, e, tid, active, scope, now):
        if e[0] == tid:  # still ours (not cleared while the AS was asked)
            e[1] = INTRO_ACTIVE if active else INTRO_INACTIVE
            e[2] = now
            e[3] = scope

    def drop_queued(self):
        for e in self.table:
            if e[1] == INTRO_PENDING:
                e[0] = None

    def clear(self):
        for e in self.table:
            e[0] = None
            e[1] = INTRO_PENDING
            e[3] = None


def backoff_ms(fails, base_ms, max_ms, r):
    """Exponential backoff with jitter: a delay in [d/2, d], d = base *
    2**(fails - 1) capped at max; `r` a random 16-bit number."""
    d = base_ms
    for _ in range(fails - 1):
        d *= 2
        if d >= max_ms:
            break
    d = min(d, max_ms)
    return d // 2 + (d // 2) * r // 0xFFFF


class Uplink:
    """`ucfg`: config.Uplink; `cursors`: the app's [trl_pos, last good wall
    time], saved with the lock's state by `persist()` (raises OSError);
    `authz`: the Authorizer (its revoke() applies a revocation list and
    persists it; its online checks ask `ask()`: the uplink hands itself to
    it as `authz.introspection`); `connect()`: a new channel (see
    coap/dtls_client.py); `buf`: a bytearray of at least 1152 bytes it may
    share (see _exchange)."""

    def __init__(self, ucfg, device_id, log, clock, authz, cursors, persist, connect, say=print,
                 rand=os.urandom, buf=None):
        self.cfg = ucfg
        self.device_id = device_id
        self.log = log
        self.clock = clock
        self.authz = authz
        self.cursors = cursors
        self.persist = persist
        self.connect = connect
        self.say = say
        self.rand = rand
        # Requests are built and answers read here: the CoAPS server's
        # plaintext buffer when there is one (see _exchange), else one of
        # our own, made at boot while the heap is whole (a block this size
        # is not always there later on a fragmented 56 KiB heap).
        self.buf = buf if buf is not None and len(buf) >= _BUF else bytearray(_BUF)
        self._small = bytearray(4)  # a CoAP ping or an empty ACK (never both at once)
        r = rand(4)
        self._mid = (r[0] << 8) | r[1]
        self._tok = (r[2] << 8) | r[3]
        self.fails = {"time": 0, "trl": 0, "audit": 0, "introspect": 0}
        self._said = None  # the failure said last (None: the AS answered since)
        self.dropped_sent = -1
        now = clock.uptime_ms()
        self.next = {"time": now, "trl": now, "audit": now, "introspect": now}
        # Online checks (PROFILE sec. 7): the AS's answers, and the uptime
        # before which the AS is taken as not reachable (the backoff of a
        # round that did not reach it, or of a failed /introspect).
        self.answers = Answers(ucfg.introspect_entries, ucfg.introspect_ms)
        self.offline_until = 0
        self.unreachable = False  # the last round did not reach the AS
        self._wake = asyncio.Event()  # a token id was queued: the loop wakes at once
        authz.introspection = self
        # Figures for tests and benchmarks.
        self.rounds_ok = 0
        self.step_ms = 0
        self.chan = None      # the channel kept between rounds
        self.chan_ms = 0      # when it was last used
        self._more = False    # the last /audit round stopped at its batch cap
        self._trl_more = False  # the last /trl round stopped with pages left
        self.uploaded = 0
        self.low_heap = None  # smallest gc.mem_free() after a collection inside a round
        self._measured = False

    def rebound(self, same=False):
        """The lock was rebound to another AS (app.rebind): its revocation
        list starts over, every job is due, the channel follows the new
        configuration. The last good time stays (time never goes back).
        `same`: the AS is the one trusted already (a new address): only
        the channel changes."""
        if not same:
            self.cursors[0] = 0
            self.answers.clear()  # the old AS's word on its tokens
        self.dropped_sent = -1
        self.offline_until = 0
        self.unreachable = False
        self._close()  # a session with the old AS
        now = self.clock.uptime_ms()
        for name in self.next:
            self.next[name] = now
            self.fails[name] = 0
        retarget = getattr(self.connect, "retarget", None)
        if retarget is not None:
            try:
                retarget()
            except Exception as e:
                self.say("uplink: cannot follow the rebinding: %s" % (e,))

    def _r16(self):
        b = self.rand(2)
        return (b[0] << 8) | b[1]

    def ask(self, tid):
        """What a decision may take from the AS about token id `tid` now
        (lock/authz.py's online check), never waiting: (INTRO_ACTIVE, scope
        or None) or (INTRO_INACTIVE, None), a fresh answer;
        (INTRO_PENDING, None), queued to be asked (ahead of the other
        jobs; when every entry is queued, it is not, and the retry finds
        room); (INTRO_OFFLINE, None), the AS cannot be asked now."""
        now = self.clock.uptime_ms()
        answers = self.answers
        e = answers.find(tid)
        if e is not None and answers.fresh(e, now):
            return e[1], e[3]
        if self.unreachable or now < self.offline_until:
            return INTRO_OFFLINE, None
        self._wake.set()
        if e is None or e[1] != INTRO_PENDING:
            answers.queue(tid, now)
        elif now - e[2] >= _PENDING_MS:
            # Asked and not answered in time: the AS is not there now (the
            # round says so when its retransmissions are over). The answer,
            # when it comes, is kept for the next request.
            return INTRO_OFFLINE, None
        return INTRO_PENDING, None

    async def _sleep(self, ms):
        # Until `ms` are over or a token id is queued (ask()).
        ev = self._wake
        if not ev.is_set():
            try:
                if hasattr(asyncio, "wait_for_ms"):
                    await asyncio.wait_for_ms(ev.wait(), ms)
                else:
                    await asyncio.wait_for(ev.wait(), ms / 1000)
            except asyncio.TimeoutError:
                pass
        ev.clear()

    def _audit_due(self):
        # Records the AS has not acknowledged, or a `dropped` count it has not seen.
        return self.log.pending() or self.log.dropped != self.dropped_sent

    def _due(self, now):
        jobs = []
        if self.answers.queued() is not None and now >= self.next["introspect"]:
            jobs.append("introspect")
        for name in ("time", "trl", "audit"):
            if now >= self.next[name] and (name != "audit" or self._audit_due()):
                jobs.append(name)
        return jobs

    async def run(self):
        while True:
            now = self.clock.uptime_ms()
            if self.chan is not None and now - self.chan_ms >= _KEEP_MS:
                self._close()
            jobs = self._due(now)
            if not jobs:
                nx = self.next
                wait = min(nx["time"], nx["trl"], nx["audit"]) - now
                if self.answers.queued() is not None:
                    wait = min(wait, nx["introspect"] - now)
                await self._sleep(min(max(wait, 100), 1000))
                if self.next["audit"] <= self.clock.uptime_ms() and not self.log.pending():
                    self.next["audit"] = self.clock.uptime_ms() + 1000  # look again in a second
                continue
            await self.round(jobs)

    def _interval(self, name):
        c = self.cfg
        return c.time_ms if name == "time" else c.trl_ms if name == "trl" else c.audit_ms

    def _done(self, name, why=None):
        """Schedule job `name` after it went through (why None) or failed:
        its own exponential backoff with jitter. A failure is said when it
        is new (the first of an outage, or another reason): an AS that is
        not there is said once, not at every retry."""
        now = self.clock.uptime_ms()
        if why is None:
            self.fails[name] = 0
            if name == "introspect":
                self.next[name] = now  # asked whenever a token id is queued
                return
            # A backlog (the round stopped at its batch cap) goes on at once.
            more = self._more if name == "audit" else self._trl_more if name == "trl" else False
            self.next[name] = now + (0 if more else self._interval(name))
            return
        n = self.fails[name] = self.fails[name] + 1
        self.next[name] = now + backoff_ms(n, self.cfg.retry_ms, self.cfg.max_retry_ms, self._r16())
        if name == "introspect":
            # The AS cannot be asked: the offline policies decide until the
            # backoff is over (PROFILE sec. 7); the queued ids are not kept.
            self.offline_until = max(self.offline_until, self.next[name])
            self.answers.drop_queued()
        if why != self._said:
            self._said = why
            self.say("uplink: %s; retrying with backoff" % why)

    def _close(self):
        chan = self.chan
        self.chan = None
        if chan is not None:
            try:
                chan.close()
            except Exception:
                pass
        release = getattr(self.connect, "release", None)
        if release is not None:
            release()  # the DTLS context goes with the session

    async def _open(self):
        # A session (its DTLS context and wrapper, about 2.2 KB) is opened
        # only on a heap with room to spare for the decisions.
        gc.collect()
        if gc.mem_free() < self.cfg.min_free:
            raise MemoryError("less than %d bytes free (uplink.min_free_bytes)" % self.cfg.min_free)
        chan = self.connect()
        try:
            if hasattr(chan, "cipher"):
                await self._handshake(chan)
        except BaseException:
            chan.close()
            raise
        self.chan = chan
        return chan

    async def round(self, jobs):
        """Run `jobs` ("time", "trl", "audit") on one channel. A job whose
        answer is refused backs off alone; when the AS cannot be reached
        (no channel, no handshake, no answer, no heap) every job left backs
        off. The DTLS session is kept for the next round (_KEEP_MS idle at
        most: its wrapper is 0.4 KB of GC heap, mbedTLS's buffers are on
        the C heap), saving the handshake's EC operations; a kept session
        that no longer answers (the AS forgot it) is replaced once, at
        once. True when all of them went through."""
        left = list(jobs)
        self._measured = False
        retry = self.chan is not None
        try:
            refused = False
            while True:
                try:
                    chan = self.chan or await self._open()
                    while left:
                        if "introspect" not in left and self.answers.queued() is not None:
                            left.insert(0, "introspect")  # a decision asked: it goes next
                        name = left[0]
                        try:
                            if name == "introspect":
                                await self._introspect(chan)
                            elif name == "time":
                                await self._time(chan)
                            elif name == "trl":
                                await self._trl(chan)
                            else:
                                await self._audit(chan)
                            why = None
                        except Refusal as e:
                            why = str(e)
                            refused = True
                        left.pop(0)
                        self._done(name, why)
                    self.chan_ms = self.clock.uptime_ms()
                    gc.collect()
                    if gc.mem_free() < self.cfg.min_free:
                        self._close()  # kept only while the heap has room to spare
                    break
                except (UplinkError, OSError):
                    self._close()
                    if not retry:
                        raise
                    retry = False
                except BaseException:
                    self._close()
                    raise
        except MemoryError as e:
            gc.collect()
            guard = e.args and str(e.args[0]).startswith("less than")
            why = "no heap for a session%s" % (": %s" % e.args[0] if guard else "")
        except Exception as e:
            # One line: mbedTLS's messages come with newlines around them.
            why = "%s: %s" % (type(e).__name__, " ".join(str(e).split()))
        else:
            # Said once the AS answers everything again (a job it refused was
            # said by _done; saying "answers" after it made the lines alternate).
            if not refused and (self._said is not None or not self.rounds_ok):
                self._said = None
                self.say("uplink: the AS answers (%d record(s) uploaded; lowest free heap in a round %d bytes;"
                         " longest handshake step %d ms)" % (
                             self.uploaded, self.low_heap if self.low_heap is not None else -1, self.step_ms))
            self.rounds_ok += 1
            self.unreachable = False  # the AS answers
            return True
        for name in left:
            self._done(name, why)
        # The AS was not reached: the offline policies decide until a round
        # reaches it again.
        self.unreachable = True
        self.answers.drop_queued()
        return False

    async def _handshake(self, chan):
        """Run the DTLS handshake to its end without the request buffer
        (which may be shared, see _exchange): a CoAP ping (an empty CON,
        RFC 7252 sec. 4.3; the AS answers RST or nothing) is written until
        it goes out, which is once the session is up; mbedTLS steps the
        handshake and resends its flights from inside these calls.
        Nothing is allocated while it waits."""
        self._mid = (self._mid + 1) & 0xFFFF
        p = self._small
        p[0] = 0x40  # version 1, CON, no token; code 0.00
        p[1] = 0
        p[2] = self._mid >> 8
        p[3] = self._mid & 0xFF
        t0 = self.clock.uptime_ms()
        poll = 1
        while True:
            t = self.clock.uptime_ms()
            done = chan.write(p) is not None
            # The longest a handshake step held the loop (mbedTLS's EC
            # operations run inside one call), for the figures.
            self.step_ms = max(self.step_ms, self.clock.uptime_ms() - t)
            if done:
                return
            if self.clock.uptime_ms() - t0 > _HANDSHAKE_MS:
                raise UplinkError("DTLS handshake timed out")
            await asyncio.sleep_ms(poll)
            poll = min(poll * 2, _POLL_MAX_MS)

    def _note_heap(self):
        free = gc.mem_free() if hasattr(gc, "mem_free") else 0
        if self.low_heap is None or free < self.low_heap:
            self.low_heap = free

    # One exchange ---------------------------------------------------------
    async def _exchange(self, chan, build):
        """Send the request `build(buf, mid, token) -> length` writes,
        confirmable, and return (code, payload) of the answer. The buffer
        may be shared (the CoAPS server's plaintext buffer): it is used
        only between two awaits, so `build` is called again for every
        write (each handshake step, each retransmission) and must give the
        same bytes; the answer is read into it and copied out at once.
        Raises UplinkError (no answer) or Refusal (an error code)."""
        self._mid = (self._mid + 1) & 0xFFFF
        self._tok = (self._tok + 1) & 0xFFFF
        mid = self._mid
        token = bytes((self._tok >> 8, self._tok & 0xFF))
        buf = self.buf
        if chan.write(memoryview(buf)[:build(buf, mid, token)]) is None:
            raise UplinkError("the channel took no request")
        timeout = _ACK_TIMEOUT_MS + (_ACK_TIMEOUT_MS // 2) * self._r16() // 0xFFFF
        sent = self.clock.uptime_ms()
        tries = 0
        acked = False
        poll = 1
        while True:
            got = chan.readinto(buf)
            now = self.clock.uptime_ms()
            if got:
                if got >= len(buf):
                    raise Refusal("answer larger than %d bytes" % (len(buf) - 1))
                a = parse_answer(memoryview(buf)[:got], mid, token)
                if not self._measured:
                    # Once a round, at its fullest (the session up, an
                    # answer parsed): the live heap left, for the figures.
                    self._measured = True
                    gc.collect()
                    self._note_heap()
                if a is not None:
                    kind, v = a
                    if kind == "rst":
                        raise UplinkError("the AS reset the request")
                    if kind == "ack":
                        acked = True
                        sent = now
                    else:
                        code, payload, needs_ack, rmid = v
                        if needs_ack:
                            e = self._small
                            e[0] = 0x60  # version 1, ACK, no token
                            e[1] = 0
                            e[2] = rmid >> 8
                            e[3] = rmid & 0xFF
                            chan.write(e)
                        if code >> 5 != 2:
                            raise Refusal("the AS answered %d.%02d" % (code >> 5, code & 31))
                        return code, payload
                poll = 1
                continue
            if acked:
                if now - sent > _SEPARATE_MS:
                    raise UplinkError("no separate response")
            elif now - sent >= timeout:
                if tries >= _MAX_RETRANSMIT:
                    raise UplinkError("no answer")
                tries += 1
                timeout *= 2
                chan.write(memoryview(buf)[:build(buf, mid, token)])
                sent = now
            await asyncio.sleep_ms(poll)
            poll = min(poll * 2, _POLL_MAX_MS)

    # Jobs ---------------------------------------------------------------
    async def _introspect(self, chan):
        """Ask the AS about every queued token id (RFC 9200 sec. 5.9)."""
        answers = self.answers
        for _ in range(len(answers.table)):
            e = answers.queued()
            if e is None:
                return
            tid = e[0]
            _, payload = await self._exchange(chan, lambda b, mid, tok: put_introspect(b, mid, tok, tid))
            active, scope = introspect_answer(payload, self.device_id)
            payload = None
            answers.answer(e, tid, active, scope, self.clock.uptime_ms())

    async def _time(self, chan):
        _, payload = await self._exchange(chan, lambda b, mid, tok: put_header(b, _GET, mid, tok, ("time",)))
        t = time_answer(payload, self.cursors[1])
        was = self.clock.wall()
        self.clock.set_wall(t)
        if was is None or abs(was - t) > 2:
            self.say("uplink: clock set to %d by the AS (was %s)" % (t, was))
        self.cursors[1] = t
        try:
            self.persist()
        except OSError:
            pass  # said by persist; the floor is saved with the next change

    async def _trl(self, chan):
        for _ in range(_PAGES):
            pos = self.cursors[0]
            q = "after=%d" % pos
            _, payload = await self._exchange(chan, lambda b, mid, tok: put_header(b, _GET, mid, tok, ("trl",), q))
            new, ids, ctis, floors, more, skipped = trl_page(payload, pos)
            payload = None
            if skipped:
                self.say("uplink: /trl: %d entr%s that name no token skipped" % (skipped, "y" if skipped == 1 else "ies"))
            if new != pos or ids or ctis or floors:
                self.cursors[0] = new
                try:
                    # Applied, stored tokens it names dropped, and saved
                    # with the new position in one atomic write.
                    self.authz.revoke(ids, ctis, floors)
                except Refused as e:
                    self.cursors[0] = pos
                    raise Refusal("revocation list not applied: %s" % e)
                if ids or ctis:
                    self.say("uplink: %d revocation(s) applied, list position %d" % (len(ids) + len(ctis), new))
            if not more:
                self._trl_more = False
                return
        # More pages than one round takes (a long list, at boot): the next
        # round comes at once, not after trl_s.
        self._trl_more = True

    async def _audit(self, chan):
        log = self.log
        self._more = False
        for i in range(_BATCHES):
            if i and self.answers.queued() is not None:
                self._more = True  # a decision asked the AS: the rest after its answer
                return
            if not self._audit_due():
                return
            dropped = log.dropped
            batch = [0, 0, 0]  # records, last seq, payload end allowed

            def build(b, mid, tok, first=[True]):
                # The first build fixes how many records the request
                # carries; a retransmission rebuilds the same bytes.
                pos = put_header(b, _POST, mid, tok, ("audit",), None, _CF_CBOR)
                o = _Out(b, pos)
                o.append(0xFF)
                o.append(0xA5)
                enc = cbor.encode_into
                enc("log", o)
                enc(log.log_id, o)
                enc("boot", o)
                enc(log.boot, o)
                enc("lock", o)
                enc(self.device_id, o)
                enc("dropped", o)
                enc(dropped, o)
                enc("records", o)
                head = o.pos
                o.append(0x80)
                if first[0]:
                    first[0] = False
                    end = min(len(b), pos + 1 + self.cfg.batch_bytes)
                    k, p, last = log.raw_into(b, o.pos, end, _MAX_RECORDS)
                    if not k and log.pending():
                        # A record larger than a batch goes alone.
                        k, p, last = log.raw_into(b, o.pos, len(b), 1)
                        if not k:
                            raise Refusal("a record does not fit a request")
                    batch[0], batch[1], batch[2] = k, last, len(b)
                else:
                    k, p, last = log.raw_into(b, o.pos, len(b), batch[0])
                    if k != batch[0] or last != batch[1]:
                        raise Refusal("log changed under a retransmission")
                b[head] = 0x80 | k
                return p
            _, payload = await self._exchange(chan, build)
            n = audit_ack(payload, log.acked_seq, batch[1], log.next_seq - 1)
            payload = None
            self.dropped_sent = dropped
            if batch[0]:
                if n <= log.acked_seq:
                    raise Refusal("the AS stored nothing of records %d-%d" % (log.acked_seq + 1, batch[1]))
                log.ack(n)  # raises OSError when the cursor cannot be saved
                self.uploaded += batch[0]
        self._more = log.pending()
