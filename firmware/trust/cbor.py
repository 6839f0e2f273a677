"""Codec layer: strict CBOR (RFC 8949) decoder for untrusted bytes and a
deterministic encoder (RFC 8949 4.2.1).

The decoder accepts definite lengths only and checks every cap before it
allocates: input size, nesting depth, declared lengths and item counts
(each declared item needs at least one byte of input, so a count larger
than what is left is refused before a list is built). Duplicate map keys,
trailing bytes, reserved additional-information values, ill-formed simple
values and break codes outside indefinite items are errors. Byte strings
come back as `bytes`, text as `str`, tags as `Tag`.
"""
from micropython import const

_MAX_DEPTH = const(8)
_MAX_SIZE = const(4096)


def utf8_valid(b):
    """True if the bytes `b` are UTF-8 by RFC 3629 strictly: no overlong
    forms, no surrogates, nothing above U+10FFFF. Checked here, not left to
    str(): MicroPython's decoder accepts all three (CPython's does not), and
    strictness must not depend on the interpreter."""
    i = 0
    end = len(b)
    while i < end:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            n, lo, hi = 1, 0x80, 0xBF
        elif c == 0xE0:
            n, lo, hi = 2, 0xA0, 0xBF
        elif c == 0xED:
            n, lo, hi = 2, 0x80, 0x9F
        elif 0xE1 <= c <= 0xEF:
            n, lo, hi = 2, 0x80, 0xBF
        elif c == 0xF0:
            n, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= c <= 0xF3:
            n, lo, hi = 3, 0x80, 0xBF
        elif c == 0xF4:
            n, lo, hi = 3, 0x80, 0x8F
        else:
            return False
        if i + n >= end:
            return False
        if not lo <= b[i + 1] <= hi:
            return False
        for k in range(i + 2, i + n + 1):
            if not 0x80 <= b[k] <= 0xBF:
                return False
        i += n + 1
    return True

class CBORError(ValueError):
    """Raised for any ill-formed, non-strict or over-cap input."""


class Tag:
    __slots__ = ("tag", "value")

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and other.tag == self.tag and other.value == self.value

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


class _Undefined:
    def __repr__(self):
        return "undefined"


undefined = _Undefined()


def _half(h):
    # RFC 8949 Appendix D: IEEE 754 binary16 to float.
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        val = mant * 2.0 ** -24
    elif exp != 31:
        val = (mant + 1024) * 2.0 ** (exp - 25)
    else:
        val = float("inf") if mant == 0 else float("nan")
    return -val if h & 0x8000 else val


class _Reader:
    __slots__ = ("buf", "pos", "end", "max_depth")

    def __init__(self, buf, max_depth):
        self.buf = buf
        self.pos = 0
        self.end = len(buf)
        self.max_depth = max_depth

    def _take(self, n):
        p = self.pos
        if n > self.end - p:
            raise CBORError("truncated")
        self.pos = p + n
        return self.buf[p:p + n]

    def _head(self):
        # Returns (major type, additional info, argument).
        p = self.pos
        if p >= self.end:
            raise CBORError("truncated")
        ib = self.buf[p]
        self.pos = p + 1
        mt = ib >> 5
        ai = ib & 0x1F
        if ai < 24:
            return mt, ai, ai
        if ai == 31:
            raise CBORError("indefinite length")
        if ai > 27:
            raise CBORError("reserved additional info")
        n = 1 << (ai - 24)
        return mt, ai, int.from_bytes(self._take(n), "big")

    def item(self, depth):
        if depth > self.max_depth:
            raise CBORError("nesting too deep")
        mt, ai, arg = self._head()
        if mt == 0:
            return arg
        if mt == 1:
            return -1 - arg
        if mt == 2:
            return bytes(self._take(arg))
        if mt == 3:
            raw = self._take(arg)
            if not utf8_valid(raw):
                raise CBORError("invalid utf-8")
            return str(raw, "utf-8")
        if mt == 4:
            # Each element needs at least one byte: refuse before allocating.
            if arg > self.end - self.pos:
                raise CBORError("array count exceeds input")
            out = []
            for _ in range(arg):
                out.append(self.item(depth + 1))
            return out
        if mt == 5:
            if arg > (self.end - self.pos) >> 1:
                raise CBORError("map count exceeds input")
            out = {}
            for _ in range(arg):
                k = self.item(depth + 1)
                if not isinstance(k, (int, str, bytes)) or isinstance(k, bool):
                    raise CBORError("unsupported map key type")
                if k in out:
                    raise CBORError("duplicate map key")
                out[k] = self.item(depth + 1)
            return out
        if mt == 6:
            return Tag(arg, self.item(depth + 1))
        # mt == 7: simple values and floats
        if ai < 24:
            if arg == 20:
                return False
            if arg == 21:
                return True
            if arg == 22:
                return None
            if arg == 23:
                return undefined
            raise CBORError("unassigned simple value")
        if ai == 24:
            # RFC 8949 3.3: simple values below 32 in two bytes are not well-formed.
            raise CBORError("ill-formed or unassigned simple value")
        if ai == 25:
            return _half(arg)
        import struct
        if ai == 26:
            return struct.unpack(">f", arg.to_bytes(4, "big"))[0]
        return struct.unpack(">d", arg.to_bytes(8, "big"))[0]


def decode(data, max_depth=_MAX_DEPTH, max_size=_MAX_SIZE):
    """Decode exactly one CBOR item that fills `data` (bytes, bytearray or
    memoryview). Raises CBORError on anything ill-formed or over a cap."""
    if len(data) > max_size:
        raise CBORError("input too large")
    r = _Reader(memoryview(data), max_depth)
    v = r.item(0)
    if r.pos != r.end:
        raise CBORError("trailing bytes")
    return v


def decode_prefix(data, max_depth=_MAX_DEPTH, max_size=_MAX_SIZE):
    """Decode one CBOR item from the start of `data`; returns (item, used)."""
    if len(data) > max_size:
        raise CBORError("input too large")
    r = _Reader(memoryview(data), max_depth)
    v = r.item(0)
    return v, r.pos


def _head(mt, n, out):
    mt <<= 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(mt | 26)
        out.extend(n.to_bytes(4, "big"))
    elif n < 0x10000000000000000:
        out.append(mt | 27)
        out.extend(n.to_bytes(8, "big"))
    else:
        raise CBORError("integer out of range")


def _enc(v, out):
    if v is None:
        out.append(0xF6)
    elif v is True:
        out.append(0xF5)
    elif v is False:
        out.append(0xF4)
    elif isinstance(v, int):
        if v >= 0:
            _head(0, v, out)
        else:
            _head(1, -1 - v, out)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        _head(2, len(v), out)
        out.extend(v)
    elif isinstance(v, str):
        b = v.encode("utf-8")
        _head(3, len(b), out)
        out.extend(b)
    elif isinstance(v, (list, tuple)):
        _head(4, len(v), out)
        for x in v:
            _enc(x, out)
    elif isinstance(v, dict):
        # RFC 8949 4.2.1: keys sorted by the bytewise order of their encodings.
        items = []
        for k in v:
            kb = bytearray()
            _enc(k, kb)
            items.append((bytes(kb), v[k]))
        items.sort(key=lambda kv: kv[0])
        _head(5, len(items), out)
        for kb, x in items:
            out.extend(kb)
            _enc(x, out)
    elif isinstance(v, Tag):
        _head(6, v.tag, out)
        _enc(v.value, out)
    else:
        raise CBORError("cannot encode %s" % type(v).__name__)


def encode(v):
    """Deterministic encoding (RFC 8949 4.2.1) of int, bytes, str, list,
    tuple, dict, bool, None and Tag. Floats are not encoded."""
    out = bytearray()
    _enc(v, out)
    return bytes(out)


def encode_into(v, out):
    """Append the deterministic encoding of v to `out`: a bytearray, or
    anything with its append(int) and extend(bytes) (e.g. a file writer)."""
    _enc(v, out)
