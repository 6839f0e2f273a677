"""Bench AS end to end (issue 10), through its command line: `lockctl as
init`, `lock add --provision` (the AS issues the lock's certificate),
`seed` (Alice, Bob, Trudy), `serve`, `request` (a phone asks the token
endpoint over CoAPS with its certificate, or over plain CoAP), then the phone (`lockctl coap`, certificate mode: the
lock's certificate checked against the AS's CA) unlocks the simulated lock
with that token; the lock's own uplink (firmware lock/uplink.py on the
simulator) meets the AS: its decisions arrive, a revocation reaches it;
Trudy's request for unlock is refused; `revoke`, `revocations`, `policy
list`, `audit` as tables."""
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from lockctl.cli import sim_command, sim_env
from simlock import free_udp_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tools"))
LOCKCTL = [sys.executable, "-m", "lockctl.cli"]
AS = LOCKCTL + ["as"]
HEAP = 256 * 1024


def run(cmd, *args, env=None, timeout=120):
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env or ENV, timeout=timeout)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("as_e2e")
    asdir, bundle, keys = str(d / "as"), str(d / "bundle"), str(d / "keys")
    env = dict(ENV, LOCKCTL_AS_DIR=asdir)
    ports = dict(as_coap=free_udp_port(), as_coaps=free_udp_port(), coap=free_udp_port(), coaps=free_udp_port())
    r = run(AS, "init", asdir, "--coap-port", str(ports["as_coap"]), "--coaps-port", str(ports["as_coaps"]),
            env=env)
    assert r.returncode == 0, r.stderr
    r = run(AS, "lock", "add", "front-door", "--provision", bundle, "--clock", "system", "--bind", "127.0.0.1",
            "--coap-port", str(ports["coap"]), "--coaps-port", str(ports["coaps"]), env=env)
    assert r.returncode == 0 and "issued and recorded by this AS" in r.stdout, r.stderr
    assert not os.path.exists(os.path.join(bundle, "as-key.pem"))
    with open(os.path.join(bundle, "lock.json")) as f:
        cfg = json.load(f)
    assert cfg["uplink"] == {"uri": "coaps://127.0.0.1:%d" % ports["as_coaps"], "ca": "as-cert.pem"}
    # The uplink's rounds come often here (lock/config.py's defaults: 10 s
    # audit, 5 min revocations, 1 h time).
    cfg["uplink"].update(audit_s=0.5, trl_s=1, time_s=1, retry_s=0.5, max_retry_s=2)
    with open(os.path.join(bundle, "lock.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    r = run(AS, "seed", "--lock", "front-door", "--keys", keys, "--tz", "Europe/Berlin", env=env)
    assert r.returncode == 0, r.stderr
    server = subprocess.Popen(AS + ["serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert "token endpoint" in server.stdout.readline()
    lock = subprocess.Popen(sim_command(bundle, str(d / "flash.img"), heapsize=HEAP), env=sim_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, as_lines = [], []
    for p, out in ((lock, lines), (server, as_lines)):
        threading.Thread(target=lambda p=p, out=out: [out.append(l) for l in p.stdout], daemon=True).start()
    wait_for(lines, "READY", 30)
    yield dict(env=env, asdir=asdir, bundle=bundle, keys=keys, ports=ports, lock=lock, d=d, lines=lines,
               as_lines=as_lines)
    for p in (server, lock):
        p.kill()
        p.wait(10)


def wait_for(lines, text, timeout=20, start=0):
    end = time.time() + timeout
    while time.time() < end:
        for line in lines[start:]:
            if text in line:
                return line
        time.sleep(0.05)
    raise AssertionError("no %r in:\n%s" % (text, "".join(lines[-40:])))


def request(w, who, scope, out, coaps=False):
    how = ["--port", str(w["ports"]["as_coap"])]
    if coaps:        # the phone's certificate (as seed wrote it), the AS's CA
        how = ["--port", str(w["ports"]["as_coaps"]), "--cert", os.path.join(w["keys"], who + ".crt"),
               "--ca", os.path.join(w["asdir"], "as-cert.pem")]
    return run(AS, "request", *how, "--client-id", who + "-phone", "--key", os.path.join(w["keys"], who + ".pem"),
               "--aud", "front-door", "--scope", scope, "--out", out, env=w["env"])


def unlock(w, tok, who="alice"):
    return run(LOCKCTL, "coap", "unlock", "--bundle", w["bundle"], "--token", tok, "--key",
               os.path.join(w["keys"], who + ".pem"), "--port", str(w["ports"]["coaps"]))


def test_alice_gets_a_token_from_the_as_and_opens_the_lock(world):
    w = world
    tok = str(w["d"] / "alice.cwt")
    r = request(w, "alice", "unlock status", tok, coaps=True)
    assert r.returncode == 0 and "scope 'unlock status'" in r.stdout, (r.stdout, r.stderr)
    r = unlock(w, tok)
    assert r.returncode == 0 and "unlock: 2.04" in r.stdout, (r.stdout, r.stderr)
    assert "certificate mode" in r.stderr


def test_the_lock_s_uplink_meets_the_as(world):
    # The firmware's uplink (lock/uplink.py on the simulator) and this AS
    # (PROFILE sec. 7): mutual certificates, the lock's decisions uploaded,
    # time, and a revocation list applied by the lock.
    w = world
    tok = str(w["d"] / "alice-2.cwt")
    assert request(w, "alice", "unlock", tok).returncode == 0
    r = unlock(w, tok)
    assert r.returncode == 0 and "unlock: 2.04" in r.stdout, (r.stdout, r.stderr)
    wait_for(w["as_lines"], "uplink: front-door connected from 127.0.0.1", 30)
    wait_for(w["lines"], "uplink: the AS answers", 30)
    deadline = time.time() + 30
    while True:
        r = run(AS, "audit", "--lock", "front-door", env=w["env"])
        rows = [l.split() for l in r.stdout.splitlines()[2:] if l.strip() and l != "(none)"]
        if any("grant" in x and "unlock" in x and "alice" in x for x in rows) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert any("grant" in x and "unlock" in x and "alice" in x for x in rows), (r.stdout, "".join(w["lines"]))
    r = run(AS, "lock", "list", env=w["env"])
    row = r.stdout.splitlines()[2].split()
    assert row[1] == "front-door" and row[-1] == "0" and "never" not in row, r.stdout     # dropped: 0
    start = len(w["lines"])
    r = run(AS, "revoke", "--lock", "front-door", "--client-id", "alice-phone", "--reason", "phone lost",
            env=w["env"])
    assert r.returncode == 0 and re.search(r"^[1-9][0-9]* new revocation", r.stdout, re.M), r.stdout
    wait_for(w["lines"], "revocation(s) applied", 30, start)
    # The lock refuses the revoked token from now on.
    r = unlock(w, tok)
    assert r.returncode == 1 and "invalid_token" in r.stdout, (r.stdout, r.stderr)


def test_trudy_may_not_unlock_the_door(world):
    r = request(world, "trudy", "unlock", str(world["d"] / "trudy.cwt"))
    assert r.returncode == 1 and "4.00 invalid_scope" in r.stdout, (r.stdout, r.stderr)


def test_revoke_and_tables(world):
    w = world
    r = run(AS, "revoke", "--lock", "front-door", "--user", "bob", env=w["env"])
    assert r.returncode == 0 and re.search(r"^0 new revocation", r.stdout, re.M), r.stdout   # no token of his
    r = run(AS, "revoke", "--lock", "front-door", "--exi-floor", env=w["env"])
    assert r.returncode == 0 and "up to sequence number 0 revoked (trl position" in r.stdout, r.stdout
    r = run(AS, "revocations", env=w["env"])
    assert r.returncode == 0 and r.stdout.splitlines()[0].split() == ["pos", "lock", "token", "id", "/", "cti",
                                                                      "revoked", "reason"]
    r = run(AS, "policy", "list", "--user", "bob", env=w["env"])
    rows = [l.split() for l in r.stdout.splitlines()[2:]]
    assert [x[3:6] for x in rows] == [["unlock", "mon-fri", "08:00-18:00"], ["lock", "mon-fri", "08:00-18:00"],
                                      ["status", "mon-fri", "08:00-18:00"]], r.stdout
    assert all(x[-1] == "Europe/Berlin" for x in rows)
    r = run(AS, "policy", "add", "--user", "bob", "--lock", "front-door", "--permission", "admin", "--hours",
            "08:00-09:00", env=w["env"])
    assert r.returncode == 2 and "--tz" in r.stderr
    r = run(AS, "user", "add", "alice", env=w["env"])
    assert r.returncode == 2 and "already exists" in r.stderr


def test_help_has_examples():
    r = run(AS, "--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "lockctl as seed" in r.stdout
    r = run(AS, "policy", "add", "--help")
    assert r.returncode == 0 and "--weekdays mon-fri --hours 08:00-18:00" in r.stdout
