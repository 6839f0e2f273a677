"""End to end: CoAPS (CoAP over DTLS 1.2) in PSK mode (PROFILE sec. 3, RFC 9202
sec. 3.3) on the simulated lock, with python-mbedtls as the client.

A PSK-mode token (cnf: the symmetric key encrypted for the lock) is posted to
/authz-info over plain CoAP; the client then opens DTLS with psk_identity =
the key's kid and the key as PSK, and its requests on that session are
authorized by the token."""
import asyncio
import os
import socket
import time

import cbor2
import pytest
from mbedtls import tls as mbedtls_tls
from mbedtls.exceptions import TLSError
from mbedtls._tls import WantReadError, WantWriteError

from coap import message as cm
from lockctl import cose_host as ch
from simlock import RawClient, SimLock, act, upload

CCM_8 = "TLS-PSK-WITH-AES-128-CCM-8"  # RFC 7252 sec. 9.1.3.1, mandatory for CoAPS
HEAP = int(os.environ.get("COAPS_HEAP", 256 * 1024))


@pytest.fixture(scope="module")
def lock(tmp_path_factory):
    # Every client here is 127.0.0.1: keep the lockout out of the way.
    s = SimLock(tmp_path_factory.mktemp("lock"), coaps=True, heapsize=HEAP,
                config={"lockout": {"max_failures": 10000}, "token_store": 12})
    yield s
    s.stop()


def psk_token(lock, kid, secret, scope="unlock lock status"):
    c = lock.claims(over={9: scope})
    c[8] = {2: ch.encrypt0_key(bytes.fromhex(lock.cfg["as_lock_key"]), kid, secret)}
    return ch.make_sign1(c, lock.as_key, kid=lock.kid)


def post_token(lock, tok):
    c = RawClient(lock.port)
    try:
        resp, _ = c.request(cm.POST, "authz-info", [(cm.CONTENT_FORMAT, b"\x3d")], tok)
    finally:
        c.close()
    return resp.code


def dtls(lock, identity, key, timeout=5.0, port=None):
    """A python-mbedtls DTLS 1.2 client, handshake done; (socket, seconds).
    `port`: the client's own UDP port (a client restarting from it)."""
    conf = mbedtls_tls.DTLSConfiguration(
        pre_shared_key=(identity, key), ciphers=[CCM_8], validate_certificates=False,
        lowest_supported_version=mbedtls_tls.DTLSVersion.DTLSv1_2)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if port:
        raw.bind(("127.0.0.1", port))
    sock = mbedtls_tls.ClientContext(conf).wrap_socket(raw, server_hostname=None)
    try:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", lock.coaps_port))
        t0 = time.perf_counter()
        sock.do_handshake()
        return sock, time.perf_counter() - t0
    except BaseException:
        sock.close()
        raise


class Session:
    """CoAP over one DTLS session (message.py encodes, as RawClient does)."""

    def __init__(self, sock):
        self.s = sock
        self.mid = int.from_bytes(os.urandom(2), "big")

    def request(self, code, path, payload=b""):
        self.mid = (self.mid + 1) & 0xFFFF
        msg = cm.Message(cm.CON, code, self.mid, self.mid.to_bytes(2, "big"), payload=payload)
        for seg in path.split("/"):
            msg.add(cm.URI_PATH, seg.encode())
        t0 = time.perf_counter()
        self.s.send(cm.serialize(msg))
        while True:
            resp = cm.parse(self.s.recv(2048))
            if resp.mid == self.mid:
                return resp, time.perf_counter() - t0

    def close(self):
        try:
            self.s.shutdown(socket.SHUT_RDWR)  # close_notify: the lock frees the slot at once
        except Exception:
            pass
        self.s.close()


def unlocks(lock):
    return sum(1 for e in lock.events() if e.startswith("unlocked"))


def _code(c):
    return "%d.%02d" % (c >> 5, c & 31)


def test_psk_session_unlocks(lock):
    kid, secret = b"phone-psk-1", os.urandom(16)
    assert post_token(lock, psk_token(lock, kid, secret)) == cm.CREATED
    sock, hs = dtls(lock, kid.decode(), secret)
    s = Session(sock)
    try:
        assert sock.cipher() == CCM_8
        start = len(lock.lines)
        resp, t_unlock = s.request(cm.POST, "lock/unlock")
        assert _code(resp.code) == "2.04", (resp, lock.output())
        lock.wait_for("EVENT unlocked", start=start)
        times = []
        for _ in range(5):
            resp, t = s.request(cm.GET, "lock")
            assert _code(resp.code) == "2.05", resp
            times.append(t)
    finally:
        s.close()
    print("\nPSK handshake %.1f ms; unlock %.1f ms; GET /lock on the session: median %.1f ms"
          % (hs * 1000, t_unlock * 1000, sorted(times)[2] * 1000))
    assert "psk identity %s" % kid.hex() in lock.wait_for("coaps: session")


def test_wrong_psk_or_unknown_identity_fails(lock):
    kid, secret = b"phone-psk-2", os.urandom(16)
    assert post_token(lock, psk_token(lock, kid, secret)) == cm.CREATED
    start = len(lock.lines)
    events = unlocks(lock)
    with pytest.raises((TLSError, OSError)):
        dtls(lock, kid.decode(), bytes(16), timeout=2.0)[0].close()
    with pytest.raises((TLSError, OSError)):
        dtls(lock, "nobody", secret, timeout=2.0)[0].close()
    lock.wait_for("(psk identity %s)" % b"nobody".hex(), start=start)  # said after the alert went out
    fails = [l for l in lock.lines[start:] if "coaps: handshake" in l and "failed" in l]
    assert len(fails) == 2, lock.output()
    assert "psk identity %s" % kid.hex() in fails[0] and "psk identity %s" % b"nobody".hex() in fails[1], fails
    assert unlocks(lock) == events
    # The right key still works afterwards.
    sock, _ = dtls(lock, kid.decode(), secret)
    s = Session(sock)
    try:
        resp, _ = s.request(cm.GET, "lock")
        assert _code(resp.code) == "2.05"
    finally:
        s.close()
    assert unlocks(lock) == events


def test_garbage_on_the_dtls_port_never_stops_it(lock):
    kid, secret = b"phone-psk-3", os.urandom(16)
    assert post_token(lock, psk_token(lock, kid, secret)) == cm.CREATED
    sock, _ = dtls(lock, kid.decode(), secret)
    s = Session(sock)
    g = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        junk = [b"", b"\x00", os.urandom(13), os.urandom(200), os.urandom(1400),
                # record headers with lying lengths, a handshake record that
                # claims to be a ClientHello, application data in epoch 1
                bytes([22, 0xFE, 0xFD, 0, 0]) + bytes(6) + b"\xff\xff" + bytes([1]) + os.urandom(40),
                bytes([22, 0xFE, 0xFD, 0, 0]) + bytes(6) + b"\x00\x30" + bytes([1]) + bytes(47),
                bytes([23, 0xFE, 0xFD, 0, 1]) + bytes(6) + b"\x00\x20" + os.urandom(32),
                bytes([21, 0xFE, 0xFD, 0, 0]) + bytes(6) + b"\x00\x02\x02\x28"]
        for _ in range(3):
            for d in junk:
                g.sendto(d, ("127.0.0.1", lock.coaps_port))
        resp, _ = s.request(cm.GET, "lock")
        assert _code(resp.code) == "2.05", resp
    finally:
        g.close()
        s.close()
    # A new session works too.
    sock, _ = dtls(lock, kid.decode(), secret)
    s = Session(sock)
    try:
        resp, _ = s.request(cm.GET, "lock")
        assert _code(resp.code) == "2.05"
    finally:
        s.close()
    assert lock.alive()


def test_revoked_token_ends_the_sessions_authority(lock):
    kid, secret = b"phone-psk-4", os.urandom(16)
    tok = psk_token(lock, kid, secret)
    assert post_token(lock, tok) == cm.CREATED
    sock, _ = dtls(lock, kid.decode(), secret)
    s = Session(sock)
    try:
        resp, _ = s.request(cm.GET, "lock")
        assert _code(resp.code) == "2.05"
        admin_key = ch.gen_key()
        admin = lock.token(admin_key, over={9: "admin"})
        assert asyncio.run(upload(lock, admin, admin_key)).code == "2.01"
        out = asyncio.run(act(lock, admin, admin_key, "revoke", payload=cbor2.dumps({"ids": [ch.token_id(tok)]})))
        assert out.code == "2.04", out.describe()
        events = unlocks(lock)
        resp, _ = s.request(cm.POST, "lock/unlock")
        assert _code(resp.code) == "4.01", resp
        assert unlocks(lock) == events
    finally:
        s.close()
    # And no new handshake with its key.
    with pytest.raises((TLSError, OSError)):
        dtls(lock, kid.decode(), secret, timeout=2.0)[0].close()


def test_three_sessions_and_a_fourth_refused(lock):
    keys = [(b"phone-psk-5%d" % i, os.urandom(16)) for i in range(4)]
    for kid, secret in keys:
        assert post_token(lock, psk_token(lock, kid, secret)) == cm.CREATED
    sessions = [Session(dtls(lock, kid.decode(), secret)[0]) for kid, secret in keys[:3]]
    try:
        for s in sessions + sessions[::-1]:  # interleaved on the three sessions
            resp, _ = s.request(cm.GET, "lock")
            assert _code(resp.code) == "2.05", resp
        start = len(lock.lines)
        # Past the bound (3): refused, no slot taken, the others go on.
        with pytest.raises((TLSError, OSError)):
            dtls(lock, keys[3][0].decode(), keys[3][1], timeout=2.0)[0].close()
        for s in sessions:
            resp, _ = s.request(cm.GET, "lock")
            assert _code(resp.code) == "2.05", resp
        # One leaves (close_notify): the fourth gets its slot.
        sessions.pop(0).close()
        s = Session(dtls(lock, keys[3][0].decode(), keys[3][1])[0])
        sessions.append(s)
        resp, _ = s.request(cm.GET, "lock")
        assert _code(resp.code) == "2.05", resp
        assert "3 session(s)" in lock.wait_for("psk identity %s" % keys[3][0].hex(), start=start)
    finally:
        for s in sessions:
            s.close()


def test_client_restarting_from_the_same_port_is_served(lock):
    kid, secret = b"phone-psk-6", os.urandom(16)
    assert post_token(lock, psk_token(lock, kid, secret)) == cm.CREATED
    from simlock import free_udp_port
    port = free_udp_port()
    start = len(lock.lines)
    first = dtls(lock, kid.decode(), secret, port=port)[0]
    s = Session(first)
    resp, _ = s.request(cm.GET, "lock")
    assert _code(resp.code) == "2.05"
    first._socket.close()  # gone without close_notify (a crash, a reboot)
    s = Session(dtls(lock, kid.decode(), secret, port=port)[0])
    try:
        resp, _ = s.request(cm.GET, "lock")
        assert _code(resp.code) == "2.05", resp
    finally:
        s.close()
    assert lock.wait_for("replaced by a new handshake", start=start)


def test_client_vanishing_mid_handshake_frees_its_slot(tmp_path):
    lock = SimLock(tmp_path, coaps=True, heapsize=HEAP, config={"coaps": {"sessions": 1, "handshake_s": 1}})
    try:
        kid, secret = b"phone-psk-7", os.urandom(16)
        assert post_token(lock, psk_token(lock, kid, secret)) == cm.CREATED
        # ClientHello, HelloVerifyRequest, ClientHello with the cookie,
        # the server's flight: then the client is gone.
        conf = mbedtls_tls.DTLSConfiguration(
            pre_shared_key=(kid.decode(), secret), ciphers=[CCM_8], validate_certificates=False,
            lowest_supported_version=mbedtls_tls.DTLSVersion.DTLSv1_2)
        buf = mbedtls_tls.ClientContext(conf).wrap_buffers(server_hostname=None)
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.settimeout(5)
        raw.connect(("127.0.0.1", lock.coaps_port))
        try:
            for _ in range(2):
                out = b""
                for _ in range(5):  # the buffer API wants a few steps per flight
                    try:
                        buf.do_handshake()
                    except (WantReadError, WantWriteError):
                        pass
                    out = buf.peek_outgoing(4096)
                    if out:
                        break
                buf.consume_outgoing(len(out))
                raw.send(out)
                buf.receive_from_network(raw.recv(4096))
        finally:
            raw.close()
        # The one slot is taken by the half-done handshake...
        with pytest.raises((TLSError, OSError)):
            dtls(lock, kid.decode(), secret, timeout=0.5)[0].close()
        lock.wait_for("handshake timeout", timeout=5)
        # ...until its timeout.
        s = Session(dtls(lock, kid.decode(), secret)[0])
        try:
            resp, _ = s.request(cm.GET, "lock")
            assert _code(resp.code) == "2.05", resp
        finally:
            s.close()
    finally:
        lock.stop()
