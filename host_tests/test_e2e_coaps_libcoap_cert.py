"""End to end: unmodified libcoap clients (`coap-client-openssl`,
`coap-client-gnutls`, Debian's libcoap3-bin) against the simulated lock's
CoAPS **certificate mode** (PROFILE sec. 4; issue 12): ECDHE-ECDSA with the
lock's key and certificate, the client checking it against the bundle's AS
certificate (`-R`). Two flows:

- PoP: the token uploaded to /authz-info over the DTLS session, the 2.01's
  cnonce signed by the phone key, the proof sent in the PoP option (65005)
  on a second session: the door moves;
- Bearer: a token without `cnf` in the Bearer option (65001), on a lock
  whose bundle allows bearer tokens: the door moves; the same token over
  plain CoAP does not.

(libcoap accepts a wrong `-R` CA, so the refusal of a foreign lock
certificate is tested with the project's client, test_e2e_coaps_modes.py.)
"""
import os
import re
import shutil
import subprocess

import cbor2
import pytest

from coap import message as cm
from lockctl import cose_host as ch
from simlock import RawClient, SimLock

CLIENTS = ("coap-client-openssl", "coap-client-gnutls")
HEAP = int(os.environ.get("COAPS_HEAP", 256 * 1024))


@pytest.fixture(scope="module")
def lock(tmp_path_factory):
    s = SimLock(tmp_path_factory.mktemp("lock"), coaps=True, heapsize=HEAP, allow_bearer=True,
                config={"lockout": {"max_failures": 10000}, "token_store": 12})
    yield s
    s.stop()


def coap_client(exe, lock, method, path, *extra, payload_file=None, out=None):
    if shutil.which(exe) is None:
        pytest.fail("%s is not installed (tools/sysdeps.sh installs libcoap3-bin)" % exe)
    """Runs the client (debug output on, to read the response code); returns
    (exit status, the response's code "x.yy" or None)."""
    cmd = [exe, "-v", "7", "-m", method, "-B", "5", "-R", os.path.join(lock.bundle, "as-cert.pem")]
    if payload_file:
        cmd += ["-t", "61", "-f", payload_file]
    if out:
        cmd += ["-o", out]
    cmd += list(extra) + ["coaps://127.0.0.1:%d/%s" % (lock.coaps_port, path)]
    r = subprocess.run(cmd, capture_output=True, timeout=30)
    codes = re.findall(rb"t:(?:ACK|CON|NON) c:(\d\.\d\d)", r.stdout + r.stderr)
    return r.returncode, codes[-1].decode() if codes else None


def unlocks(lock):
    return sum(1 for e in lock.events() if e.startswith("unlocked"))


@pytest.mark.parametrize("exe", CLIENTS)
def test_pop_flow_over_certificate_mode(lock, exe, tmp_path):
    key = ch.gen_key()
    tok = lock.token(key, over={9: "unlock status"})
    f = tmp_path / "tok.cwt"
    f.write_bytes(tok)
    out = tmp_path / "out.cbor"
    start = len(lock.lines)
    rc, code = coap_client(exe, lock, "post", "authz-info", payload_file=str(f), out=str(out))
    assert rc == 0 and code == "2.01" and out.exists(), (rc, code, lock.output())
    nonce = cbor2.loads(out.read_bytes())[39]
    assert "certificate mode" in lock.wait_for("coaps: session", start=start)
    before = unlocks(lock)
    proof = ch.pop_proof(key, lock.device_id, nonce, "unlock", ch.token_id(tok))
    rc, code = coap_client(exe, lock, "post", "lock/unlock", "-O", "65005,0x" + proof.hex())
    assert rc == 0 and code == "2.04", (rc, code)
    lock.wait_for("EVENT unlocked", start=start)
    assert unlocks(lock) == before + 1
    # The same proof again (its nonce is spent): refused, nothing moves.
    rc, code = coap_client(exe, lock, "post", "lock/unlock", "-O", "65005,0x" + proof.hex())
    assert code == "4.01", code
    assert unlocks(lock) == before + 1


@pytest.mark.parametrize("exe", CLIENTS)
def test_bearer_token_over_certificate_mode(lock, exe):
    tok = ch.make_sign1(lock.claims(over={9: "unlock"}), lock.as_key, kid=lock.kid)  # no cnf
    before = unlocks(lock)
    start = len(lock.lines)
    rc, code = coap_client(exe, lock, "post", "lock/unlock", "-O", "65001,0x" + tok.hex())
    assert rc == 0 and code == "2.04", (rc, code)
    lock.wait_for("EVENT unlocked", start=start)
    assert unlocks(lock) == before + 1
    c = RawClient(lock.port)
    try:
        resp, _ = c.request(cm.POST, "lock/unlock", [(cm.BEARER, tok)])
    finally:
        c.close()
    assert resp.code == cm.UNAUTHORIZED
    assert unlocks(lock) == before + 1
