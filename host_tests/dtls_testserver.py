"""A tiny CoAPS responder for host tests: python-mbedtls as a DTLS 1.2
server (PSK store or certificate) on a loopback UDP socket, in a thread.
It answers CoAP requests (aiocoap's codec) with a piggybacked ACK:
POST authz-info -> 2.01 {39: cnonce}; anything else -> 2.05 whose CBOR
payload is [method code, path, payload]."""
import select
import socket
import threading

import cbor2
from mbedtls import pk, x509
from mbedtls import tls
from mbedtls.exceptions import TLSError

CNONCE = bytes(range(16))


class DtlsTestServer:
    def __init__(self, psk_store=None, cert_der=None, key_der=None, ciphers=None, host="127.0.0.1",
                 plain=False):
        kw = dict(lowest_supported_version=tls.DTLSVersion.DTLSv1_2,
                  highest_supported_version=tls.DTLSVersion.DTLSv1_2,
                  validate_certificates=False)
        if ciphers:
            kw["ciphers"] = tuple(ciphers)
        if psk_store is not None:
            kw["pre_shared_key_store"] = psk_store
        if cert_der is not None:
            kw["certificate_chain"] = ([x509.CRT.from_DER(cert_der)], pk.ECC.from_DER(key_der))
        self.ctx = tls.ServerContext(tls.DTLSConfiguration(**kw))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.plain = None         # plain CoAP beside it (authz-info before a PSK handshake)
        if plain:
            self.plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.plain.bind((host, 0))
            self.plain_port = self.plain.getsockname()[1]
        self.plain_requests = []
        self.peers = {}
        self.datagrams = []       # every datagram received (addr, bytes)
        self.requests = []        # decoded CoAP requests
        self.events = []          # ("handshake", addr, cipher) / ("fail", addr, error) / ("hvr", addr)
        self.drop_requests = 0    # drop this many application datagrams (retransmission test)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        self._stop.set()
        self.thread.join(5)
        self.sock.close()
        if self.plain is not None:
            self.plain.close()

    def _flush(self, buf, addr):
        while True:
            out = buf.peek_outgoing(65535)
            if not out:
                return
            self.sock.sendto(out, addr)
            buf.consume_outgoing(len(out))

    def _new(self, addr):
        buf = self.ctx.wrap_buffers()
        buf.setcookieparam(("%s:%d" % addr).encode())
        self.peers[addr] = buf
        return buf

    def _run(self):
        while not self._stop.is_set():
            socks = [self.sock] + ([self.plain] if self.plain is not None else [])
            r, _, _ = select.select(socks, [], [], 0.05)
            if self.plain in r:
                data, addr = self.plain.recvfrom(65535)
                n = len(self.requests)
                resp = self._answer(data)
                self.plain_requests.extend(self.requests[n:])
                del self.requests[n:]
                if resp is not None:
                    self.plain.sendto(resp, addr)
                continue
            if not r:
                for addr, buf in list(self.peers.items()):
                    self._step(addr, buf)   # DTLS retransmission timers
                continue
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                continue
            self.datagrams.append((addr, data))
            buf = self.peers.get(addr) or self._new(addr)
            buf.receive_from_network(data)
            self._step(addr, buf)

    def _step(self, addr, buf):
        try:
            if buf._handshake_state is not tls.HandshakeStep.HANDSHAKE_OVER:
                while buf._handshake_state is not tls.HandshakeStep.HANDSHAKE_OVER:
                    try:
                        buf.do_handshake()
                    except tls.WantReadError:
                        self._flush(buf, addr)
                        break
                    except tls.WantWriteError:
                        pass
                    self._flush(buf, addr)
                if buf._handshake_state is tls.HandshakeStep.HANDSHAKE_OVER:
                    self.events.append(("handshake", addr, buf.cipher()))
                return
            while True:
                try:
                    data = buf.read(65535)
                except (tls.WantReadError, tls.WantWriteError):
                    break
                if not data:      # no complete record yet
                    return
                if self.drop_requests > 0:
                    self.drop_requests -= 1
                    continue
                resp = self._answer(data)
                if resp is not None:
                    buf.write(resp)
                    self._flush(buf, addr)
        except tls.HelloVerifyRequest:
            self._flush(buf, addr)
            self.events.append(("hvr", addr))
            self.peers.pop(addr, None)
        except TLSError as e:
            self._flush(buf, addr)
            closed = "0x7880" in str(e)     # the client's close_notify
            self.events.append(("closed", addr) if closed else ("fail", addr, str(e)))
            self.peers.pop(addr, None)

    def _answer(self, data):
        import aiocoap
        try:
            req = aiocoap.Message.decode(data)
        except Exception:
            return None
        self.requests.append(req)
        path = "/".join(req.opt.uri_path)
        if path == "authz-info" and req.code == aiocoap.POST:
            code, payload = aiocoap.CREATED, cbor2.dumps({39: CNONCE})
        else:
            code, payload = aiocoap.CONTENT, cbor2.dumps([int(req.code), path, req.payload])
        resp = aiocoap.Message(code=code, payload=payload)
        resp.mtype = aiocoap.ACK
        resp.mid = req.mid
        resp.token = req.token
        return resp.encode()
