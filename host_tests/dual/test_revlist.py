"""The revocation list on flash (lock.revlist): merges keep it sorted and
free of duplicates, lookups find exactly what was added, capacity is all
or none, damage is detected with what can be read still used, a failed
write leaves the old list. Under CPython on a temp directory; under
MicroPython on littlefs (VfsLfs2) over a RAM block device, as on the board."""
import hashlib
import os
import struct

from mpunit import raises, scratch_path
from lock import revlist
from trust.reasons import Refused
from trust.verifier import cti_entry


def _path():
    return scratch_path("trl", 200) + ".bin"


def _ids(seed, n):
    return [hashlib.sha256(b"%d-%d" % (seed, i)).digest() for i in range(n)]


def _entries(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack(">I", raw[4:8])[0]
    return [raw[16 + 32 * i:48 + 32 * i] for i in range(n)]


def test_empty_list():
    rl = revlist.RevocationList(_path())
    assert len(rl) == 0 and not rl.damaged
    assert not rl.contains(bytes(32))


def test_merges_stay_sorted_and_unique():
    p = _path()
    rl = revlist.RevocationList(p)
    a, b = _ids(1, 40), _ids(2, 25)
    assert rl.add(a) == 40
    assert rl.add(b + a[:5]) == 25     # known ids are not new
    assert rl.add(a[:3]) == 0
    es = _entries(p)
    assert es == sorted(a + b) and len(rl) == 65
    for x in a + b:
        assert rl.contains(x)
    for x in _ids(3, 30):
        assert not rl.contains(x)
    rl.close()
    again = revlist.RevocationList(p)
    assert len(again) == 65 and not again.damaged
    assert all(again.contains(x) for x in b)


def test_ctis_share_the_list():
    rl = revlist.RevocationList(_path())
    rl.add([cti_entry(b"cti-1")])
    assert rl.contains(cti_entry(b"cti-1"))
    assert not rl.contains(cti_entry(b"cti-2"))
    assert cti_entry(b"x") != hashlib.sha256(b"x").digest()


def test_capacity_is_all_or_none():
    p = _path()
    rl = revlist.RevocationList(p, capacity=50)
    rl.add(_ids(4, 45))
    raises(Refused, rl.add, _ids(5, 6))
    assert len(rl) == 45 and not rl.contains(_ids(5, 6)[0])
    assert rl.add(_ids(5, 5)) == 5


def test_wrong_entry_size_refused():
    rl = revlist.RevocationList(_path())
    raises(ValueError, rl.add, [b"short"])
    assert len(rl) == 0


def _damage(p, pos, value=None):
    with open(p, "rb") as f:
        raw = bytearray(f.read())
    if value is None:
        raw[pos] ^= 1
    else:
        raw = raw[:pos]
    with open(p, "wb") as f:
        f.write(raw)


def test_damage_is_detected_and_no_entry_is_lost():
    """Damage anywhere (a bad byte in an entry, the header's magic or count,
    a truncation) keeps every entry the file still holds as a revocation,
    searched linearly since the order is no longer known; a merge then
    appends, and the list stays whole across the next open (found by the
    attack pass: a flipped header bit emptied the list, and a bad byte
    hid other entries from the binary search)."""
    p = _path()
    ids = sorted(_ids(6, 200))
    rl = revlist.RevocationList(p)
    rl.add(ids)
    rl.close()
    _damage(p, 16 + 32 * 16)                    # byte 0 of entry 16: order broken, CRC fails
    d = revlist.RevocationList(p)
    assert d.damaged and not d.sorted and len(d) == 200
    assert sum(1 for x in ids if d.contains(x)) == 199   # only the damaged entry itself
    more = _ids(7, 5)
    assert d.add(more) == 5
    d.close()
    again = revlist.RevocationList(p)
    assert not again.damaged and not again.sorted and len(again) == 205
    assert all(again.contains(x) for x in more) and sum(1 for x in ids if again.contains(x)) == 199
    again.close()
    for pos in (0, 4, 7):                       # the magic, the count
        q = _path()
        rl = revlist.RevocationList(q)
        rl.add(ids[:50])
        rl.close()
        _damage(q, pos)
        d = revlist.RevocationList(q)
        assert d.damaged and len(d) == 50 and all(d.contains(x) for x in ids[:50]), pos
        d.close()
    q = _path()
    rl = revlist.RevocationList(q)
    rl.add(ids[:20])
    rl.close()
    _damage(q, 16 + 32 * 10, "truncate")       # half the entries gone: the rest kept
    d = revlist.RevocationList(q)
    assert d.damaged and len(d) == 10 and all(d.contains(x) for x in ids[:10])


def test_clear():
    p = _path()
    rl = revlist.RevocationList(p)
    rl.add(_ids(7, 3))
    rl.clear()
    assert len(rl) == 0 and not rl.contains(_ids(7, 3)[0])
    rl.add(_ids(7, 1))
    assert len(rl) == 1
    raised = False
    try:
        os.stat(p + ".tmp")
    except OSError:
        raised = True
    assert raised


def test_verifier_spills_into_the_list():
    from trust.verifier import Verifier
    v = Verifier("lock-1", [], max_revocations=4)
    ids = _ids(8, 6)
    raises(Refused, v.add_revocations, ids)      # no flash list: the RAM sets are all there is
    v.add_revocations(ids[:3], [b"cti-a"])
    assert len(v.revoked_hashes) == 3
    v.trl = revlist.RevocationList(_path(), capacity=8)
    v.add_revocations(ids[3:], [b"cti-b"])         # 4 + 4 > 4: all go to flash
    assert not v.revoked_hashes and not v.revoked_ctis and len(v.trl) == 8
    for x in ids:
        assert v.is_revoked(x, None)
    assert v.is_revoked(bytes(32), b"cti-a") and v.is_revoked(bytes(32), b"cti-b")
    assert not v.is_revoked(bytes(32), b"cti-c")
    v.add_revocations(_ids(9, 1))                 # room in RAM again
    raises(Refused, v.add_revocations, _ids(10, 4))  # 1 + 4 > 4, and 8 + 5 > 8 on flash
    assert len(v.trl) == 8 and v.revoked_hashes == set(_ids(9, 1))


def test_fences_with_tied_prefixes():
    # 50 entries that share their first 3 bytes span several strides of 16
    # (the RAM fences tie): every one is still found, and neighbours not.
    same = [b"\x7f\x00\x01" + bytes([i]) + bytes(28) for i in range(0, 100, 2)]
    rl = revlist.RevocationList(_path())
    rl.add(same + _ids(11, 40) + [b"\x7f\x00\x00" + bytes(29), b"\x7f\x00\x02" + bytes(29)])
    for x in same:
        assert rl.contains(x)
    for i in range(1, 100, 2):
        assert not rl.contains(b"\x7f\x00\x01" + bytes([i]) + bytes(28))
    assert rl.contains(b"\x7f\x00\x00" + bytes(29)) and rl.contains(b"\x7f\x00\x02" + bytes(29))
    assert not rl.contains(b"\x7f\x00\x03" + bytes(29)) and not rl.contains(bytes(32))
    assert not rl.contains(b"\xff" * 32)
