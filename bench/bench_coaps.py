"""CoAPS (DTLS 1.2) on the simulated lock: handshakes, requests, heap.

usage: .venv/bin/python bench/bench_coaps.py [--rounds N] [--no-heap]

The lock on loopback (256 KiB heap for the timings), python-mbedtls as the
client (lockctl.dtls), in the two modes of PROFILE sec. 3-4:
- PSK mode: TLS-PSK-WITH-AES-128-CCM-8 (RFC 7252's mandatory suite), the
  token posted to /authz-info over plain CoAP first;
- certificate mode: ECDHE-ECDSA (the lock signs with its P-256 key and does
  an ECDH), the first suite the project's client offers.
Prints (figures only, nothing asserted): the median and p90 handshake time
of each mode (HelloVerify round trip included), the median time of a GET
/lock on an established session, and the ratio of a certificate handshake
to one p256.verify on the simulator in the same run (the lock's own
signature work there is mbedTLS's, in C); the GC heap a session takes
(from the lock's "session up ... heap free" lines) and the C heap (RSS of
the lock's process: mbedTLS allocates from the C heap on the unix port, as
on the ESP32, where ESP-IDF's mbedTLS takes the system heap); the smallest
`-X heapsize` under which the lock serves one certificate-mode PoP unlock,
and three PSK sessions at once.
"""
import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time

from benchutil import ROOT, Script, run_mp, smallest

sys.path[:0] = [os.path.join(ROOT, "firmware"), os.path.join(ROOT, "host_tests", "shims", "cpython")]

from coap import message as cm  # noqa: E402
from lockctl import cose_host as ch  # noqa: E402
from lockctl.dtls import DtlsChannel, DtlsPhone, bundle_certs  # noqa: E402
from simlock import SimLock  # noqa: E402
from test_e2e_coaps import Session, dtls, post_token, psk_token  # noqa: E402

TIMING_HEAP = 256 * 1024


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def cert_handshake(lock, lc, ca):
    ch_ = DtlsChannel("127.0.0.1", lock.coaps_port, lock_cert=lc, ca_cert=ca)
    ch_.connect()
    return ch_


def p256_verify_ms(rounds=20):
    key = ch.gen_key()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    import hashlib
    msg = b"bench"
    r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
    pub = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    script = """
import time
from binascii import unhexlify
from trust import p256
pk = unhexlify(%r); d = unhexlify(%r); sg = unhexlify(%r)
assert p256.verify(pk, d, sg)
best = None
for _ in range(%d):
    t = time.ticks_us(); p256.verify(pk, d, sg); t = time.ticks_diff(time.ticks_us(), t)
    best = t if best is None or t < best else best
print("US", best)
""" % (pub.hex(), hashlib.sha256(msg).hexdigest(), (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex(), rounds)
    with Script(script) as path:
        out = run_mp([path], mpypath=".frozen")
    m = re.search(r"US (\d+)", out.stdout)
    return int(m.group(1)) / 1000 if m else None


def timings(rounds):
    tmp = tempfile.mkdtemp()
    lock = SimLock(tmp, grow=0, coaps=True, heapsize=TIMING_HEAP, config={"lockout": {"max_failures": 100000},
                                                                   "token_store": 12})
    try:
        kid, secret = b"bench-psk", os.urandom(16)
        assert post_token(lock, psk_token(lock, kid, secret)) == cm.CREATED
        psk_hs, psk_req = [], []
        for _ in range(rounds):
            sock, hs = dtls(lock, kid.decode(), secret)
            psk_hs.append(hs * 1000)
            s = Session(sock)
            for _ in range(3):
                resp, t = s.request(cm.GET, "lock")
                assert resp.code == cm.CONTENT
                psk_req.append(t * 1000)
            s.close()
        lc, ca = bundle_certs(lock.bundle)
        cert_hs, cert_req, suite = [], [], None
        for _ in range(rounds):
            c = cert_handshake(lock, lc, ca)
            cert_hs.append(c.handshake_s * 1000)
            suite = c.cipher
            c.close()
        # Requests on one certificate-mode session (a stored PoP token's status).
        key = ch.gen_key()
        tok = lock.token(key, over={9: "status"})

        async def go():
            async with DtlsPhone("127.0.0.1", lock.coaps_port, lock.device_id, tok, key, lock_cert=lc,
                                 ca_cert=ca) as p:
                await p.upload()
                await p.act("status")  # challenge + proof: the key is the token's now
                for _ in range(rounds):
                    t = time.perf_counter()
                    out = await p.request("GET", "lock", "status")
                    cert_req.append((time.perf_counter() - t) * 1000)
                    assert out.code in ("2.05", "4.01"), out.describe()
        asyncio.run(go())
        # Heap per session: GC heap from the lock's lines, C heap from RSS.
        time.sleep(0.5)
        rss0 = rss_kb(lock.proc.pid)
        start = len(lock.lines)
        socks = []
        for i in range(3):
            k, sec = b"bench-heap-%d" % i, os.urandom(16)
            assert post_token(lock, psk_token(lock, k, sec)) == cm.CREATED
            socks.append(dtls(lock, k.decode(), sec)[0])
        time.sleep(0.3)
        rss3 = rss_kb(lock.proc.pid)
        ups = [int(m.group(1)) for m in (re.search(r"up, .* heap free (\d+)", l) for l in lock.lines[start:]) if m]
        for s in socks:
            Session(s).close()
        time.sleep(0.5)
        ends = [int(m.group(1)) for m in (re.search(r"ended: .* 0 session\(s\), heap free (\d+)", l)
                                         for l in lock.lines[start:]) if m]
        return dict(psk_hs=psk_hs, psk_req=psk_req, cert_hs=cert_hs, cert_req=cert_req, suite=suite,
                    ups=ups, ends=ends, rss=(rss0, rss3))
    finally:
        lock.stop()


def serves(heap_k, what):
    tmp = tempfile.mkdtemp()
    try:
        lock = SimLock(tmp, grow=0, coaps=True, heapsize=heap_k * 1024, config={"lockout": {"max_failures": 100000}})
    except Exception:
        return False
    try:
        if what == "cert":
            lc, ca = bundle_certs(lock.bundle)
            key = ch.gen_key()
            tok = lock.token(key, over={9: "unlock"})

            async def go():
                async with DtlsPhone("127.0.0.1", lock.coaps_port, lock.device_id, tok, key, lock_cert=lc,
                                     ca_cert=ca, handshake_timeout=5) as p:
                    if (await p.upload()).code != "2.01":
                        return False
                    return (await p.act("unlock")).code == "2.04"
            return asyncio.run(go())
        socks = []
        try:
            for i in range(3):
                k, sec = b"heap-%d" % i, os.urandom(16)
                if post_token(lock, psk_token(lock, k, sec)) != cm.CREATED:
                    return False
                socks.append(dtls(lock, k.decode(), sec, timeout=3)[0])
            for s in socks:
                resp, _ = Session(s).request(cm.GET, "lock")
                if resp.code != cm.CONTENT:
                    return False
            return True
        finally:
            for s in socks:
                Session(s).close()
    except Exception:
        return False
    finally:
        lock.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--no-heap", action="store_true")
    a = ap.parse_args()
    f = timings(a.rounds)
    v = p256_verify_ms()
    print("CoAPS on loopback, python-mbedtls client, %d handshakes per mode" % a.rounds)
    print("  PSK mode (TLS-PSK-WITH-AES-128-CCM-8): handshake median %.1f ms, p90 %.1f ms; "
          "GET /lock on the session median %.1f ms" % (
              statistics.median(f["psk_hs"]), pct(f["psk_hs"], 0.9), statistics.median(f["psk_req"])))
    print("  certificate mode (%s): handshake median %.1f ms, p90 %.1f ms; GET /lock on the session "
          "median %.1f ms" % (f["suite"], statistics.median(f["cert_hs"]), pct(f["cert_hs"], 0.9),
                              statistics.median(f["cert_req"])))
    if v:
        print("  p256.verify on the simulator, same run: %.2f ms; certificate handshake / verify: %.1f"
              % (v, statistics.median(f["cert_hs"]) / v))
    if len(f["ups"]) == 3:
        print("  GC heap per PSK session (the lock's free heap with 1, 2, 3 sessions up: %s): about %d bytes"
              % (", ".join(map(str, f["ups"])), (f["ups"][0] - f["ups"][2]) // 2))
    if all(f["rss"]):
        print("  C heap (process RSS) for 3 sessions: %+d KiB (%.1f KiB a session; mbedTLS's record buffers)"
              % (f["rss"][1] - f["rss"][0], (f["rss"][1] - f["rss"][0]) / 3))
    if not a.no_heap:
        for what, label in (("cert", "one certificate-mode PoP unlock"), ("psk3", "three PSK sessions at once")):
            k = smallest(lambda h: serves(h, what), 32, 128)
            print("  smallest -X heapsize serving %s: %s" % (label, "%dK" % k if k else "more than 128K"))


if __name__ == "__main__":
    main()
