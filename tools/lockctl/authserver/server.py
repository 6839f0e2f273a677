"""Bench AS: the transports. One thread, one select loop, two UDP sockets:

- CoAPS (DTLS 1.2, python-mbedtls), mutual certificate authentication:
  locks (their uplink, PROFILE sec. 7) and phones (the token endpoint). The
  AS presents its server certificate (issued by its CA) and requires a
  client certificate that chains to its CA (mbedTLS refuses any other in
  the handshake: self-signed, another CA's, none). After the handshake the
  peer is the lock, or else the phone, whose recorded certificate is
  exactly the one presented (Store.lock_by_cert, phone_by_cert); a
  CA-signed certificate the AS has not recorded (replaced, or never issued
  here) ends the session with close_notify. Requests carry that Peer.
- plain CoAP for phones (`plain_token`, on by default for the bench):
  POST /token only in effect (the lock resources answer 4.01 there). This
  leg has no client authentication and no confidentiality (RFC 9200 sec. 5
  wants DTLS or OSCORE); the token it returns is bound to the key
  registered for the client_id, so it opens nothing for whoever else asks,
  but anyone can learn what a phone is allowed. `lockctl as serve
  --no-plain` leaves phones CoAPS only.

CoAP messages are aiocoap's codec (aiocoap.Message.encode/decode); a CON
request gets a piggybacked ACK, a NON a NON; duplicates (same peer, same
MID within EXCHANGE_LIFETIME) get the same response (RFC 7252 4.5), so a
retransmitted token request does not mint twice. Tables are bounded:
sessions (`max_sessions`, the oldest idle one gives way), the duplicate
cache (`_DEDUP_MAX` entries).
"""
import collections
import select
import socket
import threading
import time

from mbedtls import pk, tls, x509
from mbedtls.exceptions import TLSError

from .resources import Peer, Resources

EXCHANGE_LIFETIME_S = 247        # RFC 7252 4.8.2
_DEDUP_MAX = 512
HANDSHAKE_S = 10.0
IDLE_S = 300.0
MAX_DATAGRAM = 65535
# Critical options this server understands (RFC 7252 5.4.1): Uri-Host,
# Uri-Port, Uri-Path, Uri-Query, Accept; others critical get 4.02.
_KNOWN_CRITICAL = {3, 7, 11, 15, 17}
_CERT_CIPHERS = (
    "TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8",       # RFC 7252 9.1.3.3's mandatory suite
    "TLS-ECDHE-ECDSA-WITH-AES-128-CCM",
    "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
    "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
    "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256",
)


class _Session:
    __slots__ = ("buf", "peer", "started", "last", "open")

    def __init__(self, buf, now):
        self.buf = buf
        self.peer = None
        self.started = now
        self.last = now
        self.open = False


class Server:
    """Serve a Home's resources. Ports 0 pick free ones (.coap_port,
    .coaps_port after construction). `events`: (what, addr, detail) for
    tests and the log: hvr, handshake, refused, fail, closed, request."""

    def __init__(self, home, bind="127.0.0.1", coap_port=None, coaps_port=None, max_sessions=32,
                 clock=time.time, say=None, plain=True):
        self.home = home
        self.resources = Resources(home, clock)
        self.say = say or (lambda msg: None)
        self.max_sessions = max_sessions
        self.events = collections.deque(maxlen=1000)
        self.sessions = {}
        self.dedup = collections.OrderedDict()
        self._stop = threading.Event()
        self.thread = None
        self.ctx = tls.ServerContext(self._dtls_conf())
        fam = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.dtls_sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.dtls_sock.bind((bind, home.cfg["coaps_port"] if coaps_port is None else coaps_port))
        self.coaps_port = self.dtls_sock.getsockname()[1]
        self.coap_sock = self.coap_port = None
        if plain:
            self.coap_sock = socket.socket(fam, socket.SOCK_DGRAM)
            self.coap_sock.bind((bind, home.cfg["coap_port"] if coap_port is None else coap_port))
            self.coap_port = self.coap_sock.getsockname()[1]

    def _dtls_conf(self):
        h = self.home
        store = tls.TrustStore()
        store.add(x509.CRT.from_DER(h.ca_der))
        for der in h.lock_cas():
            # Other ASes' CAs, for locks adopted before a rebinding
            # (Home.adopt_lock): a peer is still only a recorded certificate.
            store.add(x509.CRT.from_DER(der))
        key_der = h.server_key.private_bytes(*_pkcs8_der())
        return tls.DTLSConfiguration(
            certificate_chain=([x509.CRT.from_DER(h.server_cert_der), x509.CRT.from_DER(h.ca_der)],
                               pk.ECC.from_DER(key_der)),
            trust_store=store, validate_certificates=True,      # mbedTLS: client certificate required
            ciphers=_CERT_CIPHERS,
            lowest_supported_version=tls.DTLSVersion.DTLSv1_2,
            highest_supported_version=tls.DTLSVersion.DTLSv1_2,
            handshake_timeout_min=1.0, handshake_timeout_max=HANDSHAKE_S)

    # -- life cycle -----------------------------------------------------------
    def start(self):
        self.thread = threading.Thread(target=self.serve_forever, name="lockctl-as", daemon=True)
        self.thread.start()
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.close()

    def close(self):
        self._stop.set()
        if self.thread is not None:
            self.thread.join(5)
        self.dtls_sock.close()
        if self.coap_sock is not None:
            self.coap_sock.close()

    def serve_forever(self):
        socks = [self.dtls_sock] + ([self.coap_sock] if self.coap_sock is not None else [])
        while not self._stop.is_set():
            r, _, _ = select.select(socks, [], [], 0.05)
            now = time.monotonic()
            if self.coap_sock is not None and self.coap_sock in r:
                self._plain(now)
            if self.dtls_sock in r:
                self._dtls(now)
            if not r:
                self._timers(now)

    # -- plain CoAP (phones) ------------------------------------------------
    def _plain(self, now):
        try:
            data, addr = self.coap_sock.recvfrom(MAX_DATAGRAM)
        except OSError:
            return
        out = self._coap(("coap", addr), data, Peer.ANON, now)
        if out is not None:
            self.coap_sock.sendto(out, addr)

    # -- CoAPS (locks and phones) -------------------------------------------
    def _dtls(self, now):
        try:
            data, addr = self.dtls_sock.recvfrom(MAX_DATAGRAM)
        except OSError:
            return
        s = self.sessions.get(addr)
        if s is None:
            if not self._room(now):
                self.events.append(("full", addr, None))
                return
            buf = self.ctx.wrap_buffers()
            buf.setcookieparam(("%s:%d" % addr[:2]).encode())
            s = self.sessions[addr] = _Session(buf, now)
        s.buf.receive_from_network(data)
        self._step(addr, s, now)

    def _room(self, now):
        if len(self.sessions) < self.max_sessions:
            return True
        # The session idle longest gives way, if idle 5 s or more.
        addr, s = min(self.sessions.items(), key=lambda kv: kv[1].last)
        if now - s.last < 5:
            return False
        self._drop(addr, "evicted")
        return True

    def _flush(self, addr, buf):
        while True:
            out = buf.peek_outgoing(MAX_DATAGRAM)
            if not out:
                return
            try:
                self.dtls_sock.sendto(out, addr)
            except OSError:
                pass
            buf.consume_outgoing(len(out))

    def _drop(self, addr, why, notify=False):
        s = self.sessions.pop(addr, None)
        if s is not None and notify:
            try:
                s.buf.shutdown()
                self._flush(addr, s.buf)
            except (TLSError, OSError):
                pass
        self.events.append(("closed", addr, why))

    def _step(self, addr, s, now):
        buf = s.buf
        try:
            if not s.open:
                while buf._handshake_state is not tls.HandshakeStep.HANDSHAKE_OVER:
                    try:
                        buf.do_handshake()
                    except tls.WantReadError:
                        self._flush(addr, buf)
                        return
                    except tls.WantWriteError:
                        pass
                    self._flush(addr, buf)
                self._opened(addr, s, now)
                if not s.open:
                    return
            while True:
                try:
                    data = buf.read(MAX_DATAGRAM)
                except (tls.WantReadError, tls.WantWriteError):
                    return
                if not data:
                    return
                s.last = now
                out = self._coap(("coaps", addr), data, s.peer, now)
                if out is not None:
                    buf.write(out)
                    self._flush(addr, buf)
        except tls.HelloVerifyRequest:
            # RFC 6347 4.2.1: the cookie exchange; no state kept for it.
            self._flush(addr, buf)
            self.sessions.pop(addr, None)
            self.events.append(("hvr", addr, None))
        except TLSError as e:
            self._flush(addr, buf)
            self.sessions.pop(addr, None)
            closed = "0x7880" in str(e)          # the peer's close_notify
            self.events.append(("closed", addr, "peer") if closed else ("fail", addr, str(e)))
            if not closed:
                self.say("uplink: handshake or session with %s:%d failed: %s" % (addr[0], addr[1], e))

    def _opened(self, addr, s, now):
        cert = s.buf.getpeercert(binary_form=True)
        peer = None
        if cert:
            row = self.home.store.lock_by_cert(cert)
            if row is not None:
                peer = Peer("lock", row)
            else:
                row = self.home.store.phone_by_cert(cert)
                peer = Peer("phone", row) if row is not None else None
        if peer is None:
            # Chains to the CA (mbedTLS checked) but not a certificate this
            # AS has on record for a lock or an enabled phone: refused.
            self.events.append(("refused", addr, "certificate not on record"))
            self.say("coaps: %s:%d presented a certificate this AS has not on record: refused" % addr[:2])
            self._drop(addr, "refused", notify=True)
            return
        s.open, s.peer, s.last = True, peer, now
        self.events.append(("handshake", addr, peer.name))
        self.say("%s: %s connected from %s:%d (%s)" % ("uplink" if peer.kind == "lock" else "token",
                                                      peer.name, addr[0], addr[1], s.buf.cipher()))

    def _timers(self, now):
        for addr, s in list(self.sessions.items()):
            if not s.open and now - s.started > HANDSHAKE_S:
                self._drop(addr, "handshake timeout")
            elif s.open and now - s.last > IDLE_S:
                self._drop(addr, "idle", notify=True)
            elif not s.open:
                self._step(addr, s, now)        # DTLS retransmission timers
        while self.dedup and next(iter(self.dedup.values()))[0] < now - EXCHANGE_LIFETIME_S:
            self.dedup.popitem(last=False)

    # -- CoAP -----------------------------------------------------------------
    def _coap(self, where, data, peer, now):
        """The response datagram for one request datagram, or None."""
        import aiocoap
        import aiocoap.error
        try:
            req = aiocoap.Message.decode(data)
        except (aiocoap.error.Error, ValueError, IndexError, TypeError, UnicodeDecodeError):
            return None      # not CoAP: dropped (RFC 7252 4.2)
        if not req.code.is_request() or req.mtype not in (aiocoap.CON, aiocoap.NON):
            return None      # responses, empty ACK/RST: nothing for a server to do
        key = (where, peer.kind, peer.row["id"] if peer.row else None, req.mid)
        hit = self.dedup.get(key)
        if hit is not None:
            return hit[1]
        resp = self._respond(req, peer)
        resp.mid = req.mid if req.mtype == aiocoap.CON else (req.mid + 1) & 0xFFFF
        resp.mtype = aiocoap.ACK if req.mtype == aiocoap.CON else aiocoap.NON
        resp.token = req.token
        out = resp.encode()
        self.dedup[key] = (now, out)
        while len(self.dedup) > _DEDUP_MAX:
            self.dedup.popitem(last=False)
        return out

    def _respond(self, req, peer):
        import aiocoap
        from aiocoap.numbers.codes import Code
        bad = [int(o.number) for o in req.opt.option_list()
               if int(o.number) & 1 and int(o.number) not in _KNOWN_CRITICAL]
        if bad:
            r = self._msg(Code.BAD_OPTION, b"unrecognized critical option %d" % bad[0], None)
        else:
            method = {aiocoap.GET: "GET", aiocoap.POST: "POST", aiocoap.PUT: "PUT",
                      aiocoap.DELETE: "DELETE"}.get(req.code, str(req.code))
            path = tuple(req.opt.uri_path)
            res = self.resources.handle(method, path, list(req.opt.uri_query), bytes(req.payload), peer)
            self.events.append(("request", peer.name, "%s /%s -> %s" % (method, "/".join(path), res.code)))
            major, _, minor = res.code.partition(".")
            r = self._msg(Code((int(major) << 5) | int(minor)), res.payload, res.cf)
        return r

    @staticmethod
    def _msg(code, payload, cf):
        import aiocoap
        m = aiocoap.Message(code=code, payload=payload)
        if cf is not None:
            m.opt.content_format = cf
        return m


def _pkcs8_der():
    from cryptography.hazmat.primitives import serialization
    return serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
