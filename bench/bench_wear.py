"""Flash wear of the lock's decisions: erases (and programs) per request
kind, counted by the simulated flash of boards/unix/blockdev.py.

usage: .venv/bin/python bench/bench_wear.py [--n N] [--erase-ms MS]

The lock runs in the simulator's interpreter (build/mp/micropython, the
firmware frozen in, 32-bit), as boards/unix/main.py sets it up: littlefs on
a file-backed flash image (blockdev.mount, ESP32 geometry), LockApp with the
provisioned configuration, but with no socket: a small driver hands each
CoAP datagram to the app's CoapServer and prints the answer with the flash
counters' increase (erases, programs, bytes programmed) for that request
alone. The host side mints tokens and PoP proofs with lockctl.cose_host.

Prints, per request (mean over N, default 30):
  - reference: one DecisionLog.append of a grant record, the least a
    durable decision costs (the app's own log, same flash, same run);
  - a token-less request (4.01 with hints; summarized in the log, one
    record per minute at most: the first of a minute and the rest apart);
  - a request with a bad token (inline Bearer, signed by a key the lock
    does not trust: 4.01), each from a new address (no lockout);
  - a granted unlock (proof-only request naming the stored token: 2.04);
    its hints request apart;
  - a token upload (POST /authz-info, a new token for a new key each time,
    from one phone);
  - a revocation (POST /revoke of one token id, by an admin with a proof);
as erases and as ratio to the reference, plus programs and bytes
programmed, and the board's flash time it implies (erases x --erase-ms, a
W25Q32-class 4 KB sector erase; programs not counted). Figures only.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from benchutil import ROOT

sys.path[:0] = [os.path.join(ROOT, "firmware"), os.path.join(ROOT, "host_tests", "shims", "cpython")]

import cbor2  # noqa: E402
from coap import message as cm  # noqa: E402
from lockctl import cose_host as ch  # noqa: E402
from lockctl.interp import ESP32_HEAP_BYTES, micropython_exe  # noqa: E402
from simlock import SimLock  # noqa: E402

# The driver, in the simulator's interpreter. Lines in: "REQ host hexdatagram",
# "APPEND", "QUIT"; lines out: "OK hexanswer|- erases progs prog_bytes".
DRIVER = r"""
import sys, time, binascii
import blockdev
from lock import config
from lock.actuator import SimActuator
from lock.app import LockApp
from lock.clock import Clock

cfg = config.load(sys.argv[1] + "/lock.json")
dev = blockdev.mount(sys.argv[2], "/flash")
clock = Clock()
if cfg.clock == "system":
    clock.set_wall(int(time.time()))
act = SimActuator(clock.uptime_ms, cfg.relock_ms, lambda what, why: None)
app = LockApp(cfg, "/flash/lock", act, clock, lambda *a: None)
print("READY")
while True:
    f = sys.stdin.readline().split()
    if not f or f[0] == "QUIT":
        break
    e, p, b = dev.erases, dev.progs, dev.prog_bytes
    out = None
    if f[0] == "REQ":
        out = app.server.handle(memoryview(binascii.unhexlify(f[2])), (f[1], 5683), "coap", None, False)
    elif f[0] == "APPEND":
        app.log.append(clock.wall(), clock.uptime_ms(), "coap", "unlock", None, bytes(32), True, 0)
    print("OK", binascii.hexlify(out).decode() if out else "-", dev.erases - e, dev.progs - p, dev.prog_bytes - b)
"""


class Driven:
    """The lock in the driver process: `request()` sends one datagram."""

    def __init__(self, tmp, heap):
        # Flash wear, not the lockout, is measured: its limit is lifted so that
        # the denials from many addresses do not hold up the later kinds.
        self.sim = SimLock(tmp, grow=0, relock_ms=60000, start=False, config={"lockout": {"max_failures": 1000000}})
        self.script = os.path.join(str(tmp), "driver.py")
        with open(self.script, "w") as f:
            f.write(DRIVER)
        env = dict(os.environ, MICROPYPATH=".frozen:" + os.path.join(ROOT, "boards", "unix"))
        self.p = subprocess.Popen([micropython_exe(), "-X", "heapsize=%s" % heap, self.script, self.sim.bundle,
                                   self.sim.flash], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
        line = self.p.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError("driver did not start: %s%s" % (line, self.p.stdout.read()))
        self.mid = 0

    def _cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline().split()
        if not out or out[0] != "OK":
            raise RuntimeError("driver: %r %s" % (out, self.p.stdout.read() if self.p.poll() is not None else ""))
        resp = cm.parse(bytes.fromhex(out[1])) if out[1] != "-" else None
        return resp, (int(out[2]), int(out[3]), int(out[4]))

    def request(self, host, code, path, options=(), payload=b""):
        """(response, (erases, programs, bytes programmed)) of one request."""
        self.mid = (self.mid + 1) & 0xFFFF
        msg = cm.Message(cm.CON, code, self.mid, self.mid.to_bytes(2, "big"), payload=payload)
        for seg in path.split("/"):
            msg.add(cm.URI_PATH, seg.encode())
        for num, val in options:
            msg.add(num, val)
        return self._cmd("REQ %s %s" % (host, cm.serialize(msg).hex()))

    def append(self):
        return self._cmd("APPEND")[1]

    def close(self):
        try:
            self.p.stdin.write("QUIT\n")
            self.p.stdin.close()
            self.p.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()
            self.p.wait(10)


def code_str(resp):
    return "%d.%02d" % (resp.code >> 5, resp.code & 31) if resp is not None else "none"


class Kind:
    def __init__(self, name):
        self.name = name
        self.counts = []
        self.codes = {}

    def add(self, resp, counts):
        self.counts.append(counts)
        c = code_str(resp)
        self.codes[c] = self.codes.get(c, 0) + 1

    def mean(self, i):
        return statistics.mean(c[i] for c in self.counts) if self.counts else float("nan")


def nonce_of(resp):
    return cbor2.loads(resp.payload)[39]


def measure(d, n):
    sim = d.sim
    kinds = []

    ref = Kind("reference: DecisionLog.append (one grant record)")
    for _ in range(n):
        ref.counts.append(d.append())
        ref.codes["-"] = ref.codes.get("-", 0) + 1
    kinds.append(ref)

    first = Kind("token-less request, the first (per-minute summary record)")
    rest = Kind("token-less request, the rest of that minute")
    for i in range(n + 1):
        (first if i == 0 else rest).add(*d.request("127.0.3.1", cm.POST, "lock/unlock"))
    kinds += [first, rest]

    bad = Kind("request with a bad token (inline Bearer, untrusted signer): denied")
    rogue = ch.gen_key()
    for i in range(n):
        tok = ch.make_sign1(sim.claims(None, ch.gen_key()), rogue, kid=sim.kid)
        bad.add(*d.request("127.0.4.%d" % (i + 1), cm.POST, "lock/unlock", [(cm.BEARER, tok)]))
    kinds.append(bad)

    key = ch.gen_key()
    tok = sim.token(key)
    tid = ch.token_id(tok)
    resp, _ = d.request("127.0.5.1", cm.POST, "authz-info", [(cm.CONTENT_FORMAT, b"\x3d")], tok)
    assert resp.code == cm.CREATED, code_str(resp)
    nonce = nonce_of(resp)
    hints = Kind("hints request before an unlock (token-less)")
    grant = Kind("granted unlock (proof-only request: 2.04)")
    for i in range(n):
        if i:
            resp, counts = d.request("127.0.5.1", cm.POST, "lock/unlock")
            hints.add(resp, counts)
            nonce = nonce_of(resp)
        proof = ch.pop_proof(key, sim.device_id, nonce, "unlock", tid)
        grant.add(*d.request("127.0.5.1", cm.POST, "lock/unlock", [(cm.POP, proof)]))
    kinds += [grant, hints]

    up = Kind("token upload (POST /authz-info, a new token for a new key each)")
    for i in range(n):
        up.add(*d.request("127.0.6.1", cm.POST, "authz-info", [(cm.CONTENT_FORMAT, b"\x3d")],
                          sim.token(ch.gen_key())))
    kinds.append(up)

    akey = ch.gen_key()
    atok = sim.token(akey, {9: "admin"})
    atid = ch.token_id(atok)
    rev = Kind("revocation (POST /revoke, one token id, admin proof)")
    for i in range(n):
        resp, _ = d.request("127.0.7.1", cm.POST, "revoke")
        proof = ch.pop_proof(akey, sim.device_id, nonce_of(resp), "admin", atid)
        rev.add(*d.request("127.0.7.1", cm.POST, "revoke", [(cm.BEARER, atok), (cm.POP, proof)],
                           cbor2.dumps({"ids": [os.urandom(32)]})))
    kinds.append(rev)
    return kinds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=30, help="requests of each kind (default 30)")
    ap.add_argument("--erase-ms", type=float, default=45.0,
                    help="flash sector (4 KB) erase time, ms (default 45, typical SPI NOR)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lock-wear-") as tmp:
        # The ESP32's heap, plus room for the driver's own lines.
        d = Driven(tmp, ESP32_HEAP_BYTES + 16 * 1024)
        try:
            kinds = measure(d, a.n)
        finally:
            d.close()
    ref = kinds[0].mean(0)
    print("Flash wear per request, simulated NOR flash under littlefs (4096-byte blocks, prog 32), "
          "the lock as the simulator runs it, %d requests of each kind:" % a.n)
    print("  %-68s %7s %9s %7s %9s %9s  %-16s %s" % ("", "erases", "x append", "progs", "B prog'd",
                                                       "board ms", "erases: count", "answers"))
    for k in kinds:
        e = k.mean(0)
        hist = {}
        for c in k.counts:
            hist[c[0]] = hist.get(c[0], 0) + 1
        print("  %-68s %7.2f %9s %7.1f %9.0f %9.1f  %-16s %s"
              % (k.name, e, ("%.2f" % (e / ref)) if ref else "-", k.mean(1), k.mean(2), e * a.erase_ms,
                 " ".join("%d:%d" % kv for kv in sorted(hist.items())),
                 " ".join("%s x%d" % kv for kv in sorted(k.codes.items()))))
    print("erases, programs and bytes programmed are means per request (erases: count, how many requests "
          "made that many erases); x append: erases / erases of the reference append in the same run; "
          "board ms = erases x %.0f ms" % a.erase_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
