"""Transport: CoAP over DTLS 1.2 (RFC 6347; RFC 7252 sec. 9) on one UDP
socket, in the two modes of PROFILE sec. 3-4: PSK mode (RFC 9202 sec. 3.3)
and certificate mode (ECDHE-ECDSA with the lock's own key and certificate;
the client is anonymous at this layer and proves possession inside CoAP).
The only module that touches `tls`.

One UDP socket serves every client: each client address gets a `_Peer`, an
`io.IOBase` stream that mbedTLS reads (the datagram just received from that
address) and writes (a datagram sent back to it), wrapped by
`SSLContext.wrap_socket(server_side=True, client_id=<address bytes>)`.

Facts of MicroPython's `tls` (mbedTLS 3.6) this is built on (issue 12):
- the first ClientHello of a client is answered with a HelloVerifyRequest
  (a cookie bound to client_id) and raises OSError(-0x6A80); that wrapper is
  dropped: a ClientHello without a valid cookie leaves no state here, so a
  spoofed one costs one HelloVerifyRequest (smaller than the ClientHello) and
  no table slot. The ClientHello carrying the cookie gets a new wrapper.
- `server_psk_keys` is any object with .get(identity) -> key | None, asked
  once per handshake (from inside the recv() that processes the client's
  key exchange). Setting it restricts that context to PSK suites for good,
  so the two modes need two contexts: each ClientHello goes to the PSK one
  when it offers a PSK key exchange, else to the certificate one.
- there is no "handshake done" query that is safe before the end
  (cipher() of an unfinished handshake has no suite): the server's own
  ChangeCipherSpec, written only once the client's Finished verified, marks
  the session established.

PSK identities (RFC 9202 sec. 3.3): the lookup maps an identity (the kid of
a token posted to /authz-info, or, sec. 3.3.2, the token itself) to the key
and to the session's authenticated peer handed to the CoAP core (the kid);
`session_ok(kid)` is asked every second and a session whose token expired
or was revoked ends.

Session table: at most `max_sessions` entries (handshaking or established);
a handshake must finish within `handshake_ms`, a session idle for
`idle_ms` is dropped. A ClientHello from the address of an established
session goes through a fresh wrapper: once its cookie is valid (the client
really is at that address) it replaces the old session; a spoofed one
cannot. Records from unknown addresses that are not a ClientHello, garbage,
failed handshakes and handler errors are dropped (and counted); nothing
stops the loop. A handshake that fails after the cookie exchange (the
address is verified) is reported to `on_failure(addr, kind, identity)`,
kind one of FAIL_UNKNOWN_IDENTITY, FAIL_PSK_MISMATCH, FAIL_HANDSHAKE; a
ClientHello from an address `admit(addr)` refuses gets no answer.
"""
import asyncio
import errno
import gc
import io
import time

import tls
from micropython import const

_HELLO_VERIFY_REQUIRED = const(-0x6A80)
_CT_CCS = const(20)
_CT_ALERT = const(21)
_CT_HANDSHAKE = const(22)
_HS_CLIENT_HELLO = const(1)
_HS_SERVER_HELLO = const(2)
_MAX_RECORDS = const(4)  # application records taken from one datagram
_SLOW_HANDSHAKE_MS = const(3000)  # a handshake this old gives way to a verified newcomer
_YIELD_IDLE_MS = const(5000)  # so does a session idle this long
_SMALL_RX = const(512)  # a receive on a heap with no larger block (PSK handshakes fit)

# The suites each mode offers, in the lock's order of preference (mbedTLS
# servers choose by their own order): RFC 7925's (RFC 7252 sec. 9.1.3's
# mandatory CCM-8 ones) first, then the other AEADs, then CBC for peers with
# nothing else; ECDHE-PSK adds forward secrecy for PSK clients that offer it
# alone. Names the port's mbedTLS lacks are left out (SSLContext.get_ciphers).
PSK_SUITES = ("TLS-PSK-WITH-AES-128-CCM-8", "TLS-PSK-WITH-AES-128-CCM", "TLS-PSK-WITH-AES-128-GCM-SHA256",
              "TLS-PSK-WITH-AES-256-GCM-SHA384", "TLS-ECDHE-PSK-WITH-AES-128-CBC-SHA256",
              "TLS-PSK-WITH-AES-128-CBC-SHA256")
CERT_SUITES = ("TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8", "TLS-ECDHE-ECDSA-WITH-AES-128-CCM",
               "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
               "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256")

# Why a handshake failed, for on_failure.
FAIL_UNKNOWN_IDENTITY = const(1)  # PSK identity the lock has no key for
FAIL_PSK_MISMATCH = const(2)  # a known identity, but the client's Finished did not verify under its key
FAIL_HANDSHAKE = const(3)  # anything else: no common suite, a bad message, an alert
FAIL_LOCK = const(4)  # the lock's own fault in the identity lookup (no heap)


class PskKeys:
    """`server_psk_keys` for the PSK context: `lookup(identity, peer) ->
    (key, session id) | None`, never raising. Remembers, for the handshake
    in progress, the identity asked (`asked`) and the session id found
    (`session`, None when the identity is unknown)."""

    def __init__(self, lookup):
        self.lookup = lookup
        self.peer = None
        self.asked = None
        self.session = None
        self.fault = False

    def get(self, identity):
        self.asked = bytes(identity)
        self.session = None
        self.fault = False
        try:
            found = self.lookup(self.asked, self.peer)
        except Exception:
            self.fault = True  # not the client's doing: not an unknown identity
            return None
        if found is None:
            return None
        key, self.session = found
        return key


def _has_record(d, content_type, handshake_type=-1):
    """Does the datagram `d` hold a DTLS record of `content_type` (the
    record headers are plaintext: type(1) version(2) epoch(2) seq(6)
    length(2)); with `handshake_type`, a plaintext (epoch 0) handshake
    record whose message is of that type?"""
    i = 0
    while i + 13 <= len(d):
        if d[i] == content_type and (handshake_type < 0 or (
                d[i + 3] == 0 and d[i + 4] == 0 and i + 13 < len(d) and d[i + 13] == handshake_type)):
            return True
        i += 13 + ((d[i + 11] << 8) | d[i + 12])
    return False


def _client_id(addr):
    return addr if isinstance(addr, bytes) else repr(addr).encode()


def _is_client_hello(d):
    # Record: type(1) version(2) epoch(2) seq(6) length(2); then the
    # handshake header: msg_type(1) ...; a ClientHello is always epoch 0.
    return len(d) > 25 and d[0] == _CT_HANDSHAKE and d[3] == 0 and d[4] == 0 and d[13] == _HS_CLIENT_HELLO


# IANA TLS cipher suite values whose key exchange is PSK, DHE_PSK, RSA_PSK
# or ECDHE_PSK (RFC 4279, 4785, 5487, 5489, 6209, 6367, 6655, 7905, 8442).
_PSK_RANGES = ((0x002C, 0x002E), (0x008A, 0x0095), (0x00A8, 0x00AD), (0x00AE, 0x00B9), (0xC033, 0xC03B),
               (0xC064, 0xC06B), (0xC06C, 0xC071), (0xC08E, 0xC09B), (0xC0A4, 0xC0AB), (0xCCAB, 0xCCAE),
               (0xD001, 0xD005))


def offers_psk(d):
    """True when the ClientHello record `d` (one record, unfragmented: the
    usual case; otherwise the suites seen so far) offers a PSK key exchange
    (RFC 6347 sec. 4.2.1 layout: record header 13 bytes, handshake header
    12, client_version 2, random 32, session_id, cookie, cipher_suites)."""
    i = 59
    try:
        i += 1 + d[i]  # session_id
        i += 1 + d[i]  # cookie
        end = min(i + 2 + ((d[i] << 8) | d[i + 1]), len(d))
        i += 2
        while i + 1 < end:
            c = (d[i] << 8) | d[i + 1]
            for lo, hi in _PSK_RANGES:
                if lo <= c <= hi:
                    return True
            i += 2
    except IndexError:
        pass
    return False


class _Peer(io.IOBase):
    def __init__(self, sock, addr, now):
        self.sock = sock
        self.addr = addr
        self.rx = None
        self.tls = None
        self.psk = False  # which context: PSK or certificate mode
        self.alert = False  # the datagram being read holds an alert record
        self.hello = False  # a ServerHello went out (the cookie was valid)
        self.fault = False  # the identity lookup failed on the lock's side
        self.asked = None  # the PSK identity the client sent
        self.identity = None  # the session id that identity authenticated (PSK mode)
        self.up = False
        self.born = now
        self.last = now

    def readinto(self, buf):
        d = self.rx
        if d is None:
            return None  # EAGAIN: mbedTLS waits for the next datagram
        self.rx = None
        n = min(len(d), len(buf))
        buf[:n] = d[:n]
        return n

    def write(self, buf):
        if not self.hello:
            # mbedTLS answers a ClientHello with a ServerHello only once its
            # cookie verified: the client is at this address.
            self.hello = _has_record(buf, _CT_HANDSHAKE, _HS_SERVER_HELLO)
        if not self.up:
            # The server's ChangeCipherSpec ends its last flight: the
            # client's Finished has been verified.
            self.up = _has_record(buf, _CT_CCS)
        return self.sock.sendto(buf, self.addr)

    def ioctl(self, req, arg):
        return 0

    def close(self):
        t = self.tls
        self.tls = None
        if t is not None:
            try:
                t.close()
            except Exception:
                pass


class Contexts:
    """What a DTLS server holds for good, made first at boot while the heap
    is still whole (an SSLContext is one block of about 1.7 KB, which a heap
    fragmented by the state restore and the log scan may no longer have):
    the PSK-mode context (`psk`), the certificate-mode one (`cert`:
    (certificate DER, private key DER)), the plaintext buffer and the
    receive reserve (see DtlsServer.serve; idle until serving starts, so
    the state restore may read into it). Raises ValueError (no mode),
    MemoryError, or the `tls` module's errors (a certificate or key it
    cannot load)."""

    def __init__(self, psk=True, cert=None, bufsize=1152):
        if not psk and cert is None:
            raise ValueError("DTLS: neither PSK nor certificate mode configured")
        self.keys = PskKeys(None)
        self.psk = self.cert = None
        if psk:
            self.psk = tls.SSLContext(tls.PROTOCOL_DTLS_SERVER)
            self.psk.server_psk_keys = self.keys
            _suites(self.psk, PSK_SUITES)
        if cert is not None:
            self.cert = tls.SSLContext(tls.PROTOCOL_DTLS_SERVER)
            self.cert.load_cert_chain(cert[0], cert[1])
            _suites(self.cert, CERT_SUITES)
        self.bufsize = bufsize
        # Plaintext lands here (recv_into): no block of a request's size is
        # needed per datagram on a fragmented heap.
        self.buf = bytearray(bufsize + 1)
        self.reserve = bytearray(bufsize + 64)


class DtlsServer:
    def __init__(self, sock, server, contexts, psk_lookup=None, max_sessions=3, idle_ms=60000,
                 handshake_ms=10000, say=None, now_ms=None, transport="coaps", admit=None,
                 on_failure=None, session_ok=None):
        """`sock`: a bound UDP socket; `server`: the CoapServer; `contexts`:
        a Contexts. `psk_lookup(identity bytes, addr) -> (key, session id)
        | None`: the PSK-mode keys (needed when contexts has PSK mode).
        `now_ms`: milliseconds that never wrap (the lock's uptime).
        `admit(addr) -> bool`: may this address start a handshake (the
        lockout); `on_failure(addr, kind, session id | None, token as
        identity)`: a handshake failed (FAIL_*); `session_ok(session id) ->
        bool`: does the token a PSK session is bound to still hold."""
        self.sock = sock
        self.server = server
        self.keys = contexts.keys
        self.keys.lookup = psk_lookup
        self.psk_ctx = contexts.psk
        self.cert_ctx = contexts.cert
        self.bufsize = contexts.bufsize
        self.buf = contexts.buf
        self.reserve = contexts.reserve  # taken by serve()
        self.admit = admit
        self.on_failure = on_failure
        self.session_ok = session_ok
        self.max_sessions = max_sessions
        self.idle_ms = idle_ms
        self.handshake_ms = handshake_ms
        self.say = say
        self.now = now_ms or _uptime_ms()
        self.transport = transport
        self.peers = {}
        # Counters (bench and tests read them).
        self.handshakes = 0
        self.failed = 0
        self.verify_requests = 0
        self.dropped = 0
        self.refused = 0

    def _say(self, msg):
        if self.say:
            try:
                self.say("coaps: " + msg)
            except Exception:
                pass

    # Session table ------------------------------------------------------
    def expire(self, now=None):
        """Drop timed-out handshakes, idle sessions and PSK sessions whose
        token no longer holds (RFC 9202 sec. 3.3: the session is bound to
        the token; expired or revoked, it ends)."""
        if now is None:
            now = self.now()
        gone = []
        for addr, p in self.peers.items():
            if p.up:
                if now - p.last >= self.idle_ms:
                    gone.append((addr, "idle"))
                elif p.identity is not None and self.session_ok is not None and not self.session_ok(p.identity):
                    gone.append((addr, "its token expired or was revoked"))
            elif now - p.born >= self.handshake_ms:
                gone.append((addr, "handshake timeout"))
        for addr, why in gone:
            self._drop(addr, why)

    def _drop(self, addr, why=None):
        p = self.peers.pop(addr, None)
        if p is not None:
            p.close()
            if why:
                p = None
                gc.collect()
                self._say("session %s ended: %s, %d session(s), heap free %d" % (
                    _show(addr), why, len(self.peers), gc.mem_free()))

    def _wrap(self, p):
        ctx = self.psk_ctx if p.psk else self.cert_ctx
        p.tls = ctx.wrap_socket(p, server_side=True, do_handshake_on_connect=False, client_id=_client_id(p.addr))

    # One datagram ---------------------------------------------------------
    def datagram(self, data, addr):
        """Feed one received datagram; never raises."""
        now = self.now()
        p = self.peers.get(addr)
        try:
            if _is_client_hello(data) and (p is None or p.up):
                self._hello(data, addr, p, now)
                return
            if p is None:
                self.dropped += 1  # not a ClientHello, no session: garbage or stale
                return
            if p.up and len(data) > 4 and data[3] == 0 and data[4] == 0:
                # Epoch 0 (plaintext) on an established session: nothing the
                # peer sends there any more but a new ClientHello (above);
                # anyone can forge it, so it must not reach (and end) the session.
                self.dropped += 1
                return
            p.rx = data
            p.alert = _has_record(data, _CT_ALERT)
            self._pump(p, now)
        except MemoryError as e:
            self.server.report(e)
            self._drop(addr, "no heap")
            # A session idle long enough to give way to a newcomer gives way
            # to the heap too (the client retransmits and gets in).
            v = self._victim(now)
            if v is not None:
                self._drop(v, "gave way: no heap for another client")
            gc.collect()
        except Exception as e:
            self.server.report(e)

    def _victim(self, now):
        """The peer that gives way to a verified newcomer when the table is
        full: a handshake running for _SLOW_HANDSHAKE_MS or more (oldest
        first), else the session idle longest if idle for _YIELD_IDLE_MS or
        more; None: everyone is busy, the newcomer is refused. (A client
        that completes the cookie exchange and goes silent, or keeps a
        session it does not use, no longer holds a slot for long.)"""
        best = None
        best_key = None
        for addr, p in self.peers.items():
            if not p.up:
                key = (0, p.born) if now - p.born >= _SLOW_HANDSHAKE_MS else None
            else:
                key = (1, p.last) if now - p.last >= _YIELD_IDLE_MS else None
            if key is not None and (best_key is None or key < best_key):
                best, best_key = addr, key
        return best

    def _hello(self, data, addr, old, now):
        if self.admit is not None and not self.admit(addr):
            self.refused += 1  # locked out: not even a HelloVerifyRequest
            return
        full = False
        if old is None and len(self.peers) >= self.max_sessions:
            self.expire(now)
            full = len(self.peers) >= self.max_sessions
            if full and self._victim(now) is None:
                self.refused += 1
                return
        p = _Peer(self.sock, addr, now)
        # The client's suites choose the mode; with one mode configured it
        # gets that one (and a client without a common suite fails there).
        p.psk = self.cert_ctx is None or (self.psk_ctx is not None and offers_psk(data))
        p.rx = data
        self._wrap(p)
        if not self._step(p, now):
            return  # HelloVerifyRequest sent (or a bad hello): no state kept
        if not p.hello:
            # No ServerHello: mbedTLS buffered a fragment or dropped the
            # hello without a word. Nothing proves the address: no state,
            # and an established session from it stays.
            p.close()
            self.dropped += 1
            return
        # The cookie was valid: the client is at this address.
        if old is not None:
            self._drop(addr, "replaced by a new handshake")
        elif full:
            victim = self._victim(now)
            if victim is None:
                p.close()
                self.refused += 1
                return
            self._drop(victim, "gave way to a new client (table full)")
        self.peers[addr] = p

    def _step(self, p, now):
        """Run the handshake/record layer on the pending datagram. Returns
        True while the wrapper is usable."""
        keys = self.keys
        keys.asked = None
        keys.peer = p.addr
        try:
            msg = p.tls.recv_into(self.buf)
        except OSError as e:
            self._took(p)
            code = e.args[0] if e.args else 0
            if code == errno.EAGAIN:
                return True
            p.close()
            if code == _HELLO_VERIFY_REQUIRED:
                self.verify_requests += 1
                return False
            self._failed(p, code)
            return False
        self._took(p)
        if msg is not None:
            if p.up:
                self._app(p, msg, now)
        return True

    def _took(self, p):
        # What the PSK callback saw during this step belongs to this peer.
        keys = self.keys
        keys.peer = None
        if keys.asked is not None:
            p.asked = keys.asked
            p.identity = keys.session
            p.fault = keys.fault
            keys.asked = None

    def _failed(self, p, code):
        self.failed += 1
        if p.up:
            kind = None  # a record error on an established session: not a handshake
        elif p.asked is None:
            kind = FAIL_HANDSHAKE
        elif p.fault:
            kind = FAIL_LOCK
        elif p.identity is None:
            kind = FAIL_UNKNOWN_IDENTITY
        else:
            kind = FAIL_PSK_MISMATCH
        self._say("%s from %s failed: %d%s" % (
            "record" if kind is None else "handshake", _show(p.addr), code,
            "" if p.asked is None else " (psk identity %s)" % _ident(p.asked)))
        if kind is not None and self.on_failure is not None:
            try:
                self.on_failure(p.addr, kind, p.identity, p.asked is not None and len(p.asked) > 64)
            except Exception as e:
                self.server.report(e)

    def _pump(self, p, now):
        was_up = p.up
        if not self._step(p, now):
            self._drop(p.addr)
            return
        if p.up:
            if not was_up:
                p.last = now
                self.handshakes += 1
                gc.collect()
                self._say("session %s up, %s, %d session(s), heap free %d" % (
                    _show(p.addr), "certificate mode" if not p.psk else "psk identity " + _ident(p.asked),
                    len(self.peers), gc.mem_free()))
                p.asked = None  # a token as identity (sec. 3.3.2) need not stay on the heap
            # More records in the same datagram (mbedTLS keeps them buffered).
            for _ in range(_MAX_RECORDS - 1):
                if p.tls is None:
                    break
                try:
                    msg = p.tls.recv_into(self.buf)
                except OSError as e:
                    if not (e.args and e.args[0] == errno.EAGAIN):
                        self._drop(p.addr, "record error %s" % (e.args[0] if e.args else e))
                    break
                if msg is None:
                    break
                self._app(p, msg, now)

    def _app(self, p, msg, now):
        # msg: how many plaintext bytes recv_into put in self.buf; 0 is a
        # close_notify, or an empty application record (legal, RFC 5246
        # sec. 6.2.1), which is ignored: only a datagram with an alert
        # record ends the session.
        if msg == 0:
            if p.alert:
                self._drop(p.addr, "close_notify")
            return
        p.last = now  # only a record that decrypted and verified keeps a session alive
        n = min(msg, self.bufsize)
        out = self.server.handle(memoryview(self.buf)[:n], p.addr, self.transport, p.identity, msg > self.bufsize)
        if out is not None and p.tls is not None:
            p.tls.send(out)

    # The loop ---------------------------------------------------------------
    async def serve(self):
        """Serve until cancelled (MicroPython asyncio).

        Heap (as in udp.serve): a receive allocates its buffer and then the
        datagram; on a small, fragmented GC heap no such block may be left
        (mbedTLS's own buffers are on the C heap on the unix and ESP32
        ports: MICROPY_MBEDTLS_CONFIG_BARE_METAL is off; the GC heap holds
        the contexts, about 1.7 KB each, and the wrappers, about 1.4 KB a
        session: bench_coaps.py). A reserve block of the receive size is
        kept between datagrams and released for a receive that failed; failing that, the datagram
        is taken in _SMALL_RX bytes (a longer record then fails its MAC and
        is dropped, as any damaged record); a datagram that still cannot be
        received is dropped into one preallocated byte, so the loop never
        spins."""
        sock = self.sock
        sock.setblocking(False)
        sweeper = asyncio.create_task(self._sweep())
        n = self.bufsize + 64  # a record's header and MAC on top of a request
        sink = bytearray(1)
        reserve = self.reserve  # made at boot with the contexts
        self.reserve = None
        if reserve is None:
            gc.collect()
            reserve = _take(n)
        try:
            while True:
                yield asyncio.core._io_queue.queue_read(sock)
                data = None
                try:
                    try:
                        data, addr = sock.recvfrom(n)
                    except MemoryError:
                        reserve = None
                        gc.collect()
                        try:
                            data, addr = sock.recvfrom(n)
                        except MemoryError:
                            data, addr = sock.recvfrom(_SMALL_RX)
                except OSError as e:
                    if not (e.args and e.args[0] == errno.EAGAIN):
                        self.server.report(e)
                except MemoryError as e:
                    self.server.report(e)
                    self.dropped += 1
                    try:
                        sock.readinto(sink)
                    except OSError:
                        pass
                if data is not None:
                    self.datagram(data, addr)
                    data = None
                if reserve is None:
                    gc.collect()
                    reserve = _take(n)
        finally:
            sweeper.cancel()

    async def _sweep(self, period_ms=1000):
        while True:
            await asyncio.sleep_ms(period_ms)
            try:
                self.expire()
            except Exception as e:
                self.server.report(e)


def _suites(ctx, names):
    have = ctx.get_ciphers()
    ctx.set_ciphers([n for n in names if n in have])


def _take(size):
    try:
        return bytearray(size)
    except MemoryError:
        return None


def _uptime_ms():
    # A non-wrapping millisecond count from ticks_ms, for use without a clock.
    st = [time.ticks_ms(), 0]

    def now():
        t = time.ticks_ms()
        st[1] += time.ticks_diff(t, st[0])
        st[0] = t
        return st[1]
    return now


def _ident(identity):
    # A kid in hex; a token as identity (RFC 9202 sec. 3.3.2) by its size.
    if identity is None:
        return "-"
    if len(identity) > 16:
        return "<%d-byte token>" % len(identity)
    return identity.hex()


def _show(addr):
    if isinstance(addr, bytes) and len(addr) >= 8:
        # struct sockaddr_in on the unix port: family(2) port(2) addr(4)
        return "%d.%d.%d.%d:%d" % (addr[4], addr[5], addr[6], addr[7], (addr[2] << 8) | addr[3])
    return repr(addr)
