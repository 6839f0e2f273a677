"""End to end: `lockctl token --psk` then `lockctl coap --scheme coaps` (PSK
mode, RFC 9202 sec. 3.3) against the simulated lock's DTLS server, with the
kid as `lockctl token` makes it (8 random bytes, sent raw as psk_identity)."""
import os
import re
import subprocess
import sys

import pytest

from simlock import SimLock

LOCKCTL = [sys.executable, "-m", "lockctl.cli"]
ENV = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
HEAP = int(os.environ.get("COAPS_HEAP", 256 * 1024))


def lockctl(*args, cwd=None):
    return subprocess.run(LOCKCTL + list(args), capture_output=True, text=True, env=ENV, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def lock(tmp_path_factory):
    s = SimLock(tmp_path_factory.mktemp("lock"), coaps=True, heapsize=HEAP,
                config={"lockout": {"max_failures": 10000}})
    yield s
    s.stop()


def _psk_token(lock, tmp_path, scope="unlock status"):
    out = str(tmp_path / "psk.cwt")
    r = lockctl("token", "--bundle", lock.bundle, "--psk", "--scope", scope, "--out", out)
    assert r.returncode == 0, r.stderr
    m = re.search(r"psk identity ([0-9a-f]+) key ([0-9a-f]+)", r.stderr)
    assert m, r.stderr
    return out, m.group(1), m.group(2)


def _coaps(lock, *args):
    return lockctl("coap", *args, "--scheme", "coaps", "--port", str(lock.coaps_port),
                   "--coap-port", str(lock.port), "--device-id", lock.device_id,
                   "--key", "/nonexistent.pem")


def test_lockctl_coaps_psk_unlocks_on_the_simulator(lock, tmp_path):
    tok, ident, key = _psk_token(lock, tmp_path)
    start = len(lock.lines)
    r = _coaps(lock, "unlock", "--token", tok, "--psk-identity", ident, "--psk", key)
    assert r.returncode == 0, (r.stdout, r.stderr, lock.output())
    assert "authz-info (coap:%d): 2.01" % lock.port in r.stdout, r.stdout
    assert re.search(r"unlock: 2\.04", r.stdout), r.stdout
    assert "coaps: psk mode, TLS-" in r.stderr, r.stderr
    print("\n" + r.stderr.strip())
    lock.wait_for("EVENT unlocked", start=start)
    assert "psk identity %s" % ident in lock.wait_for("coaps: session", start=start)
    # The token is stored: a second session on the same PSK needs no upload.
    r = _coaps(lock, "status", "--psk-identity", ident, "--psk", key)
    assert r.returncode == 0 and "status: 2.05" in r.stdout, (r.stdout, r.stderr)


def test_lockctl_coaps_wrong_psk_fails_bounded_and_nothing_moves(lock, tmp_path):
    tok, ident, key = _psk_token(lock, tmp_path)
    events = sum(1 for e in lock.events() if e.startswith("unlocked"))
    r = _coaps(lock, "unlock", "--token", tok, "--psk-identity", ident, "--psk", "00" * 16,
               "--handshake-timeout", "3")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "lockctl: error: DTLS handshake" in r.stderr and "psk mode" in r.stderr, r.stderr
    assert sum(1 for e in lock.events() if e.startswith("unlocked")) == events


def _cert(lock, *args):
    return lockctl("coap", *args, "--bundle", lock.bundle)


def test_lockctl_coaps_certificate_mode_status_sends_the_token_id(lock, tmp_path):
    # The walkthrough's flow (certificate mode, PoP inside CoAP): the first
    # request uploads the token; the phone then keeps it and names it by
    # its id; `lockctl logs` shows one upload only.
    key, tok = str(tmp_path / "phone.pem"), str(tmp_path / "phone.cwt")
    r = lockctl("token", "--bundle", lock.bundle, "--scope", "unlock status", "--key", key, "--out", tok)
    assert r.returncode == 0, r.stderr
    tid = re.search(r"token id ([0-9a-f]{8})", r.stdout).group(1)
    r = _cert(lock, "unlock", "--token", tok, "--key", key)
    assert r.returncode == 0 and "authz-info: 2.01" in r.stdout and "unlock: 2.04" in r.stdout, (r.stdout, r.stderr)
    r = _cert(lock, "status", "--token", tok, "--key", key)
    assert r.returncode == 0 and "authz-info" not in r.stdout, (r.stdout, r.stderr)
    assert re.search(r"status: 2\.05 .*\(token id only", r.stdout), r.stdout
    # The lock forgot it (a restart would; here the cache names a token id
    # the lock never stored): the phone sends the full token again.
    r = lockctl("token", "--bundle", lock.bundle, "--scope", "status", "--key", key, "--out", tok + "2")
    cache = tmp_path / "phone.cwt2.coap-cache.json"
    import json
    from lockctl import cose_host as ch
    tok2 = open(tok + "2", "rb").read()
    cache.write_text(json.dumps({"%s/%s" % (lock.device_id, ch.token_id(tok2).hex()): True}))
    r = _cert(lock, "status", "--token", tok + "2", "--key", key)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "token id only" in r.stdout and "sending the full token" in r.stderr and \
        "authz-info: 2.01" in r.stdout and "status: 2.05" in r.stdout.splitlines()[-1], (r.stdout, r.stderr)
    admin_key, admin = str(tmp_path / "admin.pem"), str(tmp_path / "admin.cwt")
    assert lockctl("token", "--bundle", lock.bundle, "--scope", "admin", "--key", admin_key,
                   "--out", admin).returncode == 0
    r = lockctl("logs", "--bundle", lock.bundle, "--token", admin, "--key", admin_key)
    assert r.returncode == 0, (r.stdout, r.stderr)
    rows = [l.split() for l in r.stdout.splitlines() if l.split() and l.split()[0].isdigit()]
    mine = [(c[-6], c[-5], c[-2], c[-1]) for c in rows if c[-3] == tid]
    assert mine == [("coaps", "authz-info", "yes", "ok"), ("coaps", "unlock", "yes", "ok"),
                    ("coaps", "status", "yes", "ok")], r.stdout
    # The wall clock of a lock with "clock": "system" dates the records.
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", r.stdout), r.stdout
