"""CoAP codec (RFC 7252 sec. 3): hand-computed vectors and the defect table."""
from mpunit import raises, unhex
from coap import message as m
from coap.message import FormatError, Message, parse, serialize

TEMP = b"temperature"
BIG = bytes(range(256)) + bytes(44)  # 300 bytes

# (hex, mtype, code, mid, token, options, payload); every row must parse to
# these fields and serialize back to exactly these bytes.
VECTORS = [
    # RFC 7252 Appendix A style GET /temperature and its piggybacked answer.
    ("40 01 7d34 bb" + TEMP.hex(), m.CON, m.GET, 0x7D34, b"", [(11, TEMP)], b""),
    ("60 45 7d34 ff 32322e332043", m.ACK, m.CONTENT, 0x7D34, b"", [], b"22.3 C"),
    ("42 01 0001 7157", m.CON, m.GET, 1, b"\x71\x57", [], b""),
    ("48 02 ffff 0102030405060708", m.CON, m.POST, 0xFFFF, bytes(range(1, 9)), [], b""),
    # Empty ACK, empty RST, CoAP ping (sec. 4.1, 4.3).
    ("60 00 1234", m.ACK, 0, 0x1234, b"", [], b""),
    ("70 00 1234", m.RST, 0, 0x1234, b"", [], b""),
    ("40 00 0000", m.CON, 0, 0, b"", [], b""),
    ("50 02 0a0b ff 01", m.NON, m.POST, 0x0A0B, b"", [], b"\x01"),
    # Repeated Uri-Path: second delta is 0 (sec. 3.1).
    ("40 01 0002 b1 61 01 62", m.CON, m.GET, 2, b"", [(11, b"a"), (11, b"b")], b""),
    ("40 01 0003 bb 2e77656c6c2d6b6e6f776e 04 636f7265", m.CON, m.GET, 3, b"",
     [(11, b".well-known"), (11, b"core")], b""),
    # Content-Format 40 and the zero-length uint for 0 (sec. 3.2).
    ("60 45 0004 c1 28 ff 3c2f613e", m.ACK, m.CONTENT, 4, b"", [(12, b"\x28")], b"</a>"),
    ("60 45 0005 c0", m.ACK, m.CONTENT, 5, b"", [(12, b"")], b""),
    # Delta 12 fits the nibble; 13 needs one extended byte of 0.
    ("40 01 0006 c0", m.CON, m.GET, 6, b"", [(12, b"")], b""),
    ("40 01 0007 d0 00", m.CON, m.GET, 7, b"", [(13, b"")], b""),
    # Size1 (60): delta 60 = 13 + 47.
    ("40 02 0008 d2 2f 0480", m.CON, m.POST, 8, b"", [(60, b"\x04\x80")], b""),
    # Delta 268 = 13 + 255 is the largest one-byte extension, 269 the
    # smallest two-byte one.
    ("40 01 0009 d0 ff", m.CON, m.GET, 9, b"", [(268, b"")], b""),
    ("40 01 000a e0 0000", m.CON, m.GET, 10, b"", [(269, b"")], b""),
    # Bearer 65001 = 269 + 0xfcdc; then PoP 65005 (delta 4) and 65535 the top.
    ("40 02 000b e3 fcdc 616263 41 78", m.CON, m.POST, 11, b"",
     [(m.BEARER, b"abc"), (m.POP, b"x")], b""),
    ("40 01 000c e0 fef2", m.CON, m.GET, 12, b"", [(65535, b"")], b""),
    # Lengths 12, 13 (one extended byte) and 300 (two bytes, 300 - 269 = 31).
    ("40 01 000d bc 616161616161616161616161", m.CON, m.GET, 13, b"", [(11, b"a" * 12)], b""),
    ("40 01 000e bd 00 61616161616161616161616161", m.CON, m.GET, 14, b"", [(11, b"a" * 13)], b""),
    ("40 01 000f bd ff" + "62" * 268, m.CON, m.GET, 15, b"", [(11, b"b" * 268)], b""),
    ("40 02 0010 ee fcdc 001f" + BIG.hex(), m.CON, m.POST, 16, b"", [(m.BEARER, BIG)], b""),
    # Delta and length both extended in the same option header.
    ("40 02 0011 dd 2f 00 61616161616161616161616161 ff 7a", m.CON, m.POST, 17, b"",
     [(60, b"a" * 13)], b"z"),
]


def test_vectors_parse():
    for row in VECTORS:
        hx, mtype, code, mid, token, options, payload = row
        msg = parse(unhex(hx))
        assert msg.mtype == mtype, hx
        assert msg.code == code, hx
        assert msg.mid == mid, hx
        assert msg.token == token, hx
        assert msg.options == options, hx
        assert msg.payload == payload, hx


def test_vectors_serialize():
    for row in VECTORS:
        hx, mtype, code, mid, token, options, payload = row
        msg = Message(mtype, code, mid, token, list(options), payload)
        assert serialize(msg) == unhex(hx), hx


def test_parse_memoryview_and_bytearray():
    raw = unhex("42 01 0001 7157 b5 68656c6c6f ff 6869")
    for data in (memoryview(raw), bytearray(raw), memoryview(bytearray(raw + b"junk"))[:len(raw)]):
        msg = parse(data)
        assert msg.token == b"\x71\x57"
        assert msg.options == [(11, b"hello")]
        assert msg.payload == b"hi"
        assert type(msg.payload) is bytes and type(msg.token) is bytes


# Every message format error of RFC 7252 sec. 3 and 4.1.
DEFECTS = [
    ("", "empty datagram"),
    ("40", "1 byte"),
    ("4001 00", "3 bytes"),
    ("0001 0000", "version 0"),
    ("8001 0000", "version 2"),
    ("c001 0000", "version 3"),
    ("4201 0000 71", "token shorter than TKL"),
    ("4001 0000 f0", "delta 15 with length 0"),
    ("4001 0000 f1 00", "delta 15 with length 1"),
    ("4001 0000 bf", "length nibble 15"),
    ("4001 0000 1f 00", "length 15 on delta 1"),
    ("4001 0000 d0", "delta 13 without its extended byte"),
    ("4001 0000 e0 01", "delta 14 with one of two extended bytes"),
    ("4001 0000 bd", "length 13 without its extended byte"),
    ("4001 0000 be 00", "length 14 with one of two extended bytes"),
    ("4001 0000 b5 6162", "value runs past the end"),
    ("4001 0000 be ffff 61", "huge length 65804"),
    ("4001 0000 ff", "payload marker without payload"),
    ("6045 0000 c1 28 ff", "payload marker at the end after options"),
    ("4100 0000 aa", "empty message with a token"),
    ("4000 0000 b1 61", "empty message with an option"),
    ("4000 0000 ff 61", "empty message with a payload"),
    ("6000 0000 00", "empty message with a trailing byte"),
    ("4001 0000 e0 ffff", "option number 65804"),
    ("4001 0000 e0 fcdc e0 0300", "option number overflow by accumulation"),
]


def test_defects():
    for hx, why in DEFECTS:
        raises(FormatError, parse, unhex(hx))
    for tkl in range(9, 16):
        raises(FormatError, parse, bytes((0x40 | tkl, 1, 0, 0)) + bytes(tkl))


def test_option_count_cap():
    # 64 empty Uri-Path options parse; one more is refused before the list grows.
    msg = parse(unhex("4001 0000 b0") + bytes(m.MAX_OPTIONS - 1))
    assert len(msg.options) == m.MAX_OPTIONS
    raises(FormatError, parse, unhex("4001 0000 b0") + bytes(m.MAX_OPTIONS))
    assert len(parse(unhex("4001 0000 b0") + bytes(9), max_options=10).options) == 10
    raises(FormatError, parse, unhex("4001 0000 b0") + bytes(10), 10)


def test_format_error_is_value_error():
    assert issubclass(FormatError, ValueError)


def test_serialize_rejects():
    raises(ValueError, serialize, Message(m.CON, m.GET, 1, bytes(9)))
    raises(ValueError, serialize, Message(m.CON, 0, 1, b"x"))
    raises(ValueError, serialize, Message(m.CON, 0, 1, b"", [(11, b"a")]))
    raises(ValueError, serialize, Message(m.CON, 0, 1, b"", [], b"p"))
    raises(ValueError, serialize, Message(m.CON, m.GET, 0x10000))
    raises(ValueError, serialize, Message(4, m.GET, 1))
    raises(ValueError, serialize, Message(m.CON, m.GET, 1, b"", [(65536, b"")]))


def test_serialize_sorts_stably():
    msg = Message(m.CON, m.GET, 1, b"", [(15, b"a"), (11, b"x"), (15, b"b"), (11, b"y")])
    assert serialize(msg) == unhex("40 01 0001 b1 78 01 79 41 61 01 62")


def test_add_keeps_number_order():
    msg = Message()
    msg.add(15, b"a")
    msg.add(11, b"x")
    msg.add(15, b"b")
    msg.add(11, b"y")
    msg.add(1, b"")
    assert msg.options == [(1, b""), (11, b"x"), (11, b"y"), (15, b"a"), (15, b"b")]
    assert msg.get(15) == b"a"
    assert msg.get(99) is None and msg.get(99, b"d") == b"d"
    assert msg.get_all(11) == [b"x", b"y"]
    assert msg.get_all(12) == []


def test_uint():
    for value, raw in ((0, b""), (1, b"\x01"), (255, b"\xff"), (256, b"\x01\x00"),
                       (65535, b"\xff\xff"), (0x1000000, b"\x01\x00\x00\x00")):
        assert m.encode_uint(value) == raw
        assert m.decode_uint(raw) == value
    assert m.decode_uint(b"\x00\x01") == 1  # non-minimal is accepted on receipt
    raises(ValueError, m.encode_uint, -1)


def test_uri_path_utf8():
    msg = parse(unhex("40 01 0001 b5 68656c6c6f 02 c3bc 00"))
    assert msg.uri_path() == ["hello", "\u00fc", ""]
    # Strict RFC 3629: MicroPython's own decoder would accept some of these.
    for bad in (b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                b"\xe2\x82", b"a\x80"):
        msg = Message(m.CON, m.GET, 1, b"", [(11, b"ok"), (11, bad)])
        raises(FormatError, msg.uri_path)
    assert Message(m.CON, m.GET, 1, b"", [(11, b"\xf0\x9f\x94\x92")]).uri_path() == ["\U0001f512"]


def test_is_critical_and_numbers():
    for num in (m.IF_MATCH, m.URI_HOST, m.URI_PATH, m.URI_QUERY, m.ACCEPT, m.BLOCK2,
                m.BLOCK1, m.PROXY_URI, m.PROXY_SCHEME, m.BEARER, m.POP):
        assert m.is_critical(num), num
    for num in (m.ETAG, m.OBSERVE, m.CONTENT_FORMAT, m.MAX_AGE, m.SIZE1, m.SIZE2, m.ERROR):
        assert not m.is_critical(num), num
    assert (m.BEARER, m.POP, m.ERROR) == (65001, 65005, 65000)
    assert (m.CREATED, m.CHANGED, m.CONTENT) == (0x41, 0x44, 0x45)
    assert (m.BAD_REQUEST, m.BAD_OPTION, m.NOT_FOUND, m.METHOD_NOT_ALLOWED) == (0x80, 0x82, 0x84, 0x85)
    assert (m.REQUEST_ENTITY_TOO_LARGE, m.UNSUPPORTED_CONTENT_FORMAT) == (0x8D, 0x8F)
    assert (m.TOO_MANY_REQUESTS, m.INTERNAL_SERVER_ERROR, m.SERVICE_UNAVAILABLE) == (0x9D, 0xA0, 0xA3)
    assert m.code_str(m.NOT_FOUND) == "4.04"
