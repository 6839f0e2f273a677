"""PROFILE sec. 4 v2: not an amplifier. A response to a request from an
unverified address (plain CoAP) is at most 3 times the request's datagram,
except a refusal with AS Request Creation Hints; over a verified transport
(DTLS) responses are never cut.

CASES holds, for each kind of response the server core produces, the
smallest request that reaches it (no token, one-letter paths, empty option
values). Each is sent on plain CoAP and over "coaps" to fresh servers."""
from mpunit import unhex
from coap import message as m
from coap.message import Message, parse, serialize
from coap.server import (AMPLIFICATION, VERIFIED_TRANSPORTS, CoapError, CoapServer,
                         Response, Site)
from lock.app import PROFILE_OPTIONS

PEER = ("192.0.2.1", 5683)
CF_ACE_CBOR = 19
HINTS = b"\xa3\x01\x78\x1ecoaps://as.example.com/token/v1\x05\x66lock-1\x18\x27\x50" + bytes(16)
BIG = bytes(i & 0xFF for i in range(2000))
DIAG = b"d" * 100
LOG = bytes(i % 251 for i in range(400))


class Stub:
    """The lock's visible resources (paths and attributes as in
    firmware/lock): refusals with hints unless a PoP option is present."""

    def __init__(self, body=b"\xa1\x65state\x66locked", verifies=False):
        self.body = body
        self.verifies = verifies

    def _answer(self, request, exchange, code):
        if request.get(m.POP) is None:
            return Response(m.UNAUTHORIZED, HINTS, ((m.ERROR, b"\x01"),), CF_ACE_CBOR)
        # Stands for a valid proof over a nonce sent to this address.
        if self.verifies:
            exchange.verified = True
        return Response(code, self.body, (), 60)

    def get(self, request, exchange):
        return self._answer(request, exchange, m.CONTENT)

    def post(self, request, exchange):
        return self._answer(request, exchange, m.CHANGED)


class AuthzInfo:
    def post(self, request, exchange):
        return Response(m.CREATED, b"\xa1\x18\x27\x50" + bytes(16), (), CF_ACE_CBOR)


class Hello:
    def get(self, request, exchange):
        return Response(m.CONTENT, b"hello", content_format=0)


class Big:
    def get(self, request, exchange):
        return Response(m.CONTENT, BIG, content_format=42)

    def post(self, request, exchange):
        return Response(m.CHANGED, BIG[:200], content_format=42)


class Faulty:
    def get(self, request, exchange):
        raise KeyError("bug")

    def put(self, request, exchange):
        raise CoapError(m.FORBIDDEN, b"no", ((m.ERROR, b"\x02"),), content_format=0)

    def delete(self, request, exchange):
        raise MemoryError()


class Diag:
    """Refusals with long payloads: only 4.00/4.01/4.03 with Content-Format
    19 (hints) are exempt, recognized from the Response alone."""

    def get(self, request, exchange):
        return Response(m.UNAUTHORIZED, DIAG, ((m.ERROR, b"\x01"),), 0)

    def post(self, request, exchange):
        return Response(m.TOO_MANY_REQUESTS, DIAG, ((m.MAX_AGE, b"\x3c"),), CF_ACE_CBOR)

    def put(self, request, exchange):
        return Response(m.FORBIDDEN, DIAG, ((m.ERROR, b"\x02"),), CF_ACE_CBOR)

    def delete(self, request, exchange):
        return Response(m.BAD_REQUEST, DIAG, ((m.ERROR, b"\x00"),), CF_ACE_CBOR)


class Opts:
    def get(self, request, exchange):
        return Response(m.NOT_FOUND, DIAG, ((8, b"x" * 20),), 0)


def make_site():
    site = Site()
    site.add(("authz-info",), AuthzInfo(), {"rt": "ace.ai", "ct": 61})
    site.add(("lock",), Stub(), {"rt": "lock.status", "title": "status"})
    site.add(("lock", "unlock"), Stub(b""), {"rt": "lock.unlock", "title": "unlock"})
    site.add(("lock", "lock"), Stub(b""), {"rt": "lock.lock", "title": "lock"})
    site.add(("log",), Stub(LOG, verifies=True), {"rt": "lock.log", "title": "admin"})
    site.add(("revoke",), Stub(b""), {"rt": "lock.revoke", "title": "admin"})
    site.add(("h",), Hello(), {"hidden": True})
    site.add(("b",), Big(), {"hidden": True})
    site.add(("f",), Faulty(), {"hidden": True})
    site.add(("d",), Diag(), {"hidden": True})
    site.add(("o",), Opts(), {"hidden": True})
    return site


def make(**kw):
    kw.setdefault("known_options", PROFILE_OPTIONS)
    return CoapServer(make_site(), now_ms=lambda: 1000, on_error=lambda e: None, mid_start=100, **kw)


def req(path, code=m.GET, mtype=m.CON, mid=0x1234, token=b"", options=(), payload=b""):
    msg = Message(mtype, code, mid, token, [], payload)
    for seg in path.split("/"):
        if seg:
            msg.add(m.URI_PATH, seg.encode())
    for num, val in options:
        msg.add(num, val)
    return serialize(msg)


WKC = ".well-known/core"
NON = m.NON
RST = "RST"
# (name, datagram, truncated, code on plain CoAP, code over DTLS, the whole
# payload over DTLS or None to skip, exempt from the bound)
CASES = [
    ("4.04 no Uri-Path", req(""), False, m.NOT_FOUND, m.NOT_FOUND, b"", False),
    ("4.05 POST /h", req("h", m.POST), False, m.METHOD_NOT_ALLOWED, m.METHOD_NOT_ALLOWED, b"", False),
    ("4.05 FETCH /h NON", req("h", 5, NON), False, m.METHOD_NOT_ALLOWED, m.METHOD_NOT_ALLOWED, b"", False),
    ("4.00 Uri-Path not UTF-8", req("", options=((m.URI_PATH, b"\xff"),)), False,
     m.BAD_REQUEST, m.BAD_REQUEST, b"Uri-Path is not UTF-8", False),
    ("4.02 unknown critical 65003", req("", options=((65003, b""),)), False,
     m.BAD_OPTION, m.BAD_OPTION, b"unrecognized option 65003", False),
    ("4.02 unknown critical If-Match", req("", options=((m.IF_MATCH, b""),)), False,
     m.BAD_OPTION, m.BAD_OPTION, b"unrecognized option 1", False),
    ("4.02 unknown critical NON: RST", req("", mtype=NON, options=((65003, b""),)), False,
     RST, RST, None, False),
    ("4.02 repeated Accept", req("", options=((m.ACCEPT, b""), (m.ACCEPT, b""))), False,
     m.BAD_OPTION, m.BAD_OPTION, b"unrecognized option 17", False),
    ("4.02 repeated Bearer", req("", options=((m.BEARER, b""), (m.BEARER, b""))), False,
     m.BAD_OPTION, m.BAD_OPTION, b"unrecognized option 65001", False),
    ("4.02 repeated PoP", req("", options=((m.POP, b""), (m.POP, b""))), False,
     m.BAD_OPTION, m.BAD_OPTION, b"unrecognized option 65005", False),
    ("4.02 Uri-Host empty", req("", options=((m.URI_HOST, b""),)), False,
     m.BAD_OPTION, m.BAD_OPTION, b"unrecognized option 3", False),
    ("4.02 Uri-Port 3 bytes", req("", options=((m.URI_PORT, b"\x00\x16\x33"),)), False,
     m.BAD_OPTION, m.BAD_OPTION, b"unrecognized option 7", False),
    ("4.02 Bearer 1025 bytes", req("", options=((m.BEARER, bytes(1025)),)), False,
     m.BAD_OPTION, m.BAD_OPTION, b"unrecognized option 65001", False),
    ("4.13 truncated (Size1)", req("h", m.POST)[:4], True,
     m.REQUEST_ENTITY_TOO_LARGE, m.REQUEST_ENTITY_TOO_LARGE, b"", False),
    ("4.13 truncated NON", req("h", m.POST, NON)[:4], True,
     m.REQUEST_ENTITY_TOO_LARGE, m.REQUEST_ENTITY_TOO_LARGE, b"", False),
    ("4.13 oversize", req("h", m.POST, payload=bytes(1200)), False,
     m.REQUEST_ENTITY_TOO_LARGE, m.REQUEST_ENTITY_TOO_LARGE, b"", False),
    ("5.05 Proxy-Scheme", req("", options=((m.PROXY_SCHEME, b"c"),)), False,
     m.PROXYING_NOT_SUPPORTED, m.PROXYING_NOT_SUPPORTED, b"", False),
    ("5.05 Proxy-Uri", req("", options=((m.PROXY_URI, b"c"),)), False,
     m.PROXYING_NOT_SUPPORTED, m.PROXYING_NOT_SUPPORTED, b"", False),
    ("4.00 Block2 SZX 7", req("", options=((m.BLOCK2, b"\x07"),)), False,
     m.BAD_REQUEST, m.BAD_REQUEST, b"Block2 SZX 7 is reserved", False),
    ("4.02 Block2 NUM 1 on POST", req("", m.POST, options=((m.BLOCK2, b"\x10"),)), False,
     m.BAD_OPTION, m.BAD_OPTION, b"Block2 only for GET", False),
    ("4.02 Block2 beyond the end", req("h", options=((m.BLOCK2, b"\x10"),)), False,
     m.BAD_OPTION, m.BAD_OPTION, b"Block2 beyond the end", False),
    ("4.06 .well-known/core Accept", req(WKC, options=((m.ACCEPT, b""),)), False,
     m.NOT_ACCEPTABLE, m.NOT_ACCEPTABLE, b"", False),
    ("2.05 .well-known/core CON", req(WKC), False, m.CONTENT, m.CONTENT, None, False),
    ("2.05 .well-known/core NON", req(WKC, mtype=NON), False, m.CONTENT, m.CONTENT, None, False),
    ("2.05 .well-known/core block 1 of 64", req(WKC, options=((m.BLOCK2, b"\x12"),)), False,
     m.CONTENT, m.CONTENT, None, False),
    ("2.05 .well-known/core block 3 of 32 NON", req(WKC, mtype=NON, options=((m.BLOCK2, b"\x31"),)), False,
     m.CONTENT, m.CONTENT, None, False),
    ("2.05 /b block 0, no block fits: 5.03", req("b"), False,
     m.SERVICE_UNAVAILABLE, m.CONTENT, BIG[:1024], False),
    ("2.05 /b block 0, 4-byte token", req("b", token=b"tokn"), False, m.CONTENT, m.CONTENT, BIG[:1024], False),
    ("2.05 /b block 1 of 1024", req("b", token=b"tokn", options=((m.BLOCK2, b"\x16"),)), False,
     m.CONTENT, m.CONTENT, BIG[1024:], False),
    ("2.05 small /h", req("h"), False, m.CONTENT, m.CONTENT, b"hello", False),
    ("2.04 POST /b body dropped", req("b", m.POST), False, m.CHANGED, m.CHANGED, BIG[:200], False),
    ("2.01 /authz-info", req("authz-info", m.POST), False, m.CREATED, m.CREATED, None, False),
    ("5.00 crashing resource", req("f"), False, m.INTERNAL_SERVER_ERROR, m.INTERNAL_SERVER_ERROR, b"", False),
    ("5.03 MemoryError", req("f", m.DELETE), False, m.SERVICE_UNAVAILABLE, m.SERVICE_UNAVAILABLE, b"", False),
    ("4.03 CF 0 with Error", req("f", m.PUT), False, m.FORBIDDEN, m.FORBIDDEN, b"no", False),
    ("4.01 hints GET /lock", req("lock"), False, m.UNAUTHORIZED, m.UNAUTHORIZED, HINTS, True),
    ("4.01 hints POST /lock/unlock NON", req("lock/unlock", m.POST, NON), False,
     m.UNAUTHORIZED, m.UNAUTHORIZED, HINTS, True),
    ("4.03 CF 19 exempt", req("d", m.PUT), False, m.FORBIDDEN, m.FORBIDDEN, DIAG, True),
    ("4.00 CF 19 exempt", req("d", m.DELETE), False, m.BAD_REQUEST, m.BAD_REQUEST, DIAG, True),
    ("4.01 CF 0 not exempt", req("d"), False, m.UNAUTHORIZED, m.UNAUTHORIZED, DIAG, False),
    ("4.29 CF 19 not exempt", req("d", m.POST), False, m.TOO_MANY_REQUESTS, m.TOO_MANY_REQUESTS, DIAG, False),
    ("4.04 long options: code alone", req("o"), False, m.NOT_FOUND, m.NOT_FOUND, DIAG, False),
    ("RST format error", unhex("40 01 0001 f0"), False, RST, RST, None, False),
    ("RST CoAP ping", unhex("40 00 0001"), False, RST, RST, None, False),
    ("RST response code in CON", unhex("40 45 0001"), False, RST, RST, None, False),
]


def _is_hints(msg):
    return msg.code in (m.BAD_REQUEST, m.UNAUTHORIZED, m.FORBIDDEN) and msg.get(m.CONTENT_FORMAT) == b"\x13"


def run_case(case, transport):
    name, data, truncated, _, _, _, _ = case
    return make().handle(data, PEER, transport, None, truncated)


def test_cases_reach_their_kind_over_dtls_unchanged():
    # Over DTLS nothing is cut: the whole diagnostic, the whole body.
    assert "coaps" in VERIFIED_TRANSPORTS and "coap" not in VERIFIED_TRANSPORTS
    for case in CASES:
        name, data, _, _, code, payload, _ = case
        out = run_case(case, "coaps")
        if code == RST:
            assert out == bytes((0x70, 0)) + data[2:4], name
            continue
        r = parse(out)
        assert r.code == code, (name, r)
        if payload is not None:
            assert r.payload == payload, name


def test_plain_coap_responses_at_most_three_times_the_request():
    worst = 0  # percent
    for case in CASES:
        name, data, _, code, vcode, _, exempt = case
        out = run_case(case, "coap")
        full = run_case(case, "coaps")
        assert out is not None, name
        if code == RST:
            assert out == full and len(out) == 4, name
            continue
        r = parse(out)
        assert r.code == code, (name, r)
        assert r.token == parse(full).token and r.mtype == parse(full).mtype, name
        if len(full) <= AMPLIFICATION * len(data):
            assert out == full, name  # what fits is never changed
        if exempt:
            assert _is_hints(r) and out == full and len(out) > AMPLIFICATION * len(data), name
            continue
        assert len(out) <= AMPLIFICATION * len(data), (name, len(out), len(data))
        worst = max(worst, 100 * len(out) // len(data))
        if out != full and r.get(m.BLOCK2) is None:
            # Cut without Block2: the diagnostic (or a body that acted) goes.
            assert r.payload == b"" and r.get(m.CONTENT_FORMAT) is None, name
    assert 250 <= worst <= 300, worst


def test_cut_diagnostics_keep_code_token_and_options():
    server = make()
    r = parse(server.handle(req("", token=b"\x01\x02", options=((65003, b""),)), PEER))
    assert (r.mtype, r.code, r.mid, r.token, r.options, r.payload) == (m.ACK, m.BAD_OPTION, 0x1234,
                                                                       b"\x01\x02", [], b"")
    # A refusal that is not hints loses its payload and Content-Format, keeps its options.
    r = parse(server.handle(req("d", mid=2), PEER))
    assert (r.code, r.payload, r.options) == (m.UNAUTHORIZED, b"", [(m.ERROR, b"\x01")])
    r = parse(server.handle(req("d", m.POST, mid=3), PEER))
    assert (r.code, r.payload, r.options) == (m.TOO_MANY_REQUESTS, b"", [(m.MAX_AGE, b"\x3c")])
    # When even code and options do not fit, the code alone.
    r = parse(server.handle(req("o", mid=4, token=b"\x07"), PEER))
    assert (r.mtype, r.code, r.mid, r.token, r.options, r.payload) == (m.ACK, m.NOT_FOUND, 4, b"\x07", [], b"")


def get_all(path, token=b"\x05", mtype=m.CON, first=None, transport="coap"):
    """A client following Block2 (RFC 7959 sec. 2.4): asks for the next
    block at the size the server used; returns the body and the blocks' SZX."""
    server = make()
    body = b""
    opts = () if first is None else ((m.BLOCK2, first),)
    mid = 0x100
    sizes = set()
    while True:
        data = req(path, mtype=mtype, mid=mid, token=token, options=opts)
        out = server.handle(data, PEER, transport)
        if transport == "coap":
            assert len(out) <= AMPLIFICATION * len(data), (len(out), len(data))
        r = parse(out)
        assert r.code == m.CONTENT and r.token == token
        assert r.get(m.CONTENT_FORMAT) == b"\x28"
        block2 = r.get(m.BLOCK2)
        if block2 is None:
            return body + r.payload, sizes
        v = m.decode_uint(block2)
        num, more, szx = v >> 4, (v >> 3) & 1, v & 7
        assert num << (4 + szx) == len(body)
        assert more == 0 or len(r.payload) == 1 << (4 + szx)
        body += r.payload
        sizes.add(szx)
        if not more:
            return body, sizes
        opts = ((m.BLOCK2, m.encode_uint(((num + 1) << 4) | szx)),)
        mid += 1


def test_block2_client_reassembles_well_known_core():
    link = make_site().link_format().encode()
    assert len(link) > 200
    assert get_all(WKC, transport="coaps") == (link, set())
    for mtype in (m.CON, m.NON):
        for token in (b"", b"\x05", bytes(8)):
            body, sizes = get_all(WKC, token, mtype)
            assert body == link and len(sizes) == 1, (mtype, token)
    # Largest SZX that fits: 32 bytes for a bare 21-byte GET, 64 with an
    # 8-byte token (29 bytes: 87 allowed).
    assert get_all(WKC, b"")[1] == {1}
    assert get_all(WKC, bytes(8))[1] == {2}
    # A client asking for large blocks (early negotiation) gets the fitting size.
    body, sizes = get_all(WKC, bytes(8), first=b"\x06")
    assert body == link and sizes == {2}
    # ... and a smaller size it asks for is kept.
    body, sizes = get_all(WKC, bytes(8), first=b"\x00")
    assert body == link and sizes == {0}


def test_block2_later_block_at_larger_szx_is_scaled():
    # RFC 7959 sec. 2.4: the server may answer with a smaller block; the
    # block number is then the one of the same offset at that size.
    server = make()
    link = server.site.link_format().encode()
    r = parse(server.handle(req(WKC, options=((m.BLOCK2, b"\x12"),)), PEER))  # block 1 of 64
    assert r.get(m.BLOCK2) == b"\x29"  # block 2 of 32, more
    assert r.payload == link[64:96]
    r = parse(server.handle(req(WKC, mid=2, options=((m.BLOCK2, b"\x16"),)), PEER))  # block 1 of 1024
    assert r.code == m.BAD_OPTION  # beyond the end, whatever the size
    r = parse(server.handle(req("b", mid=3, token=bytes(8), options=((m.BLOCK2, b"\x16"),)), PEER))
    v = m.decode_uint(r.get(m.BLOCK2))
    assert (v >> 4, (v >> 3) & 1, v & 7) == (64, 1, 0) and r.payload == BIG[1024:1040]
    # Padded, the same request gets 512-byte blocks: block 2 of 512.
    data = req("b", mid=4, token=bytes(8), options=((m.BLOCK2, b"\x16"), (65010, bytes(180))))
    r = parse(server.handle(data, PEER))
    v = m.decode_uint(r.get(m.BLOCK2))
    assert (v >> 4, (v >> 3) & 1, v & 7) == (2, 1, 5) and r.payload == BIG[1024:1536]


def test_larger_requests_get_larger_responses():
    # The bound grows with the request: padded with an elective option
    # nobody reads, the whole link-format comes back in one response.
    server = make()
    link = server.site.link_format().encode()
    pad = ((65010, bytes(70)),)
    data = req(WKC, options=pad)
    r = parse(server.handle(data, PEER))
    assert r.payload == link and r.get(m.BLOCK2) is None
    assert len(serialize(r)) <= 3 * len(data)


def test_duplicate_shorter_datagram_gets_no_amplified_answer():
    # A MID primed by a large request (the bound allowed a large answer) is
    # not replayed to a short datagram reusing it from the same address.
    server = make()
    link = server.site.link_format().encode()
    prime = req(WKC, options=((65010, bytes(70)),))
    first = server.handle(prime, PEER)
    assert parse(first).payload == link
    assert server.handle(prime, PEER) == first  # a true duplicate: same answer
    assert server.handle(req("h"), PEER) is None
    # Over DTLS a duplicate is answered as before.
    server.handle(prime, PEER, "coaps")
    assert server.handle(req("h"), PEER, "coaps") == first
    # An exempt hints answer is repeated for the same datagram.
    data = req("lock", mid=7)
    first = server.handle(data, PEER)
    assert len(first) > 3 * len(data) and server.handle(data, PEER) == first
    # A duplicate within the bound is answered whatever its size.
    first = server.handle(req("h", mid=8, token=b"\x01\x02\x03"), PEER)
    assert server.handle(req("h", mid=8), PEER) == first


def test_resource_that_verified_the_address_is_not_bounded():
    # GET /log with a proof: the resource vouches for the address (a PoP
    # proof over a nonce sent there), so the whole body, no Block2.
    server = make()
    data = req("log", options=((m.POP, bytes(80)),))
    out = server.handle(data, PEER)
    r = parse(out)
    assert r.code == m.CONTENT and r.payload == LOG and r.get(m.BLOCK2) is None
    assert len(out) > 3 * len(data)
    # GET /lock with a proof does not vouch: its answer fits anyway.
    r = parse(server.handle(req("lock", mid=2, options=((m.POP, b""),)), PEER))
    assert r.code == m.CONTENT


def test_verified_transports_are_configurable():
    link = make_site().link_format().encode()
    server = make(verified_transports=("coap", "coaps"))
    assert parse(server.handle(req(WKC), PEER)).payload == link
    server = make(verified_transports=())
    r = parse(server.handle(req(WKC), PEER, "coaps"))
    assert r.get(m.BLOCK2) is not None and len(r.payload) == 32
    # The transport loop's positional call keeps working.
    assert make().handle(memoryview(req(WKC)), PEER, "coap", None, False) is not None
