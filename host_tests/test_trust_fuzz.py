"""Bad input never crashes the verifier: a seeded mutation run of valid
tokens (thousands of cases) on the MicroPython unix port, and a shorter one
under CPython, ends with only clean refusals."""
import json
import os

import pytest

import fuzzdriver
from lockctl import cose_host as ch
from mp import DUAL, run_mp
from tokencases import World

W = World()
TOKENS = [
    W.token(),
    W.token(tag=61),
    W.token(W.claims({4: None, 40: 60})),
    W.token(W.claims({8: {2: ch.encrypt0_key(W.psk_key, b"kid", b"S" * 16)}})),
    W.token(W.claims({3: ["lock-2", "lock-1"], 8: None})),
]
SPEC = {"seed": 20261123, "tokens": [t.hex() for t in TOKENS], "case": W.case("fuzz", TOKENS[0], "OK", allow_bearer=True)}


def _check(counts, crashes, n):
    assert not crashes, "\n".join(crashes[:10])
    assert sum(counts.values()) == n
    assert counts.get("CRASH", 0) == 0
    # The run must actually exercise deep paths, not only the CBOR layer.
    assert counts.get("sig_invalid", 0) > 0 and counts.get("token_malformed", 0) > 0, counts


def test_mutations_cpython():
    n = 1500
    counts, crashes = fuzzdriver.run(dict(SPEC, n=n))
    _check(counts, crashes, n)


@pytest.mark.slow
def test_mutations_micropython():
    n = 10000
    r = run_mp([os.path.join(DUAL, "fuzzdriver.py")], stdin=json.dumps(dict(SPEC, n=n)), timeout=1200)
    assert "END" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    crashes = [l[6:] for l in r.stdout.splitlines() if l.startswith("CRASH ")]
    counts = json.loads([l for l in r.stdout.splitlines() if l.startswith("COUNTS ")][0][7:])
    print("micropython mutation outcomes:", counts)
    _check(counts, crashes, n)
