"""Lock state file (PROFILE sec. 6): round trip, and every kind of damage
(a flipped bit anywhere, truncation anywhere, trailing bytes, a missing CRC,
wrong types) detected, with the revocations read before the damage kept.
Under CPython on a temp directory; under MicroPython on littlefs (VfsLfs2)
over a RAM block device, as on the board."""
import os
import struct
from binascii import crc32

from mpunit import raises, scratch_path
from lock import state
from trust import cbor


def _path():
    return scratch_path("state", 40) + ".cbor"


def _sample():
    s = state.State()
    s.flags = 0
    s.rh = [bytes([i]) * 32 for i in range(1, 4)]
    s.rc = [b"cti-1", b"\x07"]
    s.exi = {"https://as": [5, [[6, 60, 1, 100, None], [7, 3600, 1, 120, 1700000000]]]}
    s.tokens = [(b"\xd2" + bytes(300), True), (b"\xd2" + bytes(700), False)]
    return s


def _same(a, b):
    return (a.flags == b.flags and sorted(a.rh) == sorted(b.rh) and sorted(a.rc) == sorted(b.rc)
            and a.exi == b.exi and a.tokens == b.tokens)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def test_round_trip_and_missing():
    p = _path()
    st, status = state.StateFile(p).load()
    assert status == state.MISSING and not st.rh and not st.tokens
    s = _sample()
    state.StateFile(p).save(s)
    got, status = state.StateFile(p).load()
    assert status == state.OK and _same(got, s)
    assert not _exists(p + ".tmp")
    big = state.State()                     # a few KB, written through 128-byte chunks
    big.rh = [bytes([i % 256, i // 256]) * 16 for i in range(200)]
    state.StateFile(p).save(big)
    got, status = state.StateFile(p).load()
    assert status == state.OK and sorted(got.rh) == sorted(big.rh)


def test_every_flipped_byte_and_every_truncation_is_damage():
    p = _path()
    s = _sample()
    state.StateFile(p).save(s)
    good = _read(p)
    # Revocations come first: those before the damage are kept, nothing
    # else (no stored token, no exi window) comes back from a damaged file.
    step = 1 if len(good) < 400 else 7
    for i in list(range(0, len(good), step)) + [len(good) - 1]:
        bad = bytearray(good)
        bad[i] ^= 0x10
        _write(p, bad)
        got, status = state.StateFile(p).load()
        assert status == state.DAMAGED, i
        # (a flipped id is kept as read: an extra revocation harms nothing)
        assert not got.tokens and not got.exi and len(got.rh) <= len(s.rh), i
        assert _exists(p + ".bad") and not _exists(p), i
    for n in list(range(0, len(good), step)):
        _write(p, good[:n])
        got, status = state.StateFile(p).load()
        assert status == state.DAMAGED, n
        assert not got.tokens and not got.exi, n
    _write(p, good[:len(good) - 20])       # cut in the tokens: revocations survive
    got, status = state.StateFile(p).load()
    assert status == state.DAMAGED and sorted(got.rh) == sorted(s.rh) and sorted(got.rc) == sorted(s.rc)
    _write(p, good + b"\x00")               # trailing bytes after the CRC item
    assert state.StateFile(p).load()[1] == state.DAMAGED


def _file(items):
    out = bytearray()
    for it in items:
        out += cbor.encode(it)
    return bytes(out) + cbor.encode([9, crc32(out)])


# Well-framed files (good CRC) with a wrong item: refused as damage all the same.
_BAD_ITEMS = (
    ("no_header", [[1, bytes(32)]]),
    ("header_twice", [[0, 3, 0], [0, 3, 0]]),
    ("future_version", [[0, 4, 0]]),
    ("short_id", [[0, 3, 0], [1, bytes(31)]]),
    ("long_cti", [[0, 3, 0], [2, bytes(65)]]),
    ("empty_cti", [[0, 3, 0], [2, b""]]),
    ("text_id", [[0, 3, 0], [1, "x" * 32]]),
    ("bool_flags", [[0, 3, True]]),
    ("exi_bad_entry", [[0, 3, 0], [3, "as", 1, [[1, 60, 1, 5]]]]),
    ("exi_negative_seq", [[0, 3, 0], [3, "as", 1, [[-1, 60, 1, 5, None]]]]),
    ("exi_text_wall", [[0, 3, 0], [3, "as", 1, [[1, 60, 1, 5, "1"]]]]),
    ("token_too_big", [[0, 3, 0], [4, bytes(1025), True]]),
    ("token_no_flag", [[0, 3, 0], [4, bytes(10)]]),
    ("unknown_kind", [[0, 3, 0], [7, 1]]),
    ("not_a_list", [[0, 3, 0], {1: 2}]),
)


def test_wrong_items_are_damage():
    p = _path()
    for name, items in _BAD_ITEMS:
        _write(p, _file(items))
        assert state.StateFile(p).load()[1] == state.DAMAGED, name
    _write(p, _file([[0, 3, 1], [1, bytes(32)]]))
    got, status = state.StateFile(p).load()
    assert status == state.OK and got.flags == 1 and got.rh == [bytes(32)]
    body = cbor.encode([0, 3, 0])
    _write(p, body + cbor.encode([9, crc32(body) ^ 1]))
    assert state.StateFile(p).load()[1] == state.DAMAGED


def test_version_1_and_2_files_are_read():
    p = _path()
    old = {"v": 1, "tokens": [b"\xd2tok"], "rh": [bytes(32)], "rc": [b"c"], "exi": []}
    _write(p, cbor.encode(old))
    got, status = state.StateFile(p).load()
    assert status == state.OK and got.rh == [bytes(32)] and got.tokens == [(b"\xd2tok", True)]
    assert got.flags == 0
    v2 = {"v": 2, "tokens": [], "rh": [], "rc": [], "exi": [[b"x", 60, 1, 5, None]]}
    raw = cbor.encode(v2)
    _write(p, raw + struct.pack(">I", crc32(raw)))
    got, status = state.StateFile(p).load()
    # Its exi table had no sequence numbers: exi tokens wait for the AS.
    assert status == state.OK and got.flags & state.FLAG_EXI_BLOCKED


def test_save_leaves_the_old_file_when_it_fails():
    p = _path()
    s = _sample()
    state.StateFile(p).save(s)
    bad = state.State()
    bad.rh = [object()]                      # cannot be encoded: the save fails midway
    raises(Exception, state.StateFile(p).save, bad)
    got, status = state.StateFile(p).load()
    assert status == state.OK and _same(got, s)
