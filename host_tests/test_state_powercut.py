"""Power cut at the flash programs and erases of a lock's workload on a real
littlefs (VfsLfs2 exists only in MicroPython): runs
host_tests/apps/state_powercut.py in the simulator's interpreter, which
boots a real LockApp on a recorded flash image cut at each point.

PROFILE sec. 2: a revocation is acknowledged only once durable, so no cut
after the acknowledgement loses it. Sec. 6: the state is written
atomically; a damaged or lost state fails closed and is logged. RFC 9200
5.10.3: an exi token's first receipt is durable before the token is used,
so no cut gives it a new lifetime.

The test is the AS and the phones: it mints the tokens, writes the plan and
signs the proofs of possession the app asks for (the lock's nonces are
random, the client keys stay here)."""
import json
import os
import re
import subprocess
import threading

import pytest

from lockctl import cose_host as ch
from mp import BOARD_UNIX, ROOT, micropython_exe

SCRIPT = os.path.join(ROOT, "host_tests", "apps", "state_powercut.py")
DEVICE = "lock-1"
WALL = 1700000000           # the recorded run's wall clock at boot (it advances 1 s a step)
# Checked cut points, at most (~30 ms each): the run has about 620 flash
# operations today, so a few are skipped, evenly; every operation of the
# first save and of the first revocation is always cut.
MAX_CUTS = 600


def _plan(max_cuts, seed, mutant=None):
    issuers = {"as-a": (ch.gen_key(), b"A"), "as-b": (ch.gen_key(), b"B")}
    clients = {}
    tokens = {}
    iat = [WALL - 1000]

    def mint(name, iss, seq=None, exi=3600, cti=None, scope="unlock"):
        key, kid = issuers[iss]
        clients[name] = ch.gen_key()
        iat[0] += 1
        c = {1: iss, 3: DEVICE, 6: iat[0], 8: {1: ch.cose_key_ec2(clients[name])}, 9: scope}
        if seq is None:
            c[4] = WALL + 10 * 86400
            c[7] = cti or name.encode()
        else:
            c[40] = exi
            c[7] = seq.to_bytes(max(1, (seq.bit_length() + 7) // 8), "big")
        raw = ch.make_sign1(c, key, kid=kid)
        tokens[name] = {"raw": raw.hex(), "id": ch.token_id(raw).hex(), "cti": c[7].hex(),
                        "iss": iss, "seq": seq, "exi": c.get(40)}

    mint("ADM", "as-a", scope="admin")
    mint("A", "as-a")
    mint("B", "as-a")
    mint("C", "as-b")
    mint("E1", "as-a", 1)
    mint("E2", "as-a", 2, exi=20)       # short: a synced replay must find it expired
    mint("E3", "as-a", 3)
    mint("E4", "as-a", 4)               # never presented; below the floor of 4
    mint("E5", "as-a", 5)
    mint("E6", "as-a", 6)
    mint("E7", "as-a", 7)
    mint("F1", "as-b", 1)
    mint("F2", "as-b", 2)
    mint("F3", "as-b", 3, exi=15)
    mint("X", "as-a", 100)              # issued after the floors the replay's AS gives
    steps = [
        ["upload", "ADM", True],
        ["upload", "A", True], ["unlock", "A", True],
        ["upload", "E1", True], ["unlock", "E1", True],
        ["upload", "B", True], ["unlock", "B", True],
        ["revoke", {"ids": ["A"]}, True],
        ["upload", "A", False],
        ["upload", "E2", True],
        ["inline", "E3", True],
        ["upload", "F1", True], ["unlock", "F1", True],
        ["revoke", {"ctis": ["B"]}, True],
        ["upload", "E5", True],
        ["revoke", {"exi": {"as-a": 4}}, True],
        ["upload", "E4", False],
        ["upload", "C", True], ["unlock", "C", True],
        ["upload", "E6", True], ["unlock", "E6", True],
        ["revoke", {"ids": ["C"], "ctis": ["E6"]}, True],
        ["upload", "F2", True],
        ["revoke", {"ids": ["E5"], "exi": {"as-b": 2}}, True],
        ["upload", "E7", True], ["unlock", "E7", True],
        ["inline", "F3", True],
        ["upload", "E1", False],
    ]
    cfg = {
        "device_id": DEVICE,
        "as_keys": [{"issuer": iss, "kid": kid.hex(), "pub": ch.pub_bytes(k).hex()}
                    for iss, (k, kid) in issuers.items()],
        "clock": "unsynced",
        "token_store": 10,
        "lockout": {"max_failures": 100000},
    }
    plan = {"cfg": cfg, "wall": WALL, "tokens": tokens, "steps": steps, "max_cuts": max_cuts,
            "seed": seed, "admin": "ADM", "fresh": "X", "as_floors": {"as-a": 99, "as-b": 99}, "mutant": mutant}
    return plan, clients


def _run(plan, clients, tmp_path, timeout=240):
    path = os.path.join(str(tmp_path), "plan.json")
    with open(path, "w") as f:
        json.dump(plan, f)
    env = dict(os.environ)
    env["MICROPYPATH"] = ".frozen:" + BOARD_UNIX
    p = subprocess.Popen([micropython_exe(), "-X", "heapsize=32M", SCRIPT, path], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                         env=env, cwd=ROOT)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    out = []
    try:
        for line in p.stdout:
            if line.startswith("SIGN "):
                _, name, msg = line.split()
                p.stdin.write(ch.sign_es256(clients[name], bytes.fromhex(msg)).hex() + "\n")
                p.stdin.flush()
            else:
                out.append(line)
        p.wait()
    finally:
        timer.cancel()
        if p.poll() is None:
            p.kill()
    return p.returncode, "".join(out)


@pytest.mark.slow
def test_every_power_cut_keeps_revocations_and_exi(tmp_path):
    plan, clients = _plan(MAX_CUTS, 1)
    rc, out = _run(plan, clients, tmp_path)
    print(out)
    m = re.search(r"^cuts=(\d+) checked=(\d+) partial=(\d+) steps=(\d+) failures=(\d+)$", out, re.M)
    assert m, "no summary from the micropython run:\n" + out
    cuts, checked, failures = int(m.group(1)), int(m.group(2)), int(m.group(5))
    assert failures == 0 and rc == 0, out
    assert "FAIL" not in out, out
    assert checked >= min(cuts, MAX_CUTS) and cuts >= 100, out
    o = re.search(r"^outcomes: ok=(\d+) damaged=(\d+) missing=(\d+) damaged_after_first_save=(\d+)", out, re.M)
    assert o, out
    ok, damaged, missing, late = (int(x) for x in o.groups())
    assert ok + damaged + missing == checked + 1, out   # + the uncut run
    # Cuts inside the first save (before it returned) boot fail-closed or
    # as a first boot; atomic saves leave every later cut an OK state.
    assert damaged > 0 and late == 0, out


@pytest.mark.parametrize("mutant,expect", [
    ("skip_saves", "acknowledged revocation of the id of A lost"),
    ("remove_first", "acknowledged revocation of the id of A lost"),
])
def test_power_cut_checks_catch_a_state_that_is_not_durable(tmp_path, mutant, expect):
    """The checks can fail: the recorded run made with a StateFile.save that
    writes nothing after the first save (acknowledged, not durable), or
    that removes the old file before it writes the new one (not atomic),
    loses acknowledged revocations at some cut."""
    plan, clients = _plan(60, 2, mutant)
    rc, out = _run(plan, clients, tmp_path)
    m = re.search(r"^cuts=\d+ checked=(\d+) .*failures=(\d+)$", out, re.M)
    assert m and int(m.group(1)) >= 60, out
    assert rc == 1 and int(m.group(2)) > 0 and expect in out, out
