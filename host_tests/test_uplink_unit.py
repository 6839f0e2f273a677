"""The uplink's pure parts under CPython (PROFILE sec. 7; lock/uplink.py):
request bytes (decoded by aiocoap's codec), answers matched to their
exchange, the /audit acknowledgement rule, /trl, /time and /introspect
answers checked field by field (introspection: test_introspection.py),
the backoff, the configuration, the log's raw batch read and the state
file's uplink item."""
import os

import cbor2
import pytest

from lock import config, declog, state, uplink
from lock.uplink import UplinkError


def _decode(raw):
    import aiocoap
    return aiocoap.Message.decode(bytes(raw))


def test_request_header_decodes_with_aiocoap():
    import aiocoap
    buf = bytearray(1152)
    n = uplink.put_header(buf, 1, 0x1234, b"\xab\xcd", ("trl",), "after=123456789012")
    msg = _decode(buf[:n])
    assert msg.mtype == aiocoap.CON and msg.code == aiocoap.GET and msg.mid == 0x1234
    assert msg.token == b"\xab\xcd" and msg.opt.uri_path == ("trl",)
    assert msg.opt.uri_query == ("after=123456789012",) and not msg.payload
    n = uplink.put_header(buf, 2, 7, b"\x00\x01", ("audit",), None, 60)
    buf[n] = 0xFF
    buf[n + 1:n + 3] = b"\xa0\xa0"
    msg = _decode(buf[:n + 2])
    assert msg.code == aiocoap.POST and msg.opt.uri_path == ("audit",) and msg.opt.content_format == 60
    assert msg.payload == b"\xa0"


def _answer(mtype, code, mid, token, payload=b""):
    import aiocoap
    m = aiocoap.Message(code=code, payload=payload)
    m.mtype = mtype
    m.mid = mid
    m.token = token
    return m.encode()


def test_answers_are_matched_to_their_exchange():
    import aiocoap
    tok = b"\x01\x02"
    a = uplink.parse_answer(_answer(aiocoap.ACK, aiocoap.CHANGED, 5, tok, b"\xa0"), 5, tok)
    assert a == ("resp", (68, b"\xa0", False, 5))
    assert uplink.parse_answer(_answer(aiocoap.ACK, aiocoap.EMPTY, 5, b""), 5, tok) == ("ack", None)
    assert uplink.parse_answer(_answer(aiocoap.RST, aiocoap.EMPTY, 5, b""), 5, tok) == ("rst", None)
    sep = uplink.parse_answer(_answer(aiocoap.CON, aiocoap.CONTENT, 99, tok, b"\x01"), 5, tok)
    assert sep == ("resp", (69, b"\x01", True, 99))
    # Another exchange's answer, a stranger's token, garbage: not ours.
    assert uplink.parse_answer(_answer(aiocoap.ACK, aiocoap.CHANGED, 4, tok), 5, tok) is None
    assert uplink.parse_answer(_answer(aiocoap.ACK, aiocoap.CHANGED, 5, b"\x09"), 5, tok) is None
    assert uplink.parse_answer(b"\x00\x01", 5, tok) is None


@pytest.mark.parametrize("answer,acked,last,issued,want", [
    ({"seq": 10}, 0, 10, 10, 10),          # the whole batch
    ({"seq": 7}, 0, 10, 10, 7),            # part of it
    ({"seq": 30}, 10, 20, 30, 20),         # the AS holds more (sent before a reset): this batch only
    ({"seq": 5}, 10, 20, 20, 5),           # less than acknowledged before: the caller moves nothing
    ({"seq": 0}, 0, 0, 3, 0),              # nothing stored, nothing sent
])
def test_audit_ack(answer, acked, last, issued, want):
    assert uplink.audit_ack(cbor2.dumps(answer), acked, last, issued) == want


@pytest.mark.parametrize("answer", [
    {"seq": 11}, {"seq": 2 ** 40}, {"seq": -1}, {"seq": True}, {"acked": 3}, 3, [3], "x",
])
def test_audit_ack_refused(answer):
    with pytest.raises(UplinkError):
        uplink.audit_ack(cbor2.dumps(answer), 0, 10, 10)
    with pytest.raises(UplinkError):
        uplink.audit_ack(b"\xff\x00", 0, 10, 10)


def test_trl_page():
    ids = [bytes([i]) * 32 for i in range(3)]
    got = uplink.trl_page(cbor2.dumps({"pos": 9, "ids": ids, "ctis": [b"c"], "more": True}), 4)
    assert got == (9, ids, [b"c"], {}, True, 0)
    got = uplink.trl_page(cbor2.dumps({"pos": 4, "ids": [], "ctis": [], "more": False, "exi": {"as": 3}}), 4)
    assert got == (4, [], [], {"as": 3}, False, 0)


def test_trl_entries_that_name_no_token_are_skipped():
    # One bad entry at the AS must not hold back the rest of the list
    # (attack pass: a 1-byte "token id" refused every page after it).
    ids = [bytes([i]) * 32 for i in range(2)]
    page = {"pos": 9, "ids": [b"\x00"] + ids + [bytes(31)], "ctis": [b"", b"c", bytes(65)], "more": False}
    assert uplink.trl_page(cbor2.dumps(page), 4) == (9, ids, [b"c"], {}, False, 4)


@pytest.mark.parametrize("answer", [
    {"pos": 3, "ids": [], "ctis": [], "more": False},                   # went back
    {"pos": 9, "ids": [], "ctis": [], "more": 1},
    {"pos": "9", "ids": [], "ctis": [], "more": False},
    {"pos": 9, "ids": [bytes(32)] * 65, "ctis": [], "more": False},
    {"pos": 9, "ids": [], "ctis": [], "more": False, "extra": 1},
    {"pos": 9, "ids": [], "ctis": [], "more": False, "exi": {"as": -1}},
    [9, [], [], False],
])
def test_trl_page_refused(answer):
    with pytest.raises(UplinkError):
        uplink.trl_page(cbor2.dumps(answer), 4)


def test_time_answer():
    assert uplink.time_answer(cbor2.dumps(1800000000), None) == 1800000000
    assert uplink.time_answer(cbor2.dumps(cbor2.CBORTag(1, 1800000000)), 1700000000) == 1800000000
    for bad in (cbor2.dumps(1700000000), cbor2.dumps(-5), cbor2.dumps(1.8e9), cbor2.dumps("now"),
                cbor2.dumps(True), b"\x1b"):
        with pytest.raises(UplinkError):
            uplink.time_answer(bad, 1750000000)


def test_backoff_doubles_with_jitter_and_caps():
    assert [uplink.backoff_ms(f, 1000, 60000, 0xFFFF) for f in (1, 2, 3, 4)] == [1000, 2000, 4000, 8000]
    assert [uplink.backoff_ms(f, 1000, 60000, 0) for f in (1, 2, 3)] == [500, 1000, 2000]
    assert uplink.backoff_ms(40, 1000, 60000, 0xFFFF) == 60000


def test_config():
    assert config.parse_uri("coaps://127.0.0.1:5784") == ("coaps", "127.0.0.1", 5784)
    assert config.parse_uri("coap://as.example/") == ("coap", "as.example", 5683)
    assert config.parse_uri("coaps://[::1]") == ("coaps", "::1", 5684)
    for bad in ("http://x", "coaps://", "coaps://x:0", "coaps://x:y", "coaps://x/audit", "coaps://[::1"):
        with pytest.raises(config.ConfigError):
            config.parse_uri(bad)
    u = config.uplink({})
    assert not u.enabled and u.audit_ms == 10000 and u.batch_bytes == 1024
    u = config.uplink({"uri": "coaps://10.0.0.2", "audit_s": 0.5, "max_retry_s": 60})
    assert u.enabled and u.port == 5684 and u.audit_ms == 500 and u.max_retry_ms == 60000
    for bad in ({"uri": 5}, {"audit_s": 0}, {"batch_bytes": 2000}, {"retry_s": True}):
        with pytest.raises(config.ConfigError):
            config.uplink(bad)


def test_trust_from_pem_bundle(tmp_path):
    from lockctl.provision import provision
    provision(str(tmp_path), "lock-x", say=lambda *a: None)
    import json
    d = json.load(open(tmp_path / "lock.json"))
    d["uplink"] = {"uri": "coaps://127.0.0.1:5784"}
    cfg = config.Config(d)
    der, name = config.uplink_trust(cfg, str(tmp_path))
    from cryptography import x509
    assert x509.load_der_x509_certificate(der).subject.rfc4514_string() == "CN=ACE AS https://as.example"
    assert name == "127.0.0.1"


def _log(tmp_path, n):
    log = declog.DecisionLog(str(tmp_path / "log"), 65536, 1024)
    for i in range(n):
        log.append(1700000000 + i, i, "coaps", "unlock", "phone-%d" % i, bytes([i]) * 32, True, 0)
    return log


def test_raw_into_gives_the_stored_records(tmp_path):
    log = _log(tmp_path, 30)                # several segments
    buf = bytearray(1152)
    k, end, last = log.raw_into(buf, 10, 10 + 1024, 23)
    assert 1 < k <= 23 and last == k
    recs = cbor2.loads(b"\x98" + bytes([k]) + bytes(buf[10:end]))
    assert [r[0] for r in recs] == list(range(1, k + 1))
    assert recs[0] == [1, 1700000000, log.boot, 0, "coaps", "unlock", "phone-0", bytes(32), True, 0]
    log.ack(5)
    k2, end2, last2 = log.raw_into(buf, 0, 200, 23)
    recs = cbor2.loads(b"\x98" + bytes([k2]) + bytes(buf[:end2]))
    assert recs[0][0] == 6 and last2 == recs[-1][0] and end2 <= 200
    log.ack(30)
    assert not log.pending() and log.raw_into(buf, 0, 1000, 23) == (0, 0, 0)


def test_state_keeps_the_uplink_item(tmp_path):
    p = str(tmp_path / "state.cbor")
    s = state.State()
    s.rh = [bytes(32)]
    s.uplink = [17, 1800000000]
    state.StateFile(p).save(s)
    got, status = state.StateFile(p).load()
    assert status == state.OK and got.uplink == [17, 1800000000] and got.rh == [bytes(32)]
    s.uplink = None
    state.StateFile(p).save(s)
    assert state.StateFile(p).load()[0].uplink is None
    # Two uplink items, or one of the wrong shape: damage, as any bad item.
    from binascii import crc32
    for items in ([[0, 3, 0], [5, 1, None], [5, 2, None]], [[0, 3, 0], [5, -1, None]], [[0, 3, 0], [5, 1, "x"]]):
        body = b"".join(cbor2.dumps(i) for i in items)
        with open(p, "wb") as f:
            f.write(body + cbor2.dumps([9, crc32(body)]))
        assert state.StateFile(p).load()[1] == state.DAMAGED


# The same pure functions on the simulator's MicroPython (32-bit, frozen
# firmware): each case's result there must be the CPython one.
_MP_CASES = r'''
from lock import uplink
from trust import cbor

def run(f, *a):
    try:
        return ["ok", f(*a)]
    except uplink.UplinkError as e:
        return ["refused", type(e).__name__]

buf = bytearray(1152)
n = uplink.put_header(buf, 1, 0x1234, b"\xab\xcd", ("trl",), "after=123456789012")
n2 = uplink.put_header(buf[n:], 2, 7, b"\x00\x01", ("audit",), None, 60)
out = [bytes(buf[:n]).hex()]
a = uplink.parse_answer(bytes.fromhex("624400050102ff01"), 5, b"\x01\x02")
out.append([a[0], a[1][0], bytes(a[1][1]).hex(), a[1][2], a[1][3]])
for args in ((cbor.encode({"seq": 10}), 0, 10, 10), (cbor.encode({"seq": 30}), 10, 20, 30),
             (cbor.encode({"seq": 11}), 0, 10, 10), (cbor.encode({"seq": True}), 0, 10, 10), (b"\xff", 0, 1, 1)):
    out.append(run(uplink.audit_ack, *args))
for d in ({"pos": 9, "ids": [bytes(32)], "ctis": [b"c"], "more": True},
          {"pos": 3, "ids": [], "ctis": [], "more": False}, {"pos": 9, "ids": [bytes(31)], "ctis": [], "more": False}, {"pos": 9, "ids": [], "ctis": [], "more": 1}):
    r = run(uplink.trl_page, cbor.encode(d), 4)
    out.append([r[0], [x.hex() if isinstance(x, bytes) else x for x in r[1][1]] if r[0] == "ok" else r[1]])
for t, floor in ((1800000000, None), (1700000000, 1750000000), (-5, None), (2 ** 40, None)):
    out.append(run(uplink.time_answer, cbor.encode(t), floor))
out.append([uplink.backoff_ms(f, 1000, 60000, r) for f in (1, 2, 3, 9, 40) for r in (0, 0x7FFF, 0xFFFF)])
for d in ({10: True, 9: "unlock status", 3: "lock-1"}, {10: True, 3: ["x", "lock-1"]}, {10: False},
          {10: 1}, {10: True, 3: "lock-2"}, {10: True, 9: "x" * 256}):
    out.append(run(uplink.introspect_answer, cbor.encode(d), "lock-1"))
n3 = uplink.put_introspect(buf, 9, b"\x01\x02", bytes(range(32)))
out.append(bytes(buf[:n3]).hex())
import json
print(json.dumps(out))
'''


def _cases_cpython():
    import json
    from trust import cbor as fcbor
    env = {}
    exec(_MP_CASES.replace("import json\nprint(json.dumps(out))", "RESULT = out"), env)
    return json.loads(json.dumps(env["RESULT"]))


def test_pure_parts_agree_on_micropython():
    import json
    from mp import run_mp
    r = run_mp(["-c", _MP_CASES], heapsize="256K")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == _cases_cpython()
