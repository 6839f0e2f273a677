"""lockctl's CoAPS client (tools/lockctl/dtls.py, issue 12 item 4) against a
python-mbedtls DTLS 1.2 server on loopback (host_tests/dtls_testserver.py):
PSK mode (RFC 9202 sec. 3.3) and certificate mode (the lock's certificate
must be the bundle's), CoAP through aiocoap's codec, bounded failures."""
import asyncio
import os
import subprocess
import sys
import time

import cbor2
import pytest

from dtls_testserver import CNONCE, DtlsTestServer
from lockctl import cose_host as ch
from lockctl.dtls import DtlsChannel, DtlsError, DtlsPhone, bundle_certs
from lockctl.provision import _cert, provision

LOCKCTL = [sys.executable, "-m", "lockctl.cli"]
ENV = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

PSK_ID = b"kid-0001"      # python-mbedtls' server looks identities up as UTF-8 text
PSK = bytes(range(0x30, 0x40))
DEVICE = "lock-1"


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Two independent bundles (two AS CAs) for the same device id."""
    out = []
    for name in ("b1", "b2"):
        d = str(tmp_path_factory.mktemp(name))
        provision(d, DEVICE, force=True, say=lambda *a: None)
        out.append(d)
    return out


def _server_for(bundle, **kw):
    return DtlsTestServer(cert_der=_read(os.path.join(bundle, "lock-cert.der")),
                          key_der=_read(os.path.join(bundle, "lock-key.der")), **kw)


def _run(coro):
    return asyncio.run(coro)


async def _session(phone, steps):
    async with phone as p:
        return p.handshake_s, p.cipher, [await s(p) for s in steps]


def test_psk_handshake_and_coap_round_trip():
    with DtlsTestServer(psk_store={PSK_ID.decode(): PSK}) as srv:
        token = b"\xd2opaque-token"
        phone = DtlsPhone("127.0.0.1", srv.port, DEVICE, token=token, psk=(PSK_ID, PSK),
                          handshake_timeout=5)
        hs, cipher, (up, disc, st) = _run(_session(phone, [
            lambda p: p.upload(), lambda p: p.discover(), lambda p: p.act("status")]))
        time.sleep(0.2)
        events, reqs = list(srv.events), list(srv.requests)
    assert hs is not None and hs < 2.0, hs
    assert "PSK" in cipher, cipher
    assert up.code == "2.01" and phone.nonce == CNONCE
    assert disc.code == "2.05" and cbor2.loads(disc.payload) == [1, ".well-known/core", b""]
    # status: GET /lock; no key, so no PoP option
    assert st.code == "2.05" and cbor2.loads(st.payload) == [1, "lock", b""]
    assert reqs[0].opt.content_format == 61 and reqs[0].payload == token
    assert [e[0] for e in events] == ["hvr", "handshake", "closed"], events


def test_psk_identity_goes_on_the_wire_as_raw_bytes():
    # A --psk token's kid is 8 random bytes (not UTF-8): the client must send
    # exactly those bytes as psk_identity (the lock looks them up as bytes).
    # python-mbedtls' own server cannot look up a non-UTF-8 identity, so it
    # refuses; what matters is the ClientKeyExchange it received.
    kid = bytes([0xff, 0x00, 0x80, 0xc3, 0x28, 0xa0, 0xfe, 0x01])
    with DtlsTestServer(psk_store={PSK_ID.decode(): PSK}) as srv:
        t0 = time.monotonic()
        with pytest.raises(DtlsError):
            DtlsChannel("127.0.0.1", srv.port, psk=(kid, PSK), handshake_timeout=3).connect()
        assert time.monotonic() - t0 < 4
        time.sleep(0.1)
        grams = [d for _, d in srv.datagrams]
        events = list(srv.events)
    cke = [d for d in grams if d[0] == 22 and len(d) > 13 and d[13] == 16]   # handshake: ClientKeyExchange
    assert cke and (len(kid).to_bytes(2, "big") + kid) in cke[0], grams
    assert any(e[0] == "fail" and "0x6C80" in e[2] for e in events), events


@pytest.mark.parametrize("ident,key,why", [
    (PSK_ID, bytes(16), "wrong key"),
    (b"kid-9999", PSK, "unknown identity"),
], ids=["wrong-key", "unknown-identity"])
def test_psk_refused_clearly_and_bounded(ident, key, why):
    with DtlsTestServer(psk_store={PSK_ID.decode(): PSK}) as srv:
        t0 = time.monotonic()
        phone = DtlsPhone("127.0.0.1", srv.port, DEVICE, psk=(ident, key), handshake_timeout=3)
        with pytest.raises(DtlsError) as ei:
            _run(_session(phone, [lambda p: p.discover()]))
        took = time.monotonic() - t0
        time.sleep(0.1)
        events, reqs = list(srv.events), list(srv.requests)
    msg = str(ei.value)
    assert "psk mode" in msg and ("PSK" in msg), msg
    assert took < 4.0, (why, took)
    assert reqs == [] and not any(e[0] == "handshake" for e in events), events


def test_no_server_is_a_clear_bounded_error():
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    with pytest.raises(DtlsError) as ei:
        DtlsChannel("127.0.0.1", port, psk=(PSK_ID, PSK), handshake_timeout=2).connect()
    assert time.monotonic() - t0 < 3
    assert "127.0.0.1:%d" % port in str(ei.value)


def test_silent_peer_times_out_at_the_bound():
    # The lock's MicroPython mbedTLS sends no alert for a bad Finished (wrong
    # PSK): the client must give up at its handshake timeout, not hang.
    import socket
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hole.bind(("127.0.0.1", 0))
    try:
        t0 = time.monotonic()
        with pytest.raises(DtlsError) as ei:
            DtlsChannel("127.0.0.1", hole.getsockname()[1], psk=(PSK_ID, PSK),
                        handshake_timeout=1.5).connect()
        took = time.monotonic() - t0
    finally:
        hole.close()
    assert 1.4 < took < 2.5, took
    assert "timed out after 1.5 s" in str(ei.value) and "wrong PSK" in str(ei.value), ei.value


def test_certificate_mode_accepts_the_bundles_lock(bundles):
    lock, ca = bundle_certs(bundles[0])
    assert lock == _read(os.path.join(bundles[0], "lock-cert.der")) and ca is not None
    with _server_for(bundles[0]) as srv:
        phone = DtlsPhone("127.0.0.1", srv.port, DEVICE, lock_cert=lock, ca_cert=ca, handshake_timeout=5)
        hs, cipher, (disc, unl) = _run(_session(phone, [lambda p: p.discover(),
                                                        lambda p: p.act("unlock")]))
    assert "ECDHE-ECDSA" in cipher, cipher
    assert hs < 2.0, hs
    assert disc.code == "2.05" and unl.code == "2.05"
    assert cbor2.loads(unl.payload) == [2, "lock/unlock", b""]


def test_certificate_mode_refuses_another_cas_lock(bundles):
    lock, ca = bundle_certs(bundles[0])
    with _server_for(bundles[1]) as srv:
        t0 = time.monotonic()
        phone = DtlsPhone("127.0.0.1", srv.port, DEVICE, lock_cert=lock, ca_cert=ca, handshake_timeout=3)
        with pytest.raises(DtlsError) as ei:
            _run(_session(phone, [lambda p: p.act("unlock")]))
        took = time.monotonic() - t0
        time.sleep(0.1)
        reqs = list(srv.requests)
    assert "certificate" in str(ei.value) and "not the bundle's" in str(ei.value), ei.value
    assert took < 4 and reqs == []


def test_certificate_mode_pins_the_exact_certificate(bundles, tmp_path):
    # Another lock certificate from the same AS CA, same name: the chain is
    # valid, but it is not the bundle's certificate, so the client refuses it.
    from cryptography.hazmat.primitives import serialization
    with open(os.path.join(bundles[0], "as-key.pem"), "rb") as f:
        as_key = ch.key_from_pem(f.read())
    other_key = ch.gen_key()
    issuer = "ACE AS https://as.example"
    other = _cert(other_key, DEVICE, as_key, issuer, False, 30)
    cert_der = other.public_bytes(serialization.Encoding.DER)
    key_der = other_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    lock, ca = bundle_certs(bundles[0])
    for anchor in (ca, None):      # with the AS CA, and pin only
        with DtlsTestServer(cert_der=cert_der, key_der=key_der) as srv:
            with pytest.raises(DtlsError) as ei:
                DtlsChannel("127.0.0.1", srv.port, lock_cert=lock, ca_cert=anchor,
                            handshake_timeout=3).connect()
        assert "not the bundle's lock certificate" in str(ei.value), ei.value
    # ...and the same server is accepted when the bundle holds that certificate.
    with DtlsTestServer(cert_der=cert_der, key_der=key_der) as srv:
        c = DtlsChannel("127.0.0.1", srv.port, lock_cert=cert_der, ca_cert=ca, handshake_timeout=3).connect()
        c.close()


def test_coap_retransmits_over_dtls():
    with DtlsTestServer(psk_store={PSK_ID.decode(): PSK}) as srv:
        srv.drop_requests = 1
        phone = DtlsPhone("127.0.0.1", srv.port, DEVICE, psk=(PSK_ID, PSK), handshake_timeout=5)
        t0 = time.monotonic()
        _, _, (disc,) = _run(_session(phone, [lambda p: p.discover()]))
        took = time.monotonic() - t0
        reqs = list(srv.requests)
    assert disc.code == "2.05"
    assert 1.9 < took < 6, took          # ACK_TIMEOUT 2-3 s, then the retransmission
    assert len(reqs) == 1                # the dropped one never reached the responder


def _lockctl(*args):
    return subprocess.run(LOCKCTL + list(args), capture_output=True, text=True, env=ENV, timeout=60)


def test_lockctl_coap_coaps_psk_and_certificate(bundles):
    with DtlsTestServer(psk_store={PSK_ID.decode(): PSK}) as srv:
        r = _lockctl("coap", "discover", "--scheme", "coaps", "--port", str(srv.port),
                     "--psk-identity", PSK_ID.hex(), "--psk", PSK.hex(), "--device-id", DEVICE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("2.05") and "coaps: psk mode" in r.stderr, (r.stdout, r.stderr)
    with DtlsTestServer(psk_store={PSK_ID.decode(): PSK}) as srv:
        r = _lockctl("coap", "discover", "--scheme", "coaps", "--port", str(srv.port),
                     "--psk-identity", PSK_ID.hex(), "--psk", bytes(16).hex(), "--device-id", DEVICE,
                     "--handshake-timeout", "2")
    assert r.returncode == 2 and "lockctl: error: DTLS handshake" in r.stderr, r.stderr
    with _server_for(bundles[0]) as srv:
        r = _lockctl("coap", "status", "--scheme", "coaps", "--port", str(srv.port),
                     "--bundle", bundles[0])
    assert r.returncode == 0, r.stderr
    assert "coaps: certificate mode" in r.stderr and "status: 2.05" in r.stdout, (r.stdout, r.stderr)
    with _server_for(bundles[1]) as srv:
        r = _lockctl("coap", "status", "--scheme", "coaps", "--port", str(srv.port),
                     "--bundle", bundles[0], "--handshake-timeout", "2")
    assert r.returncode == 2 and "not the bundle's" in r.stderr, r.stderr
    r = _lockctl("coap", "status", "--scheme", "coaps", "--psk", "00")
    assert r.returncode == 2 and "both --psk-identity and --psk" in r.stderr, r.stderr
    r = _lockctl("coap", "status", "--scheme", "coaps")
    assert r.returncode == 2 and "needs --bundle" in r.stderr, r.stderr


def test_lockctl_coap_psk_mode_posts_the_token_over_plain_coap_first(tmp_path):
    # RFC 9202 sec. 3.3.1: the lock learns the PSK from the token, so the
    # token goes to /authz-info unprotected, then the DTLS session keyed by
    # it carries the request, with no PoP and no Bearer inside CoAP.
    tok = tmp_path / "t.cwt"
    tok.write_bytes(b"\xd2psk-token")
    with DtlsTestServer(psk_store={PSK_ID.decode(): PSK}, plain=True) as srv:
        r = _lockctl("coap", "unlock", "--scheme", "coaps", "--port", str(srv.port),
                     "--coap-port", str(srv.plain_port), "--token", str(tok),
                     "--key", str(tmp_path / "none.pem"),
                     "--psk-identity", PSK_ID.hex(), "--psk", PSK.hex(), "--device-id", DEVICE)
        plain, secure = list(srv.plain_requests), list(srv.requests)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "authz-info (coap:%d): 2.01" % srv.plain_port in r.stdout, r.stdout
    assert "unlock: 2.05" in r.stdout, r.stdout
    assert [q.opt.uri_path for q in plain] == [("authz-info",)] and plain[0].payload == b"\xd2psk-token"
    assert [q.opt.uri_path for q in secure] == [("lock", "unlock")]
    assert [int(o.number) for o in secure[0].opt.option_list()] == [11, 11]   # Uri-Path only
