"""CoAP over DTLS 1.2 for `lockctl coap --scheme coaps` (PROFILE.md sec. 3-4).

A DTLS 1.2 client on python-mbedtls (Mbed TLS), driven through its memory
buffers over one connected UDP socket, in the two modes of the profile:

- PSK mode (RFC 9202 sec. 3.3): psk_identity = the kid of the token's
  symmetric `cnf` key, PSK = that key (`lockctl token --psk` prints both);
- certificate mode (ECDHE-ECDSA): the lock's certificate must be exactly the
  one in the bundle (lock-cert.der), and chain to the bundle's AS CA
  (as-cert.pem) when the bundle has it.

CoAP messages are encoded and decoded with aiocoap's codec
(aiocoap.Message.encode / decode); reliability (CON, retransmission, empty
ACK then separate response) follows RFC 7252 sec. 4.

`DtlsPhone` is `client.Phone` over this transport: same upload / act /
discover / request.
"""
import asyncio
import os
import random
import select
import socket
import time

from mbedtls import tls as _tls
from mbedtls.exceptions import TLSError

from .client import Phone, _register_options

# The suites the lock's mbedTLS offers (README, issue 12), strongest for a
# constrained peer first; CCM-8 is CoAP's mandatory one (RFC 7252 sec. 9.1.3).
PSK_CIPHERS = (
    "TLS-PSK-WITH-AES-128-CCM-8",
    "TLS-PSK-WITH-AES-128-CCM",
    "TLS-PSK-WITH-AES-128-GCM-SHA256",
    "TLS-ECDHE-PSK-WITH-AES-128-CBC-SHA256",
)
CERT_CIPHERS = (
    "TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8",
    "TLS-ECDHE-ECDSA-WITH-AES-128-CCM",
    "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
)

HANDSHAKE_TIMEOUT_S = 10.0
ACK_TIMEOUT_S = 2.0          # RFC 7252 sec. 4.8
ACK_RANDOM_FACTOR = 1.5
MAX_RETRANSMIT = 4
EXCHANGE_TIMEOUT_S = 30.0
MAX_DATAGRAM = 65535


class DtlsError(Exception):
    """The DTLS session could not be set up or broke (handshake refused or
    timed out, lock certificate not the bundle's, peer alert)."""


class _Identity(str):
    """A PSK identity of arbitrary bytes: python-mbedtls takes a `str` and
    sends `identity.encode(...)`; the kid of a token is 8 random bytes, not
    UTF-8, so `encode` hands back the raw bytes."""

    def __new__(cls, raw):
        s = str.__new__(cls, raw.hex())
        s.raw = bytes(raw)
        return s

    def encode(self, *_a, **_k):
        return self.raw


def _load_der_or_pem(data):
    from mbedtls import x509
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.CRT.from_PEM(data.decode())
    return x509.CRT.from_DER(data)


def bundle_certs(bundle):
    """(lock certificate DER, AS CA certificate DER or None) of a bundle
    directory, as `lockctl provision` writes it (lock.json names the lock's
    certificate file)."""
    import json
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import serialization
    with open(os.path.join(bundle, "lock.json")) as f:
        cfg = json.load(f)
    name = cfg.get("lock_cert") or "lock-cert.der"
    path = os.path.join(bundle, name)
    try:
        with open(path, "rb") as f:
            lock = f.read()
    except OSError as e:
        raise DtlsError("bundle %s has no lock certificate (%s: %s)" % (bundle, name, e.strerror))
    if lock.lstrip().startswith(b"-----BEGIN"):
        lock = cx509.load_pem_x509_certificate(lock).public_bytes(serialization.Encoding.DER)
    ca = None
    ca_path = os.path.join(bundle, "as-cert.pem")
    if os.path.exists(ca_path):
        with open(ca_path, "rb") as f:
            ca = cx509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)
    return lock, ca


def _cert_names(der):
    """The DNS names (SAN, else CN) of a certificate, for hostname checking."""
    from cryptography import x509 as cx509
    from cryptography.x509.oid import NameOID
    c = cx509.load_der_x509_certificate(der)
    try:
        san = c.extensions.get_extension_for_class(cx509.SubjectAlternativeName)
        names = san.value.get_values_for_type(cx509.DNSName)
        if names:
            return names
    except cx509.ExtensionNotFound:
        pass
    return [a.value for a in c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


class DtlsChannel:
    """One DTLS 1.2 client session over a connected UDP socket.

    psk=(identity bytes, key bytes) selects PSK mode; otherwise lock_cert
    (DER) selects certificate mode, with ca_cert (DER) as the trust anchor
    when given. Every wait is bounded: the handshake by handshake_timeout,
    each read by its own timeout."""

    def __init__(self, host, port, psk=None, lock_cert=None, ca_cert=None, ciphers=None,
                 handshake_timeout=HANDSHAKE_TIMEOUT_S):
        if psk is None and lock_cert is None:
            raise DtlsError("coaps needs a PSK (identity and key) or the lock's certificate")
        self.host, self.port = host, port
        self.psk = psk
        self.lock_cert = lock_cert
        self.ca_cert = ca_cert
        self.ciphers = tuple(ciphers or (PSK_CIPHERS if psk else CERT_CIPHERS))
        self.handshake_timeout = handshake_timeout
        self.sock = None
        self.buf = None
        self.handshake_s = None
        self.mode = "psk" if psk else "certificate"

    def _context(self):
        kw = dict(ciphers=self.ciphers,
                  lowest_supported_version=_tls.DTLSVersion.DTLSv1_2,
                  highest_supported_version=_tls.DTLSVersion.DTLSv1_2,
                  handshake_timeout_min=1.0, handshake_timeout_max=self.handshake_timeout)
        if self.psk:
            ident, key = self.psk
            kw.update(pre_shared_key=(_Identity(ident), bytes(key)), validate_certificates=False)
            return _tls.ClientContext(_tls.DTLSConfiguration(**kw)), None
        if self.ca_cert is not None:
            store = _tls.TrustStore()
            store.add(_load_der_or_pem(self.ca_cert))
            names = _cert_names(self.lock_cert)
            kw.update(trust_store=store, validate_certificates=True)
            return _tls.ClientContext(_tls.DTLSConfiguration(**kw)), (names[0] if names else None)
        # No CA in the bundle: the pin below is the whole check.
        kw.update(validate_certificates=False)
        return _tls.ClientContext(_tls.DTLSConfiguration(**kw)), None

    def _flush(self):
        while True:
            out = self.buf.peek_outgoing(MAX_DATAGRAM)
            if not out:
                return
            self.sock.send(out)
            self.buf.consume_outgoing(len(out))

    def connect(self):
        ctx, server_name = self._context()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.connect((self.host, self.port))
            self.buf = ctx.wrap_buffers(server_name)
            t0 = time.monotonic()
            deadline = t0 + self.handshake_timeout
            while self.buf._handshake_state is not _tls.HandshakeStep.HANDSHAKE_OVER:
                # One handshake step per call: step on until mbedTLS needs
                # the peer (WantRead), then wait (bounded) for a datagram.
                # Waiting and calling again also lets mbedTLS resend a
                # flight when its retransmission timer has run out.
                want_read = False
                try:
                    self.buf.do_handshake()
                except _tls.WantReadError:
                    want_read = True
                except _tls.WantWriteError:
                    pass
                except TLSError as e:
                    self._flush_quietly()
                    raise DtlsError(self._explain(e)) from None
                self._flush()
                if not want_read:
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DtlsError(
                        "DTLS handshake with %s:%d timed out after %.1f s (%s mode; %s)" % (
                            self.host, self.port, self.handshake_timeout, self.mode,
                            "wrong PSK or unknown identity?" if self.psk else
                            "no DTLS server there?"))
                r, _, _ = select.select([self.sock], [], [], min(left, 0.05))
                if r:
                    data = self._recv_raw()
                    if data:
                        self.buf.receive_from_network(data)
            self.handshake_s = time.monotonic() - t0
            if self.lock_cert is not None and not self.psk:
                peer = self.buf.getpeercert(binary_form=True)
                if peer != self.lock_cert:
                    raise DtlsError("the lock at %s:%d presented a certificate that is not the "
                                    "bundle's lock certificate" % (self.host, self.port))
        except BaseException:
            self.close(notify=False)
            raise
        return self

    def _recv_raw(self):
        try:
            return self.sock.recv(MAX_DATAGRAM)
        except ConnectionRefusedError:
            raise DtlsError("nothing listens on %s:%d (ICMP port unreachable)" % (
                self.host, self.port)) from None

    def _flush_quietly(self):
        try:
            self._flush()
        except OSError:
            pass

    def _explain(self, e):
        msg = str(e)
        code = getattr(e, "err", None)
        what = "DTLS handshake with %s:%d failed (%s mode): %s" % (self.host, self.port, self.mode, msg)
        low = msg.lower()
        if "verify" in low or "x509" in low or "certificate" in low:
            what += " -- the lock's certificate is not the bundle's"
        elif "alert" in low and self.psk:
            what += " -- the lock refused the PSK identity or key"
        if code is not None and ("%x" % abs(code)) not in low:
            what += " [%s]" % code
        return what

    @property
    def cipher(self):
        return self.buf.cipher() if self.buf is not None else None

    def send(self, data):
        self.buf.write(data)
        self._flush()

    def recv(self, timeout):
        """The next application datagram, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.buf.read(MAX_DATAGRAM)
            except (_tls.WantReadError, _tls.WantWriteError):
                data = b""
            except TLSError as e:
                if "0x7880" in str(e):      # MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY
                    raise DtlsError("the lock at %s:%d closed the DTLS session (close_notify)" % (
                        self.host, self.port)) from None
                raise DtlsError("DTLS session with %s:%d broke: %s" % (self.host, self.port, e)) from None
            if data:     # b"": no complete record yet
                return data
            self._flush()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                data = self._recv_raw()
                if data:
                    self.buf.receive_from_network(data)

    def close(self, notify=True):
        if self.buf is not None and notify:
            try:
                self.buf.shutdown()     # close_notify
                self._flush()
            except (TLSError, OSError):
                pass
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.buf = None


def _split_path(path):
    path, _, query = path.partition("?")
    return tuple(p for p in path.split("/") if p), tuple(q for q in query.split("&") if q)


class CoapOverDtls:
    """CoAP request/response (RFC 7252) on a DtlsChannel, the codec aiocoap's."""

    def __init__(self, channel, exchange_timeout=EXCHANGE_TIMEOUT_S):
        self.ch = channel
        self.mid = random.randrange(0x10000)
        self.exchange_timeout = exchange_timeout

    def _next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def request(self, code, path, payload=b"", options=(), cf=None):
        import aiocoap
        from aiocoap.optiontypes import OpaqueOption
        req = aiocoap.Message(code=code, payload=payload)
        req.mtype = aiocoap.CON
        req.mid = self._next_mid()
        req.token = os.urandom(4)
        segs, query = _split_path(path)
        req.opt.uri_path = segs
        if query:
            req.opt.uri_query = query
        for num, val in options:
            req.opt.add_option(OpaqueOption(num, val))
        if cf is not None:
            req.opt.content_format = cf
        wire = req.encode()
        deadline = time.monotonic() + self.exchange_timeout
        acked = False
        timeout = ACK_TIMEOUT_S * random.uniform(1, ACK_RANDOM_FACTOR)
        sent = 0
        self.ch.send(wire)
        next_send = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise asyncio.TimeoutError()
            if not acked and now >= next_send:
                if sent >= MAX_RETRANSMIT:
                    raise DtlsError("no answer from %s:%d after %d retransmissions" % (
                        self.ch.host, self.ch.port, sent))
                sent += 1
                timeout *= 2
                self.ch.send(wire)
                next_send = now + timeout
            wait = (deadline if acked else min(deadline, next_send)) - now
            data = self.ch.recv(max(wait, 0))
            if data is None:
                continue
            try:
                resp = aiocoap.Message.decode(data)
            except Exception:
                continue        # not CoAP: drop (RFC 7252 sec. 4.2)
            if resp.mtype == aiocoap.RST and resp.mid == req.mid:
                raise DtlsError("the lock reset the request (RST)")
            if resp.mtype == aiocoap.ACK and resp.mid == req.mid and int(resp.code) == 0:
                acked = True      # separate response follows
                continue
            if resp.token != req.token:
                if resp.mtype == aiocoap.CON:
                    self._empty(aiocoap.RST, resp.mid)
                continue
            if resp.mtype == aiocoap.ACK and resp.mid != req.mid:
                continue
            if resp.mtype == aiocoap.CON:
                self._empty(aiocoap.ACK, resp.mid)
            return resp

    def _empty(self, mtype, mid):
        import aiocoap
        m = aiocoap.Message(code=aiocoap.EMPTY)
        m.mtype = mtype
        m.mid = mid
        m.token = b""
        self.ch.send(m.encode())


class DtlsPhone(Phone):
    """client.Phone over CoAPS: psk=(identity, key) for PSK mode, or
    lock_cert (+ ca_cert) for certificate mode."""

    def __init__(self, host, port, device_id, token=None, key=None, psk=None, lock_cert=None,
                 ca_cert=None, ciphers=None, handshake_timeout=HANDSHAKE_TIMEOUT_S,
                 exchange_timeout=EXCHANGE_TIMEOUT_S):
        super().__init__(host, port, device_id, token, key, scheme="coaps")
        self.channel = DtlsChannel(host, port, psk=psk, lock_cert=lock_cert, ca_cert=ca_cert,
                                   ciphers=ciphers, handshake_timeout=handshake_timeout)
        self.coap = CoapOverDtls(self.channel, exchange_timeout)

    @property
    def handshake_s(self):
        return self.channel.handshake_s

    @property
    def cipher(self):
        return self.channel.cipher

    async def __aenter__(self):
        _register_options()
        await asyncio.to_thread(self.channel.connect)
        return self

    async def __aexit__(self, *a):
        await asyncio.to_thread(self.channel.close)

    async def _send(self, method, path, payload=b"", options=(), cf=None):
        import aiocoap
        return await asyncio.to_thread(self.coap.request, getattr(aiocoap, method), path,
                                       payload, options, cf)
