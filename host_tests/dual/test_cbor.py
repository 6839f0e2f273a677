"""CBOR codec: RFC 8949 Appendix A vectors and the strictness table."""
from mpunit import raises, unhex
from trust import cbor
from trust.cbor import CBORError, Tag, decode, encode

# (value, hex) pairs from RFC 8949 Appendix A that round-trip deterministically.
VECTORS = [
    (0, "00"), (1, "01"), (10, "0a"), (23, "17"), (24, "1818"), (25, "1819"),
    (100, "1864"), (1000, "1903e8"), (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"), (18446744073709551615, "1bffffffffffffffff"),
    (-1, "20"), (-10, "29"), (-100, "3863"), (-1000, "3903e7"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (False, "f4"), (True, "f5"), (None, "f6"),
    (b"", "40"), (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"), ("a", "6161"), ("IETF", "6449455446"), ("\"\\", "62225c"),
    ("\u00fc", "62c3bc"), ("\u6c34", "63e6b0b4"),
    ([], "80"), ([1, 2, 3], "83010203"), ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"), ({1: 2, 3: 4}, "a201020304"), ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    ({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}, "a56161614161626142616361436164614461656145"),
    (Tag(1, 1363896240), "c11a514b67b0"),
    (Tag(23, b"\x01\x02\x03\x04"), "d74401020304"),
]


def test_rfc8949_vectors_roundtrip():
    for value, hx in VECTORS:
        raw = unhex(hx)
        assert decode(raw) == value, hx
        assert encode(value) == raw, hx


def test_decode_floats():
    assert decode(unhex("f93c00")) == 1.0
    assert decode(unhex("f9c400")) == -4.0
    assert decode(unhex("fa47c35000")) == 100000.0
    assert decode(unhex("fb3ff199999999999a")) == 1.1
    assert decode(unhex("f90001")) == 5.960464477539063e-08


def test_deterministic_map_key_order():
    # RFC 8949 4.2.1: bytewise order of encoded keys: 10, 100, -1, "z", "aa"
    m = {"aa": 5, "z": 4, -1: 3, 100: 2, 10: 1}
    assert encode(m) == unhex("a50a011864022003617a046261610" + "5")


def test_memoryview_input():
    raw = bytearray(unhex("a26161016162820203"))
    assert decode(memoryview(raw)) == {"a": 1, "b": [2, 3]}


def test_decode_prefix():
    v, used = cbor.decode_prefix(unhex("0102"))
    assert v == 1 and used == 1


DEFECTS = [
    ("", "empty"),
    ("0102", "trailing"),
    ("18", "truncated head"),
    ("1900", "truncated head 2"),
    ("44010203", "truncated bstr"),
    ("5f4101ff", "indefinite bstr"),
    ("7f6161ff", "indefinite tstr"),
    ("9f01ff", "indefinite array"),
    ("bf0101ff", "indefinite map"),
    ("ff", "lone break"),
    ("1c", "reserved ai 28"),
    ("3d", "reserved ai 29"),
    ("5e", "reserved ai 30"),
    ("f800", "two-byte simple < 32"),
    ("f818", "two-byte simple 24"),
    ("f0", "unassigned simple 16"),
    ("a201020103", "duplicate int key"),
    ("a2616101616102", "duplicate text key"),
    ("a1810102", "array as map key"),
    ("a1f501", "bool as map key"),
    ("62c328", "invalid utf-8"),
    # Ill-formed UTF-8 that MicroPython's own decoder accepts (RFC 3629).
    ("62c0af", "overlong '/'"),
    ("63e08080", "overlong NUL, 3 bytes"),
    ("64f0808080", "overlong NUL, 4 bytes"),
    ("63eda080", "surrogate U+D800"),
    ("63edbfbf", "surrogate U+DFFF"),
    ("64f4908080", "above U+10FFFF"),
    ("61c2", "truncated sequence"),
    ("6180", "lone continuation"),
    ("62e282", "cut 3-byte sequence"),
    ("61ff", "byte 0xFF"),
    ("a162c0af01", "overlong text as a map key"),
    ("5bffffffffffffffff", "huge bstr length"),
    ("9bffffffffffffffff", "huge array count"),
    ("bbffffffffffffffff", "huge map count"),
    ("9a7fffffff", "array count over input"),
    ("a301020304", "map count over input"),
    ("c1", "tag without content"),
]


def test_defect_table():
    for hx, what in DEFECTS:
        e = raises(CBORError, decode, unhex(hx))
        assert e is not None, what


def test_valid_utf8_edges_decode():
    # The boundaries of RFC 3629's table are accepted on both interpreters.
    for hx, text in (("617f", "\x7f"), ("62c280", "\x80"), ("63e0a080", "\u0800"),
                     ("63ed9fbf", "\ud7ff"), ("63ee8080", "\ue000"), ("64f0908080", "\U00010000"),
                     ("64f48fbfbf", "\U0010ffff")):
        assert decode(unhex(hx)) == text, hx


def test_depth_cap():
    ok = unhex("81" * 8 + "00")
    assert decode(ok) == [[[[[[[[0]]]]]]]]
    raises(CBORError, decode, unhex("81" * 9 + "00"))
    raises(CBORError, decode, b"\x81" * 10000)
    raises(CBORError, decode, unhex("d8" + "18" + "d818" * 8 + "00"))


def test_size_cap():
    raises(CBORError, decode, b"\x40" + b"\x00" * 20, 8, 16)
    raises(CBORError, decode, bytes(5000))


def test_encode_rejects_unknown_types():
    raises(CBORError, encode, 1.5)
    raises(CBORError, encode, object())
