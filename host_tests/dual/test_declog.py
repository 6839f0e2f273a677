"""Decision log (PROFILE sec. 6): append/read/ack, persistence across opens,
full log, torn tails and corrupt records. Under CPython on a temp directory;
under MicroPython on littlefs (VfsLfs2) over a RAM block device."""
import os
import struct
import sys
from binascii import crc32

from mpunit import raises, unhex
from lock import declog
from trust import cbor
from lock.declog import DecisionLog

_MP = sys.implementation.name == "micropython"
_state = {"n": 0, "mount": None, "tmp": None}


def _fresh():
    """A root path that does not exist yet, on a fresh filesystem."""
    _state["n"] += 1
    if _MP:
        import gc
        import vfs
        import blockdev
        if _state["mount"]:
            vfs.umount(_state["mount"])
            gc.collect()
        mp = "/declog%d" % _state["n"]
        bd = blockdev.RAMBlockDev(blocks=40)
        vfs.VfsLfs2.mkfs(bd, **blockdev.LFS_OPTIONS)
        vfs.mount(vfs.VfsLfs2(bd, **blockdev.LFS_OPTIONS), mp)
        _state["mount"] = mp
        return mp + "/log"
    if _state["tmp"] is None:
        import atexit
        import shutil
        import tempfile
        _state["tmp"] = tempfile.mkdtemp(prefix="declog")
        atexit.register(shutil.rmtree, _state["tmp"], True)
    return "%s/log%d" % (_state["tmp"], _state["n"])


def _args(i):
    # (wall, uptime_ms, transport, permission, sub, token_hash, granted, reason)
    return (None if i % 3 == 0 else 1700000000 + i, 1000 * i, "coap" if i % 2 else "ble",
            "open", "user%d" % i, bytes([i & 0xFF]) * 8, i % 2 == 0, 0 if i % 2 == 0 else 13)


def _expect(seq, boot, i):
    a = _args(i)
    return [seq, a[0], boot, a[1], a[2], a[3], a[4], a[5], a[6], a[7]]


def _segments(root):
    return sorted(n for n in os.listdir(root) if n.endswith(".log"))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _frames(raw):
    """Frame lengths of a segment's bytes."""
    out = []
    at = 0
    while at + 10 <= len(raw):
        n = 10 + struct.unpack(">H", raw[at:at + 2])[0]
        out.append(n)
        at += n
    return out


def _small(value):
    # The format of .boot / .state: crc32 u32 BE | CBOR value.
    body = cbor.encode(value)
    return struct.pack(">I", crc32(body)) + body


def _fill(d, first, count):
    """Append records _args(first..first+count-1); returns their seqs."""
    return [d.append(*_args(i)) for i in range(first, first + count)]


def test_fresh_open_on_missing_dir():
    root = _fresh()
    d = DecisionLog(root)
    assert d.boot == 1
    assert d.next_seq == 1
    assert d.acked_seq == 0 and d.dropped == 0 and d.used_bytes == 0
    assert d.records() == []
    assert _segments(root) == []
    assert ".boot" in os.listdir(root)
    d.close()


def test_frame_bytes_exact():
    # len 28 | seq 1 | crc32(seq || payload) | CBOR [1, null, 1, 1234, ...]
    root = _fresh()
    d = DecisionLog(root)
    assert d.append(None, 1234, "coap", "open", "alice", b"\x01\x02", True, 0) == 1
    d.close()
    raw = _read(root + "/00000000.log")
    assert raw == unhex("001c 00000001 c9cad27c"
                        "8a 01 f6 01 1904d2 64636f6170 646f70656e 65616c696365 420102 f5 00")
    n, seq, crc = struct.unpack(">HII", raw[:10])
    assert crc == crc32(raw[10:], crc32(raw[2:6]))
    assert d.used_bytes == len(raw) == 38


def test_append_and_read_back():
    root = _fresh()
    d = DecisionLog(root)
    seqs = _fill(d, 0, 6)
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert d.records(limit=100) == [_expect(s, 1, s - 1) for s in seqs]
    assert d.records(after_seq=4) == [_expect(5, 1, 4), _expect(6, 1, 5)]
    assert d.records(after_seq=1, limit=2) == [_expect(2, 1, 1), _expect(3, 1, 2)]
    assert d.records(after_seq=6) == []
    d.close()


def test_reopen_continues_seq_and_counts_boots():
    root = _fresh()
    d = DecisionLog(root)
    _fill(d, 0, 3)
    d.close()
    d = DecisionLog(root)
    assert d.boot == 2 and d.next_seq == 4
    assert d.append(*_args(3)) == 4
    d.close()
    d = DecisionLog(root)
    assert d.boot == 3 and d.next_seq == 5
    want = [_expect(1, 1, 0), _expect(2, 1, 1), _expect(3, 1, 2), _expect(4, 2, 3)]
    assert d.records(limit=10) == want
    # A clean last segment is appended to, not replaced by a new one.
    assert _segments(root) == ["00000000.log"]
    d.close()


def test_the_log_id_survives_reopening():
    """The log's identity (uploaded as "log") is made once with the log and
    read back at every open: a new one each boot made the AS open a new
    epoch at every reboot and store records sent again twice."""
    root = _fresh()
    d = DecisionLog(root)
    first = d.log_id
    d.close()
    assert isinstance(first, bytes) and len(first) == 8
    for _ in range(2):
        d = DecisionLog(root)
        assert d.log_id == first
        d.close()
    other = DecisionLog(_fresh())
    assert other.log_id != first
    other.close()


def test_rotation_and_ack_deletes_whole_segments():
    root = _fresh()
    d = DecisionLog(root, capacity_bytes=4096, segment_bytes=256)
    _fill(d, 0, 20)
    segs = _segments(root)
    assert len(segs) >= 4
    for name in segs:
        assert os.stat(root + "/" + name)[6] <= 256
    used = d.used_bytes
    assert used == sum(os.stat(root + "/" + n)[6] for n in segs)
    assert d.ack(7) == 7
    assert d.acked_seq == 7
    assert d.records(limit=100)[0][0] == 8  # acked records are not offered again
    assert d.records(after_seq=3, limit=1)[0][0] == 8
    left = _segments(root)
    assert len(left) < len(segs) and d.used_bytes < used
    d.close()
    d = DecisionLog(root, capacity_bytes=4096, segment_bytes=256)
    assert d.acked_seq == 7 and d.next_seq == 21
    assert [r[0] for r in d.records(limit=100)] == list(range(8, 21))
    d.close()


def test_ack_everything_then_seq_survives_reopen():
    root = _fresh()
    d = DecisionLog(root, segment_bytes=256)
    _fill(d, 0, 12)
    d.ack(12)
    assert _segments(root) == [] and d.used_bytes == 0
    assert d.append(*_args(12)) == 13
    d.ack(13)
    d.close()
    d = DecisionLog(root, segment_bytes=256)
    assert d.next_seq == 14 and d.acked_seq == 13 and d.records() == []
    d.close()
    # Without .state the high-water mark in .boot still holds.
    os.remove(root + "/.state")
    d = DecisionLog(root, segment_bytes=256)
    assert d.next_seq == 14
    assert d.append(*_args(14)) == 14
    d.close()


def test_ack_is_clamped_and_idempotent():
    root = _fresh()
    d = DecisionLog(root)
    _fill(d, 0, 3)
    assert d.ack(1000) == 3  # never acknowledges a seq not yet handed out
    assert d.ack(2) == 3
    assert d.append(*_args(3)) == 4
    assert [r[0] for r in d.records()] == [4]
    d.close()


def test_full_log_keeps_oldest_and_counts_dropped():
    root = _fresh()
    d = DecisionLog(root, capacity_bytes=512, segment_bytes=256, grant_reserve_bytes=0)
    got = _fill(d, 0, 20)
    stored = [s for s in got if s is not None]
    assert got[:len(stored)] == stored  # the oldest are kept, the newest refused
    assert len(stored) < 20 and d.dropped == 20 - len(stored)
    assert d.used_bytes <= 512
    assert d.next_seq == 21  # refused records still spent their seq
    assert [r[0] for r in d.records(limit=100)] == stored
    d.close()
    d = DecisionLog(root, capacity_bytes=512, segment_bytes=256, grant_reserve_bytes=0)
    assert d.dropped == 20 - len(stored) and d.next_seq == 21
    assert d.append(*_args(20)) is None and d.dropped == 21 - len(stored)
    # Acknowledging frees whole segments and appends resume after the gap.
    d.ack(stored[-1])
    assert d.append(*_args(22)) == 22
    assert d.records() == [_expect(22, 2, 22)]
    d.close()


def test_refused_append_seals_the_segment():
    # Stored seqs inside a segment stay consecutive: after a refusal the next
    # stored record starts a new segment (see the recovery bound in declog).
    root = _fresh()
    d = DecisionLog(root, capacity_bytes=512, segment_bytes=256)
    got = _fill(d, 0, 14)
    stored = [s for s in got if s is not None]
    assert 8 < len(stored) < 14
    before = _segments(root)
    assert os.stat(root + "/" + before[-1])[6] < 200  # the last one has room
    d.ack(d.records(limit=1)[0][0] + 4)  # frees the first segment
    assert _segments(root) == before[1:]
    assert d.append(*_args(14)) == 15
    assert _segments(root) == before[1:] + ["%08d.log" % (int(before[-1][:8]) + 1)]
    d.close()
    # The same across a reopen: the refusals left a gap after the last record.
    root = _fresh()
    d = DecisionLog(root, capacity_bytes=512, segment_bytes=256)
    _fill(d, 0, 14)
    d.close()
    d = DecisionLog(root, capacity_bytes=512, segment_bytes=256)
    before = _segments(root)
    d.ack(d.records(limit=1)[0][0] + 4)
    assert d.append(*_args(14)) == 15
    assert _segments(root) == before[1:] + ["%08d.log" % (int(before[-1][:8]) + 1)]
    d.close()


def test_grants_have_a_reserve_a_flood_of_denials_cannot_take():
    # PROFILE sec. 6: denials stop an eighth of the capacity before grants.
    d = DecisionLog(_fresh(), capacity_bytes=2048, segment_bytes=256)
    deny = (None, 0, "coap", "unlock", None, None, False, 13)
    grant = (None, 0, "coap", "unlock", "alice", b"\x01" * 32, True, 0)
    while d.append(*deny) is not None:
        pass
    assert d.used_bytes <= 2048 - 2048 // 8
    n = 0
    while d.append(*grant) is not None:
        n += 1
    assert n >= 2 and d.used_bytes <= 2048
    assert d.append(*deny) is None and d.dropped >= 2
    d.close()


def test_grants_that_open_nothing_do_not_use_the_reserve():
    # A token upload is logged as a grant, but anyone can upload a public
    # token again and again: such records (reserve=False, as the authorizer
    # passes for authz-info) stop where denials do, leaving the reserve to
    # the grants of a permission (attack pass).
    d = DecisionLog(_fresh(), capacity_bytes=2048, segment_bytes=256)
    upload = (None, 0, "coap", "authz-info", "alice", b"\x02" * 32, True, 0)
    grant = (None, 0, "coap", "unlock", "alice", b"\x01" * 32, True, 0)
    while d.append(*upload, reserve=False) is not None:
        pass
    assert d.used_bytes <= 2048 - 2048 // 8
    assert d.append(*grant) is not None
    d.close()


def test_torn_tail_dropped_at_open():
    for cut in (1, 9, 10, 11, 20):
        root = _fresh()
        d = DecisionLog(root)
        _fill(d, 0, 3)
        d.close()
        path = root + "/00000000.log"
        raw = _read(path)
        _write(path, raw[:len(raw) - cut])
        d = DecisionLog(root)
        assert d.records(limit=10) == [_expect(1, 1, 0), _expect(2, 1, 1)], cut
        assert d.damaged == 1
        # The torn bytes may have held seq 3 (or more if shorter records
        # could fit): next_seq starts above what they can hold.
        tail = len(raw) - cut - sum(_frames(raw)[:2])
        assert d.next_seq == 2 + tail // 21 + 1
        # The torn bytes stay where they are; the next record starts a segment.
        seq = d.append(*_args(5))
        assert seq >= 3
        assert _segments(root) == ["00000000.log", "00000001.log"]
        d.close()
        d = DecisionLog(root)
        assert [r[0] for r in d.records(limit=10)] == [1, 2, seq]
        assert d.records(limit=10)[2] == _expect(seq, 2, 5)
        assert d.next_seq == seq + 1 and d.boot == 3
        d.close()


def test_partial_header_at_tail_dropped():
    root = _fresh()
    d = DecisionLog(root)
    _fill(d, 0, 3)
    d.close()
    with open(root + "/00000000.log", "ab") as f:
        f.write(b"\x00\x1c\x00\x00\x00")  # a header cut after 5 bytes
    d = DecisionLog(root)
    assert [r[0] for r in d.records()] == [1, 2, 3] and d.damaged == 1
    assert d.next_seq == 4  # 5 bytes cannot hold a record
    d.close()


def test_damaged_last_segment_never_reuses_seq():
    # Records 3..10 are lost to a bad byte; their seqs may be at the AS
    # already, so they are not handed out again, now or after a reopen.
    root = _fresh()
    d = DecisionLog(root)
    _fill(d, 0, 10)
    d.close()
    path = root + "/00000000.log"
    raw = bytearray(_read(path))
    at = sum(_frames(raw)[:2])
    raw[at + 5] ^= 0x01  # seq field of record 3
    _write(path, raw)
    d = DecisionLog(root)
    assert [r[0] for r in d.records()] == [1, 2]
    assert d.next_seq > 10
    seq = d.append(*_args(10))
    d.close()
    d = DecisionLog(root)
    assert d.next_seq == seq + 1
    assert [r[0] for r in d.records()] == [1, 2, seq]
    d.close()


def test_bad_crc_in_middle_stops_that_segment_only():
    # Policy: a segment is trusted up to its first bad record; what follows
    # in that segment is dropped (its framing cannot be trusted), the other
    # segments are read normally.
    root = _fresh()
    d = DecisionLog(root, segment_bytes=256)
    _fill(d, 0, 15)
    d.close()
    segs = _segments(root)
    assert len(segs) >= 3
    path = root + "/" + segs[1]
    raw = bytearray(_read(path))
    first = struct.unpack(">HII", raw[:10])
    second_at = 10 + first[0]
    raw[second_at + 12] ^= 0x40  # payload byte of the segment's 2nd record
    _write(path, raw)
    d = DecisionLog(root, segment_bytes=256)
    got = [r[0] for r in d.records(limit=100)]
    lost = [s for s in range(1, 16) if s not in got]
    assert first[1] in got
    assert lost[0] == first[1] + 1  # the damaged record and the rest of its segment
    assert got == sorted(got) and got[-1] == 15
    assert d.damaged == 1
    assert d.next_seq == 16
    d.close()


def test_garbage_only_segment_removed_and_numbering_continues():
    root = _fresh()
    d = DecisionLog(root)
    _fill(d, 0, 2)
    d.close()
    _write(root + "/00000005.log", b"\xff" * 45)
    d = DecisionLog(root)
    assert _segments(root) == ["00000000.log"]
    assert d.damaged == 1 and [r[0] for r in d.records()] == [1, 2]
    # 45 bytes could have held two records after seq 2: they are skipped,
    # and the next record starts a segment numbered above every file seen.
    assert d.next_seq == 5
    assert d.append(*_args(2)) == 5
    d.close()
    assert _segments(root) == ["00000000.log", "00000006.log"]
    d = DecisionLog(root)
    assert d.next_seq == 6 and [r[0] for r in d.records()] == [1, 2, 5]
    assert d.append(*_args(3)) == 6  # a clean, consecutive last segment goes on
    d.close()
    assert _segments(root) == ["00000000.log", "00000006.log"]


def test_corrupt_state_files():
    root = _fresh()
    d = DecisionLog(root)
    _fill(d, 0, 4)
    d.ack(2)
    d.close()
    raw = bytearray(_read(root + "/.state"))
    raw[-1] ^= 1
    _write(root + "/.state", raw)
    d = DecisionLog(root)
    # The acknowledgment is lost: records are offered again (upload is
    # idempotent by seq), but seq does not go back.
    assert d.acked_seq == 0 and [r[0] for r in d.records()] == [1, 2, 3, 4]
    assert d.next_seq == 5
    d.close()
    # A complete .state.tmp left by a reset before the rename counts:
    # every field only grows, so the larger value wins.
    d2 = DecisionLog(root)
    d2.ack(3)
    d2.close()
    os.rename(root + "/.state", root + "/.state.tmp")
    _write(root + "/.state", _small([4, 1, 0]))
    d = DecisionLog(root)
    assert d.acked_seq == 3 and [r[0] for r in d.records()] == [4]
    d.close()
    # A corrupt .boot (and no .boot.tmp): the boot counter restarts above
    # the largest boot found in a record; seq still comes from the records.
    _write(root + "/.boot", b"junk")
    d = DecisionLog(root)
    assert d.boot == 2 and d.next_seq == 5
    d.close()


def test_unstorable_records_raise_oserror_without_spending_seq():
    root = _fresh()
    d = DecisionLog(root)
    _fill(d, 0, 1)
    raises(OSError, d.append, None, 0, "coap", "open", "x" * 2000, b"", False, 13)
    raises(OSError, d.append, None, 0, "coap", "open", 1.5, b"", False, 13)
    assert d.next_seq == 2
    assert d.append(*_args(1)) == 2
    d.close()


class _FailingFile:
    """Writes `budget` more bytes to the real file, then raises EIO."""

    def __init__(self, f, budget):
        self.f = f
        self.budget = budget

    def write(self, b):
        if len(b) > self.budget:
            self.f.write(bytes(b)[:self.budget])
            self.budget = 0
            raise OSError(5)
        self.budget -= len(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()


def test_write_error_raises_and_seals_the_segment():
    import builtins
    root = _fresh()
    d = DecisionLog(root)
    _fill(d, 0, 2)
    d.close()  # the next append reopens the segment through declog.open
    declog.open = lambda p, m="r": _FailingFile(builtins.open(p, m), 15)
    try:
        raises(OSError, d.append, *_args(2))
    finally:
        declog.open = builtins.open
    assert d.next_seq == 4  # seq 3 is spent: the AS sees the gap
    assert d.append(*_args(3)) == 4
    assert _segments(root) == ["00000000.log", "00000001.log"]
    assert [r[0] for r in d.records()] == [1, 2, 4]
    d.close()
    d = DecisionLog(root)
    assert [r[0] for r in d.records()] == [1, 2, 4] and d.damaged == 1
    assert d.next_seq == 5
    d.close()


def test_write_error_on_a_new_segment_leaves_no_file():
    import builtins
    root = _fresh()
    d = DecisionLog(root)
    declog.open = lambda p, m="r": _FailingFile(builtins.open(p, m), 4)
    try:
        raises(OSError, d.append, *_args(0))
    finally:
        declog.open = builtins.open
    assert _segments(root) == []
    assert d.append(*_args(1)) == 2
    assert _segments(root) == ["00000001.log"]
    d.close()


def test_bad_geometry_refused():
    raises(ValueError, DecisionLog, _fresh(), 4096, 100)
    raises(ValueError, DecisionLog, _fresh(), 1000, 2048)
