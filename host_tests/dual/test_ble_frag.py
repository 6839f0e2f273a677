"""BLE fragment framing (PROFILE sec. 5): exact header bytes, reassembly at
20- and 244-byte payloads, and every fault discarding the whole message
(a gap, an overflow past 1400 bytes, a write that filled the GATT buffer,
an empty write), with the rest of a discarded message dropped quietly.
Under CPython and the MicroPython unix port (ble.frag has no radio)."""
from ble import frag
from ble.frag import COMPLETE, CUT, EMPTY, GAP, MORE, OVERFLOW, Reassembler, fragments


def _feed_all(r, frags):
    out = [r.feed(f) for f in frags]
    return out


def test_fragment_bytes_exact():
    assert fragments(b"abc", 20) == [b"\x80abc"]
    assert fragments(b"", 20) == [b"\x80"]
    f = fragments(bytes(range(40)), 20)
    assert f == [b"\x00" + bytes(range(19)), b"\x01" + bytes(range(19, 38)), b"\x82" + bytes(range(38, 40))]


def test_reassembles_at_both_payloads():
    msg = bytes(i & 0xFF for i in range(1400))
    for payload in (20, 244):
        r = Reassembler()
        fs = fragments(msg, payload)
        assert len(fs) == (-(-1400 // (payload - 1)))
        out = _feed_all(r, fs)
        assert out[-1] == COMPLETE and all(x == MORE for x in out[:-1])
        assert bytes(r.message()) == msg
        assert not r.active


def test_sequence_numbers_wrap_mod_128():
    msg = bytes(200)
    fs = fragments(msg, 2)          # one byte a fragment: 200 fragments
    assert fs[127][0] == 127 and fs[128][0] == 0 and fs[-1][0] == 0x80 | (199 & 0x7F)
    r = Reassembler()
    assert _feed_all(r, fs)[-1] == COMPLETE and bytes(r.message()) == msg


def test_gap_discards_and_the_rest_is_dropped():
    fs = fragments(bytes(100), 20)
    r = Reassembler()
    assert r.feed(fs[0]) == MORE
    assert r.feed(fs[2]) == GAP
    assert not r.active
    assert [r.feed(f) for f in fs[3:]] == [MORE] * len(fs[3:])   # never COMPLETE
    assert _feed_all(r, fs)[-1] == COMPLETE                       # a new message starts at 0


def test_overflow_past_1400_bytes():
    fs = fragments(bytes(1401), 244)
    r = Reassembler()
    out = _feed_all(r, fs)
    assert OVERFLOW in out and COMPLETE not in out
    exact = fragments(bytes(1400), 244)
    assert _feed_all(r, exact)[-1] == COMPLETE


def test_write_filling_the_gatt_buffer_is_cut():
    r = Reassembler(1400, 244)
    assert r.feed(b"\x80" + bytes(244)) == CUT         # 245 bytes: maybe cut by the stack
    assert r.feed(b"\x80" + bytes(243)) == COMPLETE     # 244 bytes: whole


def test_empty_write_and_a_restart_mid_message():
    r = Reassembler()
    assert r.feed(b"\x00ab") == MORE
    assert r.feed(b"") == EMPTY and not r.active
    assert r.feed(b"\x00ab") == MORE
    assert r.feed(b"\x00cd") == GAP                     # a new message while one is under way
    assert r.feed(b"\x80xy") == COMPLETE and bytes(r.message()) == b"xy"


def test_fault_names():
    assert frag.FAULTS[GAP] == "fragment_gap" and frag.FAULTS[OVERFLOW] == "message_too_long"
    assert frag.FAULTS[CUT] == "fragment_too_long" and frag.FAULTS[EMPTY] == "fragment_empty"
    assert frag.FAULTS[frag.NOMEM] == "no_memory"


def test_parts_across_chunks_lend_and_restore():
    msg = bytes(i & 0xFF for i in range(700))
    r = Reassembler(1400, 244)
    assert len(r.chunks) == 5 and frag.CHUNK * 5 == 1400
    assert _feed_all(r, fragments(msg, 244))[-1] == COMPLETE and r.length == 700
    assert r.byte(0) == 0 and r.byte(280) == 280 & 0xFF and r.byte(699) == 699 & 0xFF
    assert isinstance(r.part(10, 20), memoryview) and bytes(r.part(10, 20)) == msg[10:20]  # in place
    assert bytes(r.part(250, 600)) == msg[250:600]      # across chunks: a copy
    assert bytes(r.part(5, 5)) == b""
    r.lend()                                            # 700 bytes: three chunks kept
    assert len(r.chunks) == 3 and bytes(r.message()) == msg
    r.restore()
    assert len(r.chunks) == 5
    assert _feed_all(r, fragments(bytes(1400), 20))[-1] == COMPLETE and bytes(r.message()) == bytes(1400)


def test_chunks_lent_are_taken_again_when_needed():
    r = Reassembler(1400, 244)
    assert _feed_all(r, fragments(b"x" * 10, 20))[-1] == COMPLETE
    r.lend()
    assert len(r.chunks) == 1
    msg = bytes(i & 0xFF for i in range(1400))
    assert _feed_all(r, fragments(msg, 244))[-1] == COMPLETE and bytes(r.message()) == msg
    assert len(r.chunks) == 5
