"""End to end: the lock's CoAPS in PSK mode (PROFILE sec. 3, RFC 9202 sec.
3.3) against DTLS stacks that are not the lock's: libcoap's unmodified
`coap-client-openssl` and `coap-client-gnutls`, and aiocoap over tinydtls
(DTLSSocket).

A PSK-mode token is posted to /authz-info over plain CoAP; each client then
opens a fresh DTLS session with psk_identity = the token's kid. libcoap 4.3.1
takes `-k` as a C string (no hex form), so the keys here are random bytes
without a zero byte, passed as raw bytes in argv.

A small UDP relay between a client and the lock records the datagrams: it
times the handshake on the wire (first ClientHello to the server's Finished)
and shows what the lock's ServerHello carried."""
import asyncio
import os
import select
import shutil
import socket
import subprocess
import threading
import time

import pytest

from coap import message as cm
from lockctl import cose_host as ch
from simlock import RawClient, SimLock

HEAP = 256 * 1024
LIBCOAP = ["openssl", "gnutls"]
EMS = 23  # extended_master_secret, RFC 7627


@pytest.fixture(scope="module")
def lock(tmp_path_factory):
    # Every client here is 127.0.0.1: keep the lockout out of the way.
    s = SimLock(tmp_path_factory.mktemp("lock"), coaps=True, heapsize=HEAP,
                config={"lockout": {"max_failures": 10000}, "token_store": 12})
    yield s
    s.stop()


def psk_key():
    """16 random bytes with no zero byte (argv cannot carry one)."""
    while True:
        k = os.urandom(16)
        if 0 not in k:
            return k


def with_psk_token(lock, kid, scope="unlock lock status"):
    """Post a PSK-mode token for `kid` over plain CoAP; its key."""
    key = psk_key()
    c = lock.claims(over={9: scope})
    c[8] = {2: ch.encrypt0_key(bytes.fromhex(lock.cfg["as_lock_key"]), kid, key)}
    tok = ch.make_sign1(c, lock.as_key, kid=lock.kid)
    client = RawClient(lock.port)
    try:
        resp, _ = client.request(cm.POST, "authz-info", [(cm.CONTENT_FORMAT, b"\x3d")], tok)
    finally:
        client.close()
    assert resp.code == cm.CREATED, resp
    return key


def unlocks(lock):
    return sum(1 for e in lock.events() if e.startswith("unlocked"))


def failures_since(lock, start):
    return [l for l in lock.lines[start:] if "coaps: handshake" in l and "failed" in l]


def wait_failures(lock, start, n, timeout=3.0):
    end = time.time() + timeout
    while len(failures_since(lock, start)) < n and time.time() < end:
        time.sleep(0.02)
    return failures_since(lock, start)


# libcoap -------------------------------------------------------------------
def libcoap_exe(flavour):
    exe = shutil.which("coap-client-" + flavour)
    if not exe:
        # The project's rule: a test whose peer is missing fails, never skips.
        pytest.fail("coap-client-%s not installed (Debian package libcoap3-bin; tools/sysdeps.sh installs it)"
                    % flavour)
    return exe


def libcoap(flavour, port, method, path, identity, key, wait_s=3):
    """One request with an unmodified libcoap client; the response code
    ("2.04") or None. At -v 6 libcoap prints each PDU ("v:1 t:ACK c:2.04
    ...") and exits 0 even when the handshake failed."""
    cmd = [libcoap_exe(flavour).encode(), b"-v", b"6", b"-m", method.encode(), b"-B", b"%d" % wait_s,
           b"-u", identity, b"-k", key, b"coaps://127.0.0.1:%d/%s" % (port, path.encode())]
    r = subprocess.run(cmd, capture_output=True, timeout=wait_s + 10)
    out = (r.stdout + r.stderr).decode(errors="replace")
    LAST_OUTPUT[:] = [out]
    for line in out.splitlines():
        if line.startswith("v:1 t:ACK c:"):
            return line.split()[2][2:]
    return None


LAST_OUTPUT = [""]  # the last libcoap run's output, for failure messages


@pytest.mark.parametrize("flavour", LIBCOAP)
def test_libcoap_psk_session_unlocks(lock, flavour):
    kid = b"libcoap-" + flavour.encode()
    key = with_psk_token(lock, kid)
    start = len(lock.lines)
    assert libcoap(flavour, lock.coaps_port, "post", "lock/unlock", kid, key) == "2.04", (LAST_OUTPUT, lock.output())
    lock.wait_for("EVENT unlocked", start=start)
    assert "up" in lock.wait_for("psk identity %s" % kid.hex(), start=start)
    assert libcoap(flavour, lock.coaps_port, "get", "lock", kid, key) == "2.05", (LAST_OUTPUT, lock.output())


@pytest.mark.parametrize("flavour", LIBCOAP)
def test_libcoap_wrong_key_or_unknown_identity_fails(lock, flavour):
    kid = b"libcoap-bad-" + flavour.encode()
    key = with_psk_token(lock, kid)
    start, events = len(lock.lines), unlocks(lock)
    wrong = bytes(b % 255 + 1 for b in key)  # every byte differs, none is zero
    assert libcoap(flavour, lock.coaps_port, "post", "lock/unlock", kid, wrong, wait_s=1) is None
    assert libcoap(flavour, lock.coaps_port, "post", "lock/unlock", b"nobody-" + flavour.encode(), key,
                   wait_s=1) is None
    assert len(wait_failures(lock, start, 2)) == 2, lock.output()
    assert unlocks(lock) == events
    # The right key still works on a new session.
    assert libcoap(flavour, lock.coaps_port, "get", "lock", kid, key) == "2.05", (LAST_OUTPUT, lock.output())


# aiocoap over tinydtls -------------------------------------------------------
async def aiocoap_request(port, code, path, identity, key, timeout=5.0):
    """One request through aiocoap's tinydtls transport on a new context
    (so a new DTLS session); the response, or the exception."""
    import aiocoap
    ctx = await aiocoap.Context.create_client_context()
    try:
        ctx.client_credentials.load_from_dict(
            {"coaps://127.0.0.1:%d/*" % port: {"dtls": {"psk": key, "client-identity": identity}}})
        msg = aiocoap.Message(code=code, uri="coaps://127.0.0.1:%d/%s" % (port, path))
        try:
            return await asyncio.wait_for(ctx.request(msg).response, timeout)
        except Exception as e:  # the failure is the result here
            return e
    finally:
        await ctx.shutdown()


def tinydtls_available():
    try:
        import DTLSSocket.dtls  # noqa: F401  (the C extension over tinydtls)
    except ImportError as e:
        pytest.fail("DTLSSocket (requirements.txt) is not installed: %s" % e)


def test_aiocoap_tinydtls_psk_session_unlocks(lock):
    tinydtls_available()
    import aiocoap
    kid = b"aiocoap-tinydtls"
    key = with_psk_token(lock, kid)
    start = len(lock.lines)
    resp = asyncio.run(aiocoap_request(lock.coaps_port, aiocoap.POST, "lock/unlock", kid, key))
    assert isinstance(resp, aiocoap.Message) and str(resp.code).startswith("2.04"), (resp, lock.output())
    lock.wait_for("EVENT unlocked", start=start)
    assert "up" in lock.wait_for("psk identity %s" % kid.hex(), start=start)
    resp = asyncio.run(aiocoap_request(lock.coaps_port, aiocoap.GET, "lock", kid, key))
    assert isinstance(resp, aiocoap.Message) and str(resp.code).startswith("2.05"), resp


def test_aiocoap_tinydtls_wrong_key_or_unknown_identity_fails(lock):
    tinydtls_available()
    import aiocoap
    kid = b"aiocoap-bad"
    key = with_psk_token(lock, kid)
    start, events = len(lock.lines), unlocks(lock)
    wrong = bytes(b ^ 0x5A for b in key)
    # A wrong key: the lock drops the Finished it cannot verify, tinydtls
    # waits; an unknown identity: the lock's alert ends it at once.
    for ident, k in ((kid, wrong), (b"nobody-aiocoap", key)):
        resp = asyncio.run(aiocoap_request(lock.coaps_port, aiocoap.POST, "lock/unlock", ident, k, timeout=1.5))
        assert not isinstance(resp, aiocoap.Message), resp
    assert len(wait_failures(lock, start, 2)) == 2, lock.output()
    assert unlocks(lock) == events


# On the wire: the ServerHello, the handshake time -----------------------------
class Relay:
    """A UDP relay from a local port to the lock's CoAPS port that keeps
    (time, direction, datagram) for every datagram, one upstream socket per
    client address."""

    def __init__(self, port):
        self.target = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.log = []
        self.up = {}
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            socks = [self.sock] + list(self.up.values())
            ready, _, _ = select.select(socks, [], [], 0.05)
            if not ready and self.stopped:
                return  # quiet after close(): the client's close_notify went through
            for s in ready:
                if s is self.sock:
                    data, addr = s.recvfrom(65535)
                    if addr not in self.up:
                        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        u.connect(self.target)
                        self.up[addr] = u
                    self.log.append((time.perf_counter(), "c", data))
                    self.up[addr].send(data)
                else:
                    data = s.recv(65535)
                    addr = next(a for a, u in self.up.items() if u is s)
                    self.log.append((time.perf_counter(), "s", data))
                    self.sock.sendto(data, addr)

    def close(self):
        self.stopped = True
        self.thread.join(2)
        for u in self.up.values():
            u.close()
        self.sock.close()


def records(datagram):
    """(content type, epoch, fragment) of each DTLS record in a datagram."""
    out = []
    while len(datagram) >= 13:
        n = int.from_bytes(datagram[11:13], "big")
        out.append((datagram[0], int.from_bytes(datagram[3:5], "big"), datagram[13:13 + n]))
        datagram = datagram[13 + n:]
    return out


def handshake_ms(log):
    """First ClientHello to the datagram with the server's Finished (its
    first handshake record in epoch 1): the whole handshake on the wire."""
    t0 = log[0][0]
    for t, who, data in log:
        if who == "s" and any(ct == 22 and ep == 1 for ct, ep, _ in records(data)):
            return (t - t0) * 1000
    raise AssertionError("no server Finished in %d datagrams" % len(log))


def server_hello(log):
    """(cipher suite, [extension types]) of the lock's ServerHello."""
    for _, who, data in log:
        for ct, ep, frag in records(data) if who == "s" else ():
            if ct == 22 and ep == 0 and frag[0] == 2:
                body = frag[12:]
                p = 35 + body[34]  # version, random, session id
                suite = int.from_bytes(body[p:p + 2], "big")
                p += 3  # suite, compression
                exts, end = [], len(body)  # the extensions block runs to the end
                p += 2
                while p + 4 <= end:
                    exts.append(int.from_bytes(body[p:p + 2], "big"))
                    p += 4 + int.from_bytes(body[p + 2:p + 4], "big")
                return suite, exts
    raise AssertionError("no ServerHello")


def test_handshake_times_and_server_hello(lock):
    """Each client's PSK handshake with the lock, timed on the wire (median
    of 5 fresh sessions); tinydtls gets a ServerHello with extended master
    secret, which it requires."""
    import aiocoap
    tinydtls_available()
    flavours = [f for f in LIBCOAP if shutil.which("coap-client-" + f)]
    kid = b"interop-timing"
    key = with_psk_token(lock, kid)
    clients = {"libcoap-" + f: (lambda port, f=f: libcoap(f, port, "get", "lock", kid, key)) for f in flavours}
    clients["aiocoap-tinydtls"] = lambda port: str(getattr(asyncio.run(
        aiocoap_request(port, aiocoap.GET, "lock", kid, key)), "code", None))[:4]
    results = {}
    for name, run in clients.items():
        times = []
        for _ in range(5):
            relay = Relay(lock.coaps_port)  # one per session: its log is that handshake
            try:
                assert run(relay.port) == "2.05", (name, LAST_OUTPUT, lock.output())
            finally:
                relay.close()
            times.append(handshake_ms(relay.log))
        results[name] = (sorted(times)[2], min(times), max(times), server_hello(relay.log))
    print("\nPSK handshake with the lock, on the wire (median of 5, min-max):")
    for name, (med, lo, hi, (suite, exts)) in results.items():
        print("  %-18s %5.1f ms (%.1f-%.1f)  suite 0x%04X, ServerHello extensions %s"
              % (name, med, lo, hi, suite, exts))
    suite, exts = results["aiocoap-tinydtls"][3]
    assert EMS in exts, exts
    assert suite in (0xC0A8, 0xC0A4), hex(suite)  # PSK-AES128-CCM-8 / -CCM, all tinydtls offers
