"""Codec layer: CoAP message format (RFC 7252 sec. 3).

`parse` turns a datagram (bytes, bytearray or memoryview) into a `Message`
and raises `FormatError` for every message format error of sec. 3 and
sec. 4.1; `serialize` is its exact inverse. Options are a list of
(number, bytes) pairs kept in number order; a repeated option keeps the
order it arrived in (sec. 5.4.5). Caps come from the datagram itself: no
declared length is trusted before it is checked against what is left.
"""
from micropython import const

from trust.cbor import utf8_valid

# Message types (sec. 3)
CON = const(0)
NON = const(1)
ACK = const(2)
RST = const(3)

# Method and response codes (sec. 12.1), class << 5 | detail
EMPTY = const(0)
GET = const(1)
POST = const(2)
PUT = const(3)
DELETE = const(4)
CREATED = const(65)  # 2.01
DELETED = const(66)  # 2.02
VALID = const(67)  # 2.03
CHANGED = const(68)  # 2.04
CONTENT = const(69)  # 2.05
BAD_REQUEST = const(128)  # 4.00
UNAUTHORIZED = const(129)  # 4.01
BAD_OPTION = const(130)  # 4.02
FORBIDDEN = const(131)  # 4.03
NOT_FOUND = const(132)  # 4.04
METHOD_NOT_ALLOWED = const(133)  # 4.05
NOT_ACCEPTABLE = const(134)  # 4.06
PRECONDITION_FAILED = const(140)  # 4.12
REQUEST_ENTITY_TOO_LARGE = const(141)  # 4.13
UNSUPPORTED_CONTENT_FORMAT = const(143)  # 4.15
TOO_MANY_REQUESTS = const(157)  # 4.29, RFC 8516
INTERNAL_SERVER_ERROR = const(160)  # 5.00
NOT_IMPLEMENTED = const(161)  # 5.01
SERVICE_UNAVAILABLE = const(163)  # 5.03
PROXYING_NOT_SUPPORTED = const(165)  # 5.05

# Option numbers (sec. 5.10, RFC 7641, RFC 7959, PROFILE.md sec. 4)
IF_MATCH = const(1)
URI_HOST = const(3)
ETAG = const(4)
IF_NONE_MATCH = const(5)
OBSERVE = const(6)
URI_PORT = const(7)
URI_PATH = const(11)
CONTENT_FORMAT = const(12)
MAX_AGE = const(14)
URI_QUERY = const(15)
ACCEPT = const(17)
BLOCK2 = const(23)
BLOCK1 = const(27)
SIZE2 = const(28)
PROXY_URI = const(35)
PROXY_SCHEME = const(39)
SIZE1 = const(60)
ERROR = const(65000)
BEARER = const(65001)
POP = const(65005)

_PAYLOAD_MARKER = const(0xFF)
_MAX_TOKEN = const(8)
_MAX_OPTION_NUMBER = const(65535)
_MAX_OPTION_LENGTH = const(65804)  # 65535 + 269, sec. 3.1
# Not an RFC limit: a cap on the option list built from one datagram (each
# option costs a tuple and a bytes object; a 1152-byte datagram could
# otherwise declare over a thousand empty options).
MAX_OPTIONS = const(64)


class FormatError(ValueError):
    """The bytes are not a well-formed CoAP message (RFC 7252 sec. 3, 4.1)."""


def code_str(code):
    """'c.dd' form of a code, for logs and diagnostics."""
    return "%d.%02d" % (code >> 5, code & 0x1F)


def is_critical(number):
    # Sec. 5.4.6: odd option numbers are critical.
    return number & 1 == 1


def encode_uint(value):
    """Minimal big-endian form of a uint option value (sec. 3.2): 0 is empty."""
    if value < 0:
        raise ValueError("negative uint option")
    n = 0
    v = value
    while v:
        n += 1
        v >>= 8
    return value.to_bytes(n, "big")


def decode_uint(value):
    """Value of a uint option; leading zero bytes are accepted (sec. 3.2)."""
    n = 0
    for b in value:
        n = (n << 8) | b
    return n


def decode_text(value):
    """Option value as str, refusing anything that is not strict UTF-8."""
    if not utf8_valid(value):
        raise FormatError("option value is not UTF-8")
    return bytes(value).decode()


class Message:
    __slots__ = ("mtype", "code", "mid", "token", "options", "payload")

    def __init__(self, mtype=CON, code=EMPTY, mid=0, token=b"", options=None, payload=b""):
        self.mtype = mtype
        self.code = code
        self.mid = mid
        self.token = token
        self.options = [] if options is None else options
        self.payload = payload

    def add(self, number, value=b""):
        """Append an option after any others with a number <= `number`."""
        opts = self.options
        i = len(opts)
        while i and opts[i - 1][0] > number:
            i -= 1
        opts.insert(i, (number, bytes(value)))

    def get(self, number, default=None):
        """Value of the first option `number`, or `default`."""
        for num, val in self.options:
            if num == number:
                return val
        return default

    def get_all(self, number):
        return [val for num, val in self.options if num == number]

    def uri_path(self):
        """Uri-Path segments as a list of str (sec. 5.10.1); FormatError
        if a segment is not UTF-8."""
        return [decode_text(v) for v in self.get_all(URI_PATH)]

    def __repr__(self):
        return "<Message t=%d %s mid=%d token=%s opts=%r len=%d>" % (
            self.mtype, code_str(self.code), self.mid, self.token.hex(),
            self.options, len(self.payload))


def _ext(data, pos, end, nibble, what):
    # Sec. 3.1: nibble 13 -> one extra byte (+13), 14 -> two (+269),
    # 15 is reserved (only valid as the payload marker, checked by caller).
    if nibble < 13:
        return nibble, pos
    if nibble == 13:
        if pos + 1 > end:
            raise FormatError("truncated extended option " + what)
        return data[pos] + 13, pos + 1
    if nibble == 14:
        if pos + 2 > end:
            raise FormatError("truncated extended option " + what)
        return ((data[pos] << 8) | data[pos + 1]) + 269, pos + 2
    raise FormatError("reserved option %s nibble 15" % what)


def parse(data, max_options=MAX_OPTIONS):
    """Decode one CoAP datagram into a Message or raise FormatError (also
    when it holds more than `max_options` options)."""
    end = len(data)
    if end < 4:
        raise FormatError("shorter than the 4-byte header")
    b0 = data[0]
    if b0 >> 6 != 1:
        raise FormatError("version is not 1")
    tkl = b0 & 0x0F
    if tkl > _MAX_TOKEN:
        raise FormatError("token length 9-15 is reserved")
    code = data[1]
    msg = Message((b0 >> 4) & 3, code, (data[2] << 8) | data[3])
    if code == EMPTY:
        # Sec. 4.1: an Empty message is the header only.
        if end != 4 or tkl:
            raise FormatError("empty message with token, options or payload")
        return msg
    pos = 4 + tkl
    if pos > end:
        raise FormatError("truncated token")
    msg.token = bytes(data[4:pos])
    opts = msg.options
    number = 0
    while pos < end:
        b = data[pos]
        pos += 1
        if b == _PAYLOAD_MARKER:
            if pos == end:
                raise FormatError("payload marker without payload")
            msg.payload = bytes(data[pos:end])
            return msg
        delta, pos = _ext(data, pos, end, b >> 4, "delta")
        length, pos = _ext(data, pos, end, b & 0x0F, "length")
        number += delta
        if number > _MAX_OPTION_NUMBER:
            raise FormatError("option number above 65535")
        if pos + length > end:
            raise FormatError("option value runs past the end")
        if len(opts) >= max_options:
            raise FormatError("more than %d options" % max_options)
        opts.append((number, bytes(data[pos:pos + length])))
        pos += length
    return msg


def _nibble(n, out):
    # Sec. 3.1 in reverse: returns the 4-bit field, appends extended bytes.
    if n < 13:
        return n
    if n < 269:
        out.append(n - 13)
        return 13
    n -= 269
    out.append(n >> 8)
    out.append(n & 0xFF)
    return 14


def serialize(msg):
    """Encode a Message into bytes; ValueError if it cannot be encoded."""
    token = msg.token
    if len(token) > _MAX_TOKEN:
        raise ValueError("token longer than 8 bytes")
    if not 0 <= msg.mtype <= 3 or not 0 <= msg.code <= 255 or not 0 <= msg.mid <= 0xFFFF:
        raise ValueError("header field out of range")
    opts = msg.options
    if msg.code == EMPTY and (token or opts or msg.payload):
        raise ValueError("empty message with token, options or payload")
    out = bytearray(4)
    out[0] = 0x40 | (msg.mtype << 4) | len(token)
    out[1] = msg.code
    out[2] = msg.mid >> 8
    out[3] = msg.mid & 0xFF
    out += token
    order = range(len(opts))
    for i in range(1, len(opts)):
        if opts[i][0] < opts[i - 1][0]:
            # Out of order: sort by (number, position) so repeated options
            # keep their relative order (MicroPython's sort is not stable).
            order = sorted(order, key=lambda k: (opts[k][0], k))
            break
    prev = 0
    for i in order:
        number, value = opts[i]
        if not 0 <= number <= _MAX_OPTION_NUMBER:
            raise ValueError("option number out of range")
        if len(value) > _MAX_OPTION_LENGTH:
            raise ValueError("option value too long")
        ext = bytearray()
        head = _nibble(number - prev, ext) << 4
        head |= _nibble(len(value), ext)
        out.append(head)
        out += ext
        out += value
        prev = number
    if msg.payload:
        out.append(_PAYLOAD_MARKER)
        out += msg.payload
    return bytes(out)
