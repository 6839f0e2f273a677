"""The seeds' door-lock and car scenarios end to end (issue 10;
draft-maler-ace-oauth-uma sec. 3.3-3.4, 5.1-5.2; PROFILE sec. 7).

The bench AS (tools/lockctl/authserver) runs in this process with a clock
the test moves forward; the simulated lock (an ESP32 without a trusted
clock: it takes wall time from the AS) talks to it over its uplink (CoAPS,
mutual certificates); the phones get their tokens from the AS's token
endpoint (RFC 9200 5.8, the policies decide) and use them over CoAPS in
certificate mode:

- Alice enrols her phone and opens the door.
- Bob opens in office hours (Monday to Friday 08-18) and is refused
  outside them: the AS mints nothing, and the token he had has expired
  at the lock, whose clock follows the AS.
- Trudy's trunk-only token opens the trunk, not the door, and stops after
  two hours.
- Alice revokes Bob while the lock is offline: Bob still opens offline
  (the seed's accepted risk: the lock cannot know), the lock comes back
  online, syncs the revocation list, and Bob is refused.
- Every decision the lock logged reaches the AS exactly once.
- Alice moves the lock to another AS (seed sec. 5.1): the old AS's tokens
  are refused, the new AS's accepted, and the change reaches the new AS.
"""
import asyncio
import calendar
import json
import os
import time

import cbor2
import pytest

from lockctl import cose_host as ch
from lockctl.authserver import seed
from lockctl.authserver.clients import request_token
from lockctl.authserver.home import init
from lockctl.authserver.server import Server
from lockctl.dtls import DtlsPhone, bundle_certs
from lockctl.rebind import record
from simlock import SimLock, free_udp_port

DEVICE = "front-door"
# Monday 2026-11-30 10:00 UTC: office hours in the seed's time zone (UTC here).
T0 = calendar.timegm((2026, 11, 30, 10, 0, 0))


class Clock:
    """The AS's clock: real time from `start`, moved forward by `advance`."""

    def __init__(self, start):
        self.offset = start - time.time()

    def __call__(self):
        return time.time() + self.offset

    def advance_to(self, t):
        if t < self():
            raise ValueError("the clock only moves forward")
        self.offset = t - time.time()


class World:
    def __init__(self, d):
        self.d = d
        self.clock = Clock(T0)
        self.as_coap, self.as_coaps = free_udp_port(), free_udp_port()
        self.home = init(str(d / "as"), coap_port=self.as_coap, coaps_port=self.as_coaps)
        bundle = str(d / "bundle")
        self.home.provision_lock(bundle, DEVICE, bind="127.0.0.1", coap_port=free_udp_port(),
                                 coaps_port=free_udp_port(), clock="unsynced", uplink_host="127.0.0.1")
        with open(os.path.join(bundle, "lock.json")) as f:
            cfg = json.load(f)
        # The car's trunk as a resource of its own (seed sec. 3.4), and the
        # uplink's rounds often (config defaults: 10 s audit, 5 min revocations, 1 h time).
        cfg["resources"] = [{"path": "trunk", "method": "POST", "permission": "trunk", "action": "pulse",
                             "channel": "trunk"}]
        cfg["uplink"].update(audit_s=0.5, trl_s=0.5, time_s=0.5, retry_s=0.3, max_retry_s=1)
        with open(os.path.join(bundle, "lock.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        self.keys = seed.load(self.home.store, DEVICE, T0, "UTC")
        self.server = None
        self.online()
        self.lock = SimLock(d, bundle=bundle)
        self.lock.wait_for("uplink: clock set to", 30)
        self.certs = bundle_certs(bundle)

    def online(self):
        self.server = Server(self.home, bind="127.0.0.1", coap_port=self.as_coap, coaps_port=self.as_coaps,
                             clock=self.clock).start()

    def offline(self):
        self.server.close()
        self.server = None

    def token(self, who, scope):
        """(CoAP code, token or None) from the AS's token endpoint."""
        code, body = asyncio.run(request_token("127.0.0.1", self.as_coap, who + "-phone", self.keys[who],
                                               DEVICE, scope))
        return code, (body or {}).get(1)

    def use(self, who, tok, method="POST", path="lock/unlock", perm="unlock"):
        """The phone's request over CoAPS (certificate mode), token in the
        Bearer option with its proof: the Outcome."""
        lc, ca = self.certs

        async def go():
            async with DtlsPhone("127.0.0.1", self.lock.coaps_port, DEVICE, tok, self.keys[who],
                                 lock_cert=lc, ca_cert=ca) as p:
                return await p.request(method, path, perm, inline=True)
        return asyncio.run(go())

    def synced_to(self, t):
        """Wait until the lock's clock was set from the AS to `t` or later."""
        start = 0
        deadline = time.time() + 20
        while time.time() < deadline:
            for line in self.lock.lines[start:]:
                if line.startswith("uplink: clock set to ") and int(line.split()[4]) >= t:
                    return
            time.sleep(0.1)
        raise AssertionError("the lock never took time %d from the AS:\n%s" % (t, self.lock.output()))

    def close(self):
        self.lock.stop()
        if self.server is not None:
            self.server.close()
        self.home.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("seeds"))
    yield w
    w.close()


def _granted(out):
    return out.code in ("2.04", "2.05")


def test_the_seeds_scenarios(world):
    w = world
    lock = w.lock
    # Alice enrols her phone (seed.load registered its key) and opens.
    code, alice = w.token("alice", "unlock lock status admin")
    assert code == "2.01", code
    assert _granted(w.use("alice", alice)), lock.output()
    # Bob, in office hours.
    code, bob = w.token("bob", "unlock")
    assert code == "2.01" and _granted(w.use("bob", bob)), lock.output()
    # Trudy: her token carries the trunk only, whatever she asks for.
    code, trudy = w.token("trudy", "unlock trunk")
    assert code == "2.01", code
    assert _granted(w.use("trudy", trudy, path="trunk", perm="trunk")), lock.output()
    out = w.use("trudy", trudy)
    assert out.code == "4.03", out.describe()
    assert "EVENT pulse trunk" in lock.output() or any("trunk" in e for e in lock.events()), lock.output()

    # Two hours and five minutes later: Trudy's time is over, at the AS
    # (nothing minted) and at the lock (its clock follows the AS's).
    w.clock.advance_to(T0 + 2 * 3600 + 300)
    w.synced_to(T0 + 2 * 3600 + 300)
    assert w.token("trudy", "trunk")[0] == "4.00"
    out = w.use("trudy", trudy, path="trunk", perm="trunk")
    assert not _granted(out), out.describe()

    # Monday 19:00: Bob is outside his hours; the AS gives him nothing and
    # the token he had ended at 18:00.
    w.clock.advance_to(T0 + 9 * 3600)
    w.synced_to(T0 + 9 * 3600)
    assert w.token("bob", "unlock")[0] == "4.00"
    assert not _granted(w.use("bob", bob))

    # Tuesday 09:00: Bob opens again with a new token.
    w.clock.advance_to(T0 + 23 * 3600)
    w.synced_to(T0 + 23 * 3600)
    code, bob = w.token("bob", "unlock")
    assert code == "2.01" and _granted(w.use("bob", bob)), lock.output()
    # The AS goes away; Alice revokes Bob there (his token, and his rules).
    w.offline()
    lock.wait_for("uplink:", 10, len(lock.lines))
    st = w.home.store
    bob_tid = ch.token_id(bob)
    st.revoke(st.lock(DEVICE)["id"], token_id=bob_tid, reason="Alice revoked Bob")
    for rule in st.rules("bob", DEVICE):
        st.remove_policy(rule.id)
    # Offline, the lock cannot know: Bob still opens (logged, like every decision).
    n = len(lock.lines)
    assert _granted(w.use("bob", bob)), lock.output()
    # Online again: the revocation list reaches the lock, and Bob is refused.
    w.online()
    lock.wait_for("revocation(s) applied", 30, n)
    out = w.use("bob", bob)
    assert out.code == "4.01" and not _granted(out), out.describe()
    assert w.token("bob", "unlock")[0] == "4.00"   # and the AS gives him nothing new

    # Every decision the lock logged reaches the AS exactly once: the AS
    # holds seqs 1..N, each once, and N is the lock's last.
    code, alice = w.token("alice", "admin")   # her morning token has ended
    assert code == "2.01", code
    deadline = time.time() + 30
    while True:
        nxt = _next_seq(w, alice)
        rows = w.home.store.audit(DEVICE, limit=100000)
        seqs = sorted(r["seq"] for r in rows)
        if seqs and seqs[-1] >= nxt - 2:
            break
        if time.time() > deadline:
            raise AssertionError("AS holds %s, the lock is at %d" % (seqs[-5:], nxt))
        time.sleep(0.5)
    assert seqs == list(range(1, seqs[-1] + 1)), seqs
    # The grants and refusals above are there by permission and outcome.
    assert any(r["permission"] == "trunk" and r["granted"] for r in rows)
    assert sum(1 for r in rows if r["permission"] == "unlock" and r["sub"] == "bob" and r["granted"]) >= 3


def _next_seq(w, alice):
    out = asyncio.run(_get_log(w, alice))
    return cbor2.loads(out.payload)["next_seq"]


async def _get_log(w, tok):
    lc, ca = w.certs
    async with DtlsPhone("127.0.0.1", w.lock.coaps_port, DEVICE, tok, w.keys["alice"], lock_cert=lc,
                         ca_cert=ca) as p:
        return await p.request("GET", "log", "admin", inline=True, query=("after=999999",))


def test_alice_moves_the_lock_to_another_as(world, tmp_path):
    """Seed sec. 5.1: the new AS adopts the lock (its certificate and the
    old CA recorded for it), Alice posts the rebind record with her admin
    token of the old AS; then the old AS's tokens are refused and the new
    one's accepted, across a restart, and the change is in the new AS's
    audit, uploaded by the lock's uplink."""
    w = world
    lock = w.lock
    if w.server is None:
        w.online()
    t = max(int(w.clock()), T0 + 24 * 3600)   # Tuesday 10:00 or later
    w.clock.advance_to(t)
    # The lock's clock follows the AS's before any token is used: an exi
    # token first seen on a lagging clock would look a day old after the
    # restart below (its age then measured by the wall clock).
    w.synced_to(t)
    coap2, coaps2 = free_udp_port(), free_udp_port()
    as2 = init(str(tmp_path / "as2"), issuer="https://as2.example", kid="as2-key-1", coap_port=coap2,
               coaps_port=coaps2)
    try:
        as2.adopt_lock(lock.bundle)
        keys2 = seed.load(as2.store, DEVICE, int(w.clock()), "UTC", keys=w.keys)
        assert keys2["alice"] is w.keys["alice"]
        srv2 = Server(as2, bind="127.0.0.1", coap_port=coap2, coaps_port=coaps2, clock=w.clock).start()
        try:
            code, admin = w.token("alice", "admin unlock")
            assert code == "2.01", code
            # A token of the old AS without the admin scope cannot move it.
            code, bob_like = w.token("alice", "unlock")
            n = len(lock.lines)
            lc, ca = w.certs

            async def post(tok, perm_payload):
                async with DtlsPhone("127.0.0.1", lock.coaps_port, DEVICE, tok, w.keys["alice"],
                                     lock_cert=lc, ca_cert=ca) as p:
                    return await p.request("POST", "rebind", "admin", inline=True, payload=perm_payload)
            raw = as2.rebind_record("127.0.0.1")
            out = asyncio.run(post(bob_like, raw))
            assert out.code == "4.03", out.describe()
            out = asyncio.run(post(admin, raw))
            assert out.code == "2.04", out.describe() + lock.output()
            lock.wait_for("TRUST: rebound to https://as2.example", 10, n)
            old = w.token("alice", "unlock")[1]

            async def token2():
                return await request_token("127.0.0.1", coap2, "alice-phone", w.keys["alice"], DEVICE, "unlock")
            code, body = asyncio.run(token2())
            assert code == "2.01", code
            new = body[1]
            for i in range(2):
                out = w.use("alice", old)
                assert out.code == "4.01", out.describe()
                out = w.use("alice", new)
                assert _granted(out), "%d: %s\n%s" % (i, out.describe(), lock.output())
                lock.restart()
                # After a restart the lock takes time from its AS again
                # before an exi token seen before it is good (RFC 9200 5.10.3).
                lock.wait_for("uplink: clock set to", 20)
            # The lock's uplink now talks to the new AS: the rebinding's record is there.
            deadline = time.time() + 30
            while not any(r["permission"] == "rebind" and r["granted"] for r in as2.store.audit(DEVICE, limit=1000)):
                if time.time() > deadline:
                    raise AssertionError("the rebinding never reached the new AS:\n%s" % lock.output())
                time.sleep(0.3)
            assert any(r["permission"] == "rebind" and r["sub"] == "https://as2.example"
                       for r in as2.store.audit(DEVICE, limit=1000))
        finally:
            srv2.close()
    finally:
        as2.close()

