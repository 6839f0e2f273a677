"""End to end: the simulated lock (a real micropython process) over real UDP
sockets, driven by aiocoap and by libcoap's coap-client-notls."""
import asyncio
import os
import shutil
import socket
import subprocess
import time

import cbor2
import pytest

from coap import message as cm
from lockctl import cose_host as ch
from lockctl.client import Phone
from simlock import SimLock

BEARER, POP, ERROR = 65001, 65005, 65000


@pytest.fixture(scope="module")
def lock(tmp_path_factory):
    # All test clients share 127.0.0.1: keep the lockout out of the way here
    # (test_lockout_after_repeated_failures checks it on its own lock).
    s = SimLock(tmp_path_factory.mktemp("lock"), relock_ms=1500, config={"lockout": {"max_failures": 10000}})
    yield s
    s.stop()


def run(coro):
    return asyncio.run(coro)


def phone(lock, token=None, key=None):
    return Phone("127.0.0.1", lock.port, lock.device_id, token, key)


# aiocoap --------------------------------------------------------------------

def test_aiocoap_well_known_core(lock):
    async def go():
        async with phone(lock) as p:
            return await p.discover()
    out = run(go())
    assert out.code == "2.05"
    links = out.payload.decode()
    for path in ("</authz-info>", "</lock>", "</lock/unlock>", "</lock/lock>"):
        assert path in links, links
    assert 'rt="ace.ai"' in links


def test_aiocoap_unlock_with_stored_pop_token_then_relock(lock):
    client = ch.gen_key()
    tok = lock.token(client)
    n = len(lock.events())

    async def go():
        async with phone(lock, tok, client) as p:
            up = await p.upload()
            assert up.code == "2.01" and len(p.nonce) == 16
            return await p.act("unlock")
    out = run(go())
    assert out.code == "2.04" and out.tries == 1, out.describe()
    lock.wait_for("EVENT unlocked command", 5, start=0)
    assert "unlocked command" in lock.events()[n:]
    t0 = time.time()
    lock.wait_for("EVENT locked auto-relock", 5, start=len(lock.lines) - 3)
    assert time.time() - t0 < 4


def test_aiocoap_unlock_with_inline_bearer_option(lock):
    client = ch.gen_key()
    tok = lock.token(client)

    async def go():
        async with phone(lock, tok, client) as p:
            return await p.act("unlock", inline=True)
    out = run(go())
    # First try without proof: 4.01 + cnonce; the retry with the proof opens.
    assert out.code == "2.04" and out.tries == 2, out.describe()


async def _raw(lock, method, path, options=(), payload=b""):
    import aiocoap
    from aiocoap.optiontypes import OpaqueOption
    from lockctl.client import _register_options
    _register_options()
    ctx = await aiocoap.Context.create_client_context()
    try:
        req = aiocoap.Message(code=getattr(aiocoap, method), uri="coap://127.0.0.1:%d/%s" % (lock.port, path),
                              payload=payload)
        for num, val in options:
            req.opt.add_option(OpaqueOption(num, val))
        resp = await asyncio.wait_for(ctx.request(req).response, 20)
        err = None
        for o in resp.opt.option_list():
            if int(o.number) == ERROR:
                err = o.value if isinstance(o.value, int) else int.from_bytes(o.value, "big")
        code = int(resp.code)
        return "%d.%02d" % (code >> 5, code & 31), err, resp.payload, resp
    finally:
        await ctx.shutdown()


def test_no_token_gets_401_with_hints_and_cnonce(lock):
    code, err, payload, resp = run(_raw(lock, "POST", "lock/unlock"))
    assert code == "4.01" and err is None
    assert resp.opt.content_format == 19
    hints = cbor2.loads(payload)
    assert hints[5] == lock.device_id and isinstance(hints[1], str) and len(hints[39]) == 16


def test_expired_token_gets_401_invalid_token(lock):
    client = ch.gen_key()
    tok = lock.token(client, {4: int(time.time()) - 3600, 6: int(time.time()) - 7200})
    code, err, payload, _ = run(_raw(lock, "POST", "lock/unlock", [(BEARER, tok)]))
    assert code == "4.01" and err == 1
    assert 39 in cbor2.loads(payload)


def test_wrong_scope_gets_403_insufficient_scope(lock):
    client = ch.gen_key()
    tok = lock.token(client, {9: "status"})
    code, err, _, _ = run(_raw(lock, "POST", "lock/unlock", [(BEARER, tok)]))
    assert code == "4.03" and err == 2


def test_garbage_bearer_is_refused(lock):
    for garbage in (b"\x00garbage", os.urandom(200), b"\xd2\x84" + b"\xff" * 40):
        code, err, _, _ = run(_raw(lock, "POST", "lock/unlock", [(BEARER, garbage)]))
        assert code == "4.01" and err == 1, (garbage, code, err)


def test_replayed_proof_is_refused(lock):
    client = ch.gen_key()
    tok = lock.token(client)
    th = ch.token_id(tok)
    _, _, payload, _ = run(_raw(lock, "POST", "lock/unlock", [(BEARER, tok)]))
    nonce = cbor2.loads(payload)[39]
    proof = ch.pop_proof(client, lock.device_id, nonce, "unlock", th)
    code1, _, _, _ = run(_raw(lock, "POST", "lock/unlock", [(BEARER, tok), (POP, proof)]))
    code2, err2, _, _ = run(_raw(lock, "POST", "lock/unlock", [(BEARER, tok), (POP, proof)]))
    assert code1 == "2.04"
    assert code2 == "4.01" and err2 == 1


def test_duplicate_con_same_response_one_actuation(lock):
    client = ch.gen_key()
    tok = lock.token(client)
    _, _, payload, _ = run(_raw(lock, "POST", "lock/unlock", [(BEARER, tok)]))
    nonce = cbor2.loads(payload)[39]
    proof = ch.pop_proof(client, lock.device_id, nonce, "unlock", ch.token_id(tok))
    msg = cm.Message(cm.CON, cm.POST, 0x4242, b"\x01\x02")
    msg.add(cm.URI_PATH, b"lock")
    msg.add(cm.URI_PATH, b"unlock")
    msg.add(BEARER, tok)
    msg.add(POP, proof)
    raw = cm.serialize(msg)
    time.sleep(1.6)  # let any earlier unlock relock first
    before = lock.events().count("unlocked command")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    try:
        answers = []
        for _ in range(3):
            s.sendto(raw, ("127.0.0.1", lock.port))
            answers.append(s.recv(2048))
    finally:
        s.close()
    assert answers[0] == answers[1] == answers[2]
    resp = cm.parse(answers[0])
    assert resp.mtype == cm.ACK and resp.mid == 0x4242 and resp.code == cm.CHANGED
    time.sleep(0.3)
    assert lock.events().count("unlocked command") == before + 1


def test_lockout_after_repeated_failures(tmp_path):
    lk = SimLock(tmp_path, device_id="lock-lo")
    try:
        codes = []
        for _ in range(7):
            code, err, _, resp = run(_raw(lk, "POST", "lock/unlock", [(BEARER, b"junk" * 20)]))
            codes.append(code)
        assert codes[:5] == ["4.01"] * 5 and codes[5] == "4.29", codes
        assert resp.opt.max_age and resp.opt.max_age <= 30
    finally:
        lk.stop()


# libcoap -------------------------------------------------------------------

def _coap_client():
    exe = shutil.which("coap-client-notls")
    if not exe:
        raise AssertionError("coap-client-notls not installed (apt-get install libcoap3-bin)")
    return exe


def _libcoap(lock, method, path, options=(), payload_file=None, cf=None):
    # -v 6 logs each PDU ("t:ACK c:2.04 ..."), which is where the code is read.
    cmd = [_coap_client(), "-m", method, "-B", "10", "-v", "6"]
    for num, val in options:
        cmd += ["-O", "%d,0x%s" % (num, val.hex())]
    if payload_file:
        cmd += ["-f", payload_file]
    if cf is not None:
        cmd += ["-t", str(cf)]
    cmd.append("coap://127.0.0.1:%d/%s" % (lock.port, path))
    r = subprocess.run(cmd, capture_output=True, timeout=30)
    return r


def _libcoap_code(r):
    text = (r.stdout + r.stderr).decode(errors="replace")
    import re
    codes = re.findall(r"t:(?:ACK|NON|CON) c:([245]\.\d\d)", text)
    return codes[-1] if codes else None, text


def test_libcoap_well_known_core(lock):
    r = _libcoap(lock, "get", ".well-known/core")
    assert b"</lock/unlock>" in r.stdout, r.stdout + r.stderr


def test_libcoap_unlock_flow(lock, tmp_path):
    client = ch.gen_key()
    tok = lock.token(client)
    tf = tmp_path / "tok.cwt"
    tf.write_bytes(tok)
    # Upload the token; the 2.01 payload carries the cnonce.
    r = _libcoap(lock, "post", "authz-info", payload_file=str(tf), cf=61)
    code, text = _libcoap_code(r)
    assert code == "2.01", text
    i = r.stdout.index(b"\xa1\x18\x27\x50")
    nonce = r.stdout[i + 4:i + 20]
    proof = ch.pop_proof(client, lock.device_id, nonce, "unlock", ch.token_id(tok))
    n = lock.events().count("unlocked command")
    r = _libcoap(lock, "post", "lock/unlock", [(POP, proof)])
    code, text = _libcoap_code(r)
    assert code == "2.04", text
    time.sleep(0.3)
    assert lock.events().count("unlocked command") == n + 1


def test_libcoap_refusals(lock):
    r = _libcoap(lock, "post", "lock/unlock")
    assert _libcoap_code(r)[0] == "4.01"
    client = ch.gen_key()
    r = _libcoap(lock, "post", "lock/unlock", [(BEARER, lock.token(client, {9: "status"}))])
    assert _libcoap_code(r)[0] == "4.03"
    r = _libcoap(lock, "post", "lock/unlock", [(BEARER, lock.token(client, {4: 1000, 6: 900}))])
    assert _libcoap_code(r)[0] == "4.01"
    r = _libcoap(lock, "post", "lock/unlock", [(BEARER, b"\x01garbage")])
    assert _libcoap_code(r)[0] == "4.01"
    r = _libcoap(lock, "get", "authz-info")
    assert _libcoap_code(r)[0] == "4.05"


def test_libcoap_inline_bearer_with_challenge(lock):
    client = ch.gen_key()
    tok = lock.token(client)
    r = _libcoap(lock, "post", "lock/unlock", [(BEARER, tok)])
    code, text = _libcoap_code(r)
    assert code == "4.01", text
    # libcoap logs a binary error payload as <<hex>> at -v 6.
    import re
    hexes = re.findall(rb"<<([0-9a-f]+)>>", r.stdout)
    nonce = cbor2.loads(bytes.fromhex(hexes[0].decode()))[39]
    proof = ch.pop_proof(client, lock.device_id, nonce, "unlock", ch.token_id(tok))
    r = _libcoap(lock, "post", "lock/unlock", [(BEARER, tok), (POP, proof)])
    assert _libcoap_code(r)[0] == "2.04", r.stdout + r.stderr
    r = _libcoap(lock, "post", "lock/unlock", [(BEARER, tok), (POP, proof)])
    assert _libcoap_code(r)[0] == "4.01"


def test_malformed_datagrams_never_stop_the_lock(lock):
    """The codec's defect table (RFC 7252 sec. 3, published parser bugs) and
    ACE-specific garbage, each followed by a valid request that must be
    served."""
    from test_coap_udp import MALFORMED
    ace = [
        ("PoP garbage", cm.Message(cm.CON, cm.POST, 0, b"\x09", [(11, b"lock"), (11, b"unlock"), (POP, b"\xff\x00")])),
        ("Bearer 1100 bytes", cm.Message(cm.CON, cm.POST, 0, b"\x09", [(11, b"lock"), (11, b"unlock"),
                                                                        (BEARER, b"\xd2" * 1100)])),
        ("authz-info wrong format", cm.Message(cm.CON, cm.POST, 0, b"\x09", [(11, b"authz-info"), (12, b"\x32")],
                                               b"x")),
        ("authz-info depth bomb", cm.Message(cm.CON, cm.POST, 0, b"\x09", [(11, b"authz-info")], b"\x81" * 1000)),
        ("authz-info empty", cm.Message(cm.CON, cm.POST, 0, b"\x09", [(11, b"authz-info")])),
        ("Error option sent by a client", cm.Message(cm.CON, cm.GET, 0, b"\x09", [(11, b"lock"), (ERROR, b"\x01")])),
    ]
    table = [(n, d) for n, d, _ in MALFORMED] + [(n, cm.serialize(msg)) for n, msg in ace]
    assert len(table) >= 20
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        for i, (name, data) in enumerate(table):
            if len(data) >= 4:
                data = data[:2] + bytes([0x50, i]) + data[4:]
            s.sendto(data, ("127.0.0.1", lock.port))
            ok = cm.Message(cm.CON, cm.GET, 0x6000 + i, b"\x77", [(11, b".well-known"), (11, b"core")])
            s.sendto(cm.serialize(ok), ("127.0.0.1", lock.port))
            while True:
                try:
                    resp = cm.parse(s.recv(4096))
                except socket.timeout:
                    raise AssertionError("no answer after %r:\n%s" % (name, lock.output()))
                if resp.mid == 0x6000 + i:
                    assert resp.code == cm.CONTENT, name
                    break
                assert resp.code >> 5 in (0, 4, 5), (name, resp)
        assert lock.alive()
    finally:
        s.close()
