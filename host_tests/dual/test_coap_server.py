"""CoAP server core (RFC 7252 sec. 4, 5; RFC 6690; RFC 7959): message layer,
routing, option checks, deduplication, well-known/core."""
from mpunit import raises, unhex
from coap import message as m
from coap.message import Message, parse, serialize
from coap.server import (_RULES, EXCHANGE_LIFETIME_MS, NON_LIFETIME_MS, CoapError, CoapServer,
                         Response, Site)
from lock.app import PROFILE_OPTIONS

PEER = ("192.0.2.1", 5683)
OTHER = ("192.0.2.2", 5683)


class Hello:
    def get(self, request, exchange):
        return Response(m.CONTENT, b"hello", content_format=0)


class Counter:
    def __init__(self):
        self.count = 0
        self.exchanges = []

    def post(self, request, exchange):
        self.count += 1
        self.exchanges.append(exchange)
        return Response(m.CHANGED, b"%d" % self.count)


class Big:
    body = bytes(i & 0xFF for i in range(2000))

    def get(self, request, exchange):
        return Response(m.CONTENT, self.body, content_format=42)

    def post(self, request, exchange):
        return Response(m.CHANGED, self.body)


class Faulty:
    def get(self, request, exchange):
        raise KeyError("bug")

    def post(self, request, exchange):
        return "not a response"

    def put(self, request, exchange):
        raise CoapError(m.FORBIDDEN, b"no", ((m.ERROR, b"\x02"),), content_format=0)

    def delete(self, request, exchange):
        return Response(m.DELETED, options=((70000, b""),))


class Clock:
    def __init__(self):
        self.t = 1000

    def __call__(self):
        return self.t


def make(**kw):
    site = Site()
    counter = Counter()
    site.add(("hello",), Hello(), {"rt": "demo.hello", "ct": 0, "title": "Hello"})
    site.add(("counter",), counter, {"rt": "demo.counter", "if": "core.p"})
    site.add(("big",), Big(), {"sz": 2000})
    site.add(("faulty",), Faulty(), {"hidden": True})
    errors = []
    clock = Clock()
    kw.setdefault("known_options", PROFILE_OPTIONS)
    server = CoapServer(site, now_ms=clock, on_error=errors.append, mid_start=100, **kw)
    return server, counter, clock, errors


def req(path, code=m.GET, mtype=m.CON, mid=0x1234, token=b"\x01\x02", options=(), payload=b""):
    msg = Message(mtype, code, mid, token, [], payload)
    for seg in path.split("/"):
        if seg:
            msg.add(m.URI_PATH, seg.encode())
    for num, val in options:
        msg.add(num, val)
    return serialize(msg)


def ask(server, data, peer=PEER, **kw):
    out = server.handle(data, peer, **kw)
    return None if out is None else parse(out)


def vask(server, data, peer=PEER):
    # Over DTLS: a verified address, so responses are not bounded by the
    # request's size (PROFILE sec. 4 v2; bounds: test_coap_amplification).
    return ask(server, data, peer, transport="coaps")


def test_get_piggybacked_ack_exact_bytes():
    server, _, _, _ = make()
    out = server.handle(req("hello"), PEER)
    # ACK 2.05, same MID and token, Content-Format 0 (empty uint), payload.
    assert out == unhex("62 45 1234 0102 c0 ff 68656c6c6f")


def test_non_request_gets_non_response_with_fresh_mids():
    server, _, _, _ = make()
    r1 = ask(server, req("hello", mtype=m.NON, mid=7))
    r2 = ask(server, req("hello", mtype=m.NON, mid=8, token=b"\x09"))
    assert (r1.mtype, r1.code, r1.mid, r1.token) == (m.NON, m.CONTENT, 101, b"\x01\x02")
    assert (r2.mtype, r2.mid, r2.token) == (m.NON, 102, b"\x09")


def test_mid_counter_wraps_and_random_start():
    server, _, _, _ = make()
    server._mid = 0xFFFF
    assert ask(server, req("hello", mtype=m.NON)).mid == 0
    mids = set(CoapServer(Site())._mid for _ in range(8))
    assert len(mids) > 1


def test_routing_errors():
    server, _, _, _ = make()
    assert ask(server, req("nothere", mid=1)).code == m.NOT_FOUND
    assert ask(server, req("hello/deeper", mid=2)).code == m.NOT_FOUND
    assert ask(server, req("", mid=3)).code == m.NOT_FOUND
    assert ask(server, req("hello", code=m.DELETE, mid=4)).code == m.METHOD_NOT_ALLOWED
    assert ask(server, req("hello", code=m.POST, mid=5)).code == m.METHOD_NOT_ALLOWED
    # FETCH (0.05) and an unassigned method code: sec. 5.8 -> 4.05.
    assert ask(server, req("hello", code=5, mid=6)).code == m.METHOD_NOT_ALLOWED
    assert ask(server, req("hello", code=31, mid=7)).code == m.METHOD_NOT_ALLOWED
    r = ask(server, req("", mid=8, options=((m.URI_PATH, b"\xff"),)))
    assert r.code == m.BAD_REQUEST


def test_unknown_critical_option_is_bad_option():
    server, counter, _, _ = make()
    r = ask(server, req("counter", code=m.POST, options=((65003, b"x"),)))
    assert (r.mtype, r.code, r.mid) == (m.ACK, m.BAD_OPTION, 0x1234)
    assert b"65003" in r.payload
    assert counter.count == 0
    # Block1 (27) and If-Match (1) are not implemented: critical -> 4.02.
    assert ask(server, req("counter", code=m.POST, mid=2, options=((m.BLOCK1, b"\x06"),))).code == m.BAD_OPTION
    assert ask(server, req("counter", code=m.POST, mid=3, options=((m.IF_MATCH, b""),))).code == m.BAD_OPTION
    assert counter.count == 0
    # A NON with an unknown critical option is rejected (sec. 5.4.1, 4.3).
    assert server.handle(req("counter", code=m.POST, mtype=m.NON, mid=4, options=((65003, b""),)), PEER) \
        == unhex("70 00 0004")
    assert counter.count == 0


def test_known_and_elective_options_pass():
    server, counter, _, _ = make()
    opts = ((m.BEARER, b"token"), (m.POP, b"pop"), (65002, b"unknown elective"), (m.URI_HOST, b"lock"),
            (m.URI_PORT, b"\x16\x33"), (m.URI_QUERY, b"a=1"), (m.OBSERVE, b""), (m.ETAG, b"12"))
    r = ask(server, req("counter", code=m.POST, options=opts))
    assert r.code == m.CHANGED
    assert counter.exchanges[0].request.get(m.BEARER) == b"token"
    # Without known_options the profile's options are unknown critical ones.
    server2, _, _, _ = make(known_options={})
    assert ask(server2, req("counter", code=m.POST, options=((m.BEARER, b"t"),))).code == m.BAD_OPTION


def test_option_length_and_repeat_rules():
    server, counter, _, _ = make()
    # Critical option with a bad length or repeated -> 4.02 (sec. 5.4.3, 5.4.5).
    for i, opts in enumerate((((m.URI_HOST, b""),), ((m.ACCEPT, b"\x00\x00\x28"),),
                              ((m.ACCEPT, b""), (m.ACCEPT, b"\x28")),
                              ((m.URI_PATH, b"x" * 256),), ((m.BLOCK2, b"\x00\x00\x00\x00"),))):
        r = ask(server, req("hello", mid=10 + i, options=opts))
        assert r.code == m.BAD_OPTION, opts
    # Elective option with a bad length is ignored and removed.
    r = ask(server, req("counter", code=m.POST, mid=20,
                        options=((m.CONTENT_FORMAT, b"\x00\x00\x00"), (m.ETAG, b""),
                                 (m.MAX_AGE, b"\x01"), (m.MAX_AGE, b"\x02"))))
    assert r.code == m.CHANGED
    seen = counter.exchanges[0].request
    assert seen.get(m.CONTENT_FORMAT) is None and seen.get(m.ETAG) is None
    assert seen.get_all(m.MAX_AGE) == [b"\x01"]


def test_profile_options_follow_the_same_rules():
    # PROFILE sec. 4: Bearer (0-1024) and PoP (0-255) are critical and not
    # repeatable: repeated or out of range is 4.02 and the handler never runs.
    server, counter, _, _ = make()
    bad = (((m.BEARER, b"a"), (m.BEARER, b"b")), ((m.POP, b"a"), (m.POP, b"b")),
           ((m.BEARER, b"x" * 1025),), ((m.POP, b"x" * 256),),
           ((m.BEARER, b"a"), (m.POP, b"p"), (m.POP, b"q")))
    for i, opts in enumerate(bad):
        r = ask(server, req("counter", code=m.POST, mid=40 + i, options=opts))
        assert r.code == m.BAD_OPTION, opts
    assert counter.count == 0
    ok = (((m.BEARER, b"x" * 1024),), ((m.POP, b"x" * 255),), ((m.BEARER, b""), (m.POP, b"")))
    for i, opts in enumerate(ok):
        r = ask(server, req("counter", code=m.POST, mid=60 + i, options=opts))
        assert r.code == m.CHANGED, opts


# RFC 7252 sec. 5.10 table, RFC 7641 sec. 2 (Observe), RFC 7959 sec. 2.1 and
# 4 (Block2, Size2), PROFILE sec. 4 (Bearer, PoP): number -> (min length,
# max length, repeatable, critical), stated here rather than taken from the
# code, so the code's table and the odd/even rule are both checked.
RFC_OPTIONS = {
    m.URI_HOST: (1, 255, False, True),
    m.ETAG: (1, 8, True, False),
    m.OBSERVE: (0, 3, False, False),
    m.URI_PORT: (0, 2, False, True),
    m.URI_PATH: (0, 255, True, True),
    m.CONTENT_FORMAT: (0, 2, False, False),
    m.MAX_AGE: (0, 4, False, False),
    m.URI_QUERY: (0, 255, True, True),
    m.ACCEPT: (0, 2, False, True),
    m.BLOCK2: (0, 3, False, True),
    m.SIZE2: (0, 4, False, False),
    m.PROXY_URI: (1, 1034, False, True),
    m.PROXY_SCHEME: (1, 255, False, True),
    m.SIZE1: (0, 4, False, False),
    m.BEARER: (0, 1024, False, True),
    m.POP: (0, 255, False, True),
}


class Recorder(Site):
    """Answers 2.04 to anything, keeping the request as the resource saw it."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def render(self, request, exchange):
        self.seen.append(request)
        return Response(m.CHANGED)


def option_rule_cases():
    """(option, values, accepted) for every option the core recognizes:
    length min-1 (if min > 0), min, max, max+1, and repeated."""
    cases = []
    for num in sorted(RFC_OPTIONS):
        lo, hi, repeatable, _ = RFC_OPTIONS[num]
        if lo:
            cases.append((num, (bytes(lo - 1),), False))
        cases.append((num, (bytes(lo),), True))
        cases.append((num, (bytes(hi),), True))
        cases.append((num, (bytes(hi + 1),), False))
        cases.append((num, (bytes(lo), b"\x00" * max(lo, 1)), repeatable))
    return cases


def test_option_rules_table_complete():
    # PROFILE sec. 4: out of its length range or repeated when it may not
    # be is an unrecognized option: 4.02 if critical (sec. 5.4.1), silently
    # ignored and unseen by the resource if elective.
    rules = dict(_RULES)
    rules.update(PROFILE_OPTIONS)
    assert rules == dict((k, v[:3]) for k, v in RFC_OPTIONS.items())
    for num in rules:
        assert m.is_critical(num) == RFC_OPTIONS[num][3], num
    cases = option_rule_cases()
    assert len(cases) == 5 * len(rules) - sum(1 for r in rules.values() if r[0] == 0)
    for num, values, accepted in cases:
        site = Recorder()
        server = CoapServer(site, PROFILE_OPTIONS, now_ms=Clock(), mid_start=1)
        data = req("", code=m.POST, options=[(num, v) for v in values])
        assert len(data) <= 1152
        r = vask(server, data)  # the whole diagnostic (plain CoAP may cut it)
        what = (num, [len(v) for v in values])
        if num in (m.PROXY_URI, m.PROXY_SCHEME) and accepted:
            assert r.code == m.PROXYING_NOT_SUPPORTED and not site.seen, what
        elif accepted:
            assert r.code == m.CHANGED, what
            assert site.seen[0].get_all(num) == list(values), what
        elif RFC_OPTIONS[num][3]:
            assert r.code == m.BAD_OPTION, what
            assert r.payload == b"unrecognized option %d" % num, what
            assert not site.seen, what
        else:
            assert r.code == m.CHANGED, what
            assert site.seen[0].get_all(num) == list(values[:1] if len(values) > 1 else []), what


def test_proxy_options_not_supported():
    server, _, _, _ = make()
    r = ask(server, req("hello", options=((m.PROXY_URI, b"coap://example.com/x"),)))
    assert r.code == m.PROXYING_NOT_SUPPORTED
    r = ask(server, req("hello", mid=2, options=((m.PROXY_SCHEME, b"coap"),)))
    assert r.code == m.PROXYING_NOT_SUPPORTED


def test_exchange_carries_transport_identity():
    server, counter, _, _ = make()
    server.handle(req("counter", code=m.POST), OTHER, transport="coaps", session=b"psk-id")
    ex = counter.exchanges[0]
    assert (ex.peer, ex.transport, ex.session) == (OTHER, "coaps", b"psk-id")
    assert ex.request.code == m.POST and ex.request.uri_path() == ["counter"]


def test_duplicate_con_same_bytes_handler_once():
    server, counter, clock, _ = make()
    data = req("counter", code=m.POST, mid=0x4242)
    first = server.handle(data, PEER)
    clock.t += 5000
    second = server.handle(data, PEER)
    third = server.handle(memoryview(bytearray(data)), PEER)
    assert first == second == third
    assert counter.count == 1
    # Another MID, another peer or another transport is a new exchange.
    server.handle(req("counter", code=m.POST, mid=0x4243), PEER)
    server.handle(data, OTHER)
    server.handle(data, PEER, transport="coaps")
    assert counter.count == 4
    # After EXCHANGE_LIFETIME the MID may be reused for a new request.
    clock.t += EXCHANGE_LIFETIME_MS
    fourth = server.handle(data, PEER)
    assert counter.count == 5 and parse(fourth).payload == b"5"


def test_only_successes_take_room_in_the_duplicate_table():
    # RFC 7252 4.5 relaxed for what is handled idempotently: a refusal acted
    # on nothing, so a flood of refused requests leaves the table (and the
    # heap) alone, and a phone's success stays deduplicated.
    server, counter, clock, _ = make()
    ok = req("counter", code=m.POST, mid=7)
    server.handle(ok, PEER)
    for i in range(200):
        server.handle(req("nothing-here", code=m.POST, mid=1000 + i), (("10.0.%d.%d" % (i // 250, i % 250)), 5683))
    assert len(server._dedup) == 1
    assert server.handle(ok, PEER) is not None and counter.count == 1


def test_duplicate_con_with_bytes_peer():
    # The unix port reports the peer as a sockaddr bytes object.
    server, counter, _, _ = make()
    peer = bytearray(b"\x02\x00\x16\x33\x7f\x00\x00\x01" + bytes(8))
    data = req("counter", code=m.POST)
    assert server.handle(data, peer) == server.handle(data, bytes(peer))
    assert counter.count == 1


def test_duplicate_non_dropped():
    server, counter, clock, _ = make()
    data = req("counter", code=m.POST, mtype=m.NON, mid=9)
    assert ask(server, data).code == m.CHANGED
    assert server.handle(data, PEER) is None
    assert counter.count == 1
    clock.t += NON_LIFETIME_MS
    assert ask(server, data).code == m.CHANGED
    assert counter.count == 2


def test_dedup_table_bounded_oldest_evicted():
    server, counter, clock, _ = make(dedup_size=4)
    for mid in range(10):
        server.handle(req("counter", code=m.POST, mid=mid), PEER)
        assert len(server._dedup) <= 4
    assert counter.count == 10
    server.handle(req("counter", code=m.POST, mid=9), PEER)  # newest: still cached
    assert counter.count == 10
    server.handle(req("counter", code=m.POST, mid=0), PEER)  # oldest: evicted
    assert counter.count == 11
    assert len(server._dedup) == 4
    # Expired entries are freed as time goes on.
    clock.t += EXCHANGE_LIFETIME_MS + 1
    server.handle(req("hello", mtype=m.NON, mid=500), PEER)
    assert len(server._dedup) == 1
    raises(ValueError, CoapServer, Site(), (), None, 0)


def test_malformed_con_gets_rst_others_dropped():
    server, _, _, _ = make()
    # Sec. 4.2: a CON with a format error is rejected with a Reset.
    for hx in ("4001 1234 f0", "4201 1234 71", "4001 1234 ff", "4100 1234 aa",
               "4f01 1234", "4001 1234 bd", "4000 1234 00", "4001 1234 b0" + "00" * 64):
        assert server.handle(unhex(hx), PEER) == unhex("70 00 1234"), hx
    # NON/ACK/RST with a format error, unknown versions and short data: silence.
    for hx in ("5001 1234 f0", "6045 1234 ff", "7000 1234 00", "0001 1234", "8001 1234",
               "c001 1234 f0", "", "40", "400112"):
        assert server.handle(unhex(hx), PEER) is None, hx
    assert server.dropped == 17


def test_empty_and_unexpected_messages():
    server, _, _, _ = make()
    assert server.handle(unhex("40 00 abcd"), PEER) == unhex("70 00 abcd")  # CoAP ping
    assert server.handle(unhex("50 00 abcd"), PEER) is None  # empty NON
    assert server.handle(unhex("60 00 abcd"), PEER) is None  # empty ACK
    assert server.handle(unhex("70 00 abcd"), PEER) is None  # RST
    assert server.handle(unhex("60 45 abcd ff 31"), PEER) is None  # stray response ACK
    # A response code or a reserved class in a CON lacks context: RST.
    assert server.handle(unhex("40 45 abce"), PEER) == unhex("70 00 abce")
    assert server.handle(unhex("40 20 abcf"), PEER) == unhex("70 00 abcf")
    assert server.handle(unhex("40 e0 abd0"), PEER) == unhex("70 00 abd0")
    assert server.handle(unhex("50 45 abd1"), PEER) is None


def test_handler_failures_are_500_and_reported():
    server, _, _, errors = make()
    r = ask(server, req("faulty"))
    assert (r.mtype, r.code, r.payload) == (m.ACK, m.INTERNAL_SERVER_ERROR, b"")
    assert isinstance(errors[0], KeyError)
    assert ask(server, req("faulty", code=m.POST, mid=2)).code == m.INTERNAL_SERVER_ERROR
    assert isinstance(errors[1], TypeError)
    assert ask(server, req("faulty", code=m.DELETE, mid=3)).code == m.INTERNAL_SERVER_ERROR
    assert isinstance(errors[2], ValueError)
    assert server.errors == 3
    assert ask(server, req("hello", mid=4)).code == m.CONTENT
    # on_error itself failing does not break the server.
    server.on_error = lambda e: 1 / 0
    assert ask(server, req("faulty", mid=5)).code == m.INTERNAL_SERVER_ERROR


def test_coap_error_renders_itself():
    server, _, _, _ = make()
    out = server.handle(req("faulty", code=m.PUT, token=b""), PEER)
    # ACK 4.03, Content-Format 0 (c0), Error option 65000 = 2 (delta 64988 = 269 + 0xfccf).
    assert out == unhex("60 83 1234 c0 e1 fccf 02 ff 6e6f")
    e = CoapError(m.NOT_FOUND)
    assert e.code == m.NOT_FOUND and e.response().payload == b""


def test_oversize_and_truncated_requests_413():
    server, counter, _, _ = make()
    data = req("counter", code=m.POST, payload=b"x" * 1200)
    # ACK 4.13, Size1 (60, delta 13 + 47) = 1152.
    assert server.handle(data, PEER) == unhex("62 8d 1234 0102 d2 2f 0480")
    assert server.handle(req("counter", code=m.POST)[:6], PEER, truncated=True) \
        == unhex("62 8d 1234 0102 d2 2f 0480")
    assert counter.count == 0
    r = ask(server, req("counter", code=m.POST, mtype=m.NON, payload=b"x" * 1200))
    assert (r.mtype, r.code) == (m.NON, m.REQUEST_ENTITY_TOO_LARGE)
    # Oversize garbage, responses and empty messages are just dropped.
    for data in (b"\xff" * 1500, unhex("6045 0001") + bytes(1500), unhex("4000 0001") + bytes(1500),
                 unhex("4f01 0001") + bytes(1500), unhex("4801 0001 01")):
        assert server.handle(data, PEER, truncated=True) is None


def test_well_known_core():
    server, _, _, _ = make()
    r = vask(server, req(".well-known/core"))
    assert r.code == m.CONTENT
    assert r.get(m.CONTENT_FORMAT) == b"\x28"
    assert r.payload == (b'</hello>;rt="demo.hello";ct=0;title="Hello",'
                         b'</counter>;rt="demo.counter";if="core.p",</big>;sz=2000')
    r = vask(server, req(".well-known/core", mid=2, options=((m.ACCEPT, b"\x28"),)))
    assert r.code == m.CONTENT
    r = vask(server, req(".well-known/core", mid=3, options=((m.ACCEPT, b""),)))
    assert r.code == m.NOT_ACCEPTABLE
    assert vask(server, req(".well-known/core", code=m.POST, mid=4)).code == m.METHOD_NOT_ALLOWED


def test_link_format_escaping_and_replace():
    site = Site()
    site.add(("a b", "\u00fc", "x,y"), Hello(), {"title": 'say "hi"', "obs": True, "zz": "1"})
    site.add(("lock",), Hello(), {"rt": "old"})
    site.add(("lock",), Hello(), {"rt": "core.lock"})
    site.add((), Hello())
    assert site.link_format() == ('</a%20b/%C3%BC/x%2Cy>;obs;title="say \\"hi\\"";zz="1",'
                                  '</lock>;rt="core.lock",</>')


def test_block2_late_negotiation_on_get():
    server, _, _, _ = make()
    r = vask(server, req("big"))
    # 2000 bytes do not fit: first 1024-byte block, M=1, SZX=6 (0x0e).
    assert r.code == m.CONTENT and r.payload == Big.body[:1024]
    assert r.get(m.BLOCK2) == b"\x0e" and r.get(m.CONTENT_FORMAT) == b"\x2a"
    r = vask(server, req("big", mid=2, options=((m.BLOCK2, b"\x16"),)))
    assert r.payload == Big.body[1024:] and r.get(m.BLOCK2) == b"\x16"


def test_block2_early_negotiation_and_limits():
    server, _, _, _ = make()
    r = vask(server, req("big", options=((m.BLOCK2, b"\x02"),)))
    assert r.payload == Big.body[:64] and r.get(m.BLOCK2) == b"\x0a"
    r = vask(server, req("big", mid=2, options=((m.BLOCK2, b"\x01\xf2"),)))  # block 31 of 64 bytes
    assert r.payload == Big.body[1984:] and r.get(m.BLOCK2) == b"\x01\xf2"
    assert vask(server, req("big", mid=3, options=((m.BLOCK2, b"\x02\x02"),))).code == m.BAD_OPTION
    assert vask(server, req("big", mid=4, options=((m.BLOCK2, b"\x07"),))).code == m.BAD_REQUEST
    # Small representation with a size hint: whole body, no Block2.
    r = vask(server, req("hello", mid=5, options=((m.BLOCK2, b"\x06"),)))
    assert r.payload == b"hello" and r.get(m.BLOCK2) is None
    # Never re-run a POST for a later block.
    r = vask(server, req("big", code=m.POST, mid=6, options=((m.BLOCK2, b"\x16"),)))
    assert r.code == m.BAD_OPTION
    r = vask(server, req("big", code=m.POST, mid=7, options=((m.BLOCK2, b"\x06"),)))
    assert r.code == m.CHANGED and r.get(m.BLOCK2) is None


def test_default_clock():
    server = CoapServer(Site())
    a = server._now()
    b = server._now()
    assert 0 <= b - a < 1000
    assert server.handle(req(".well-known/core"), PEER) == server.handle(req(".well-known/core"), PEER)


def test_dedup_other_peers_cannot_push_out_an_exchange():
    # PROFILE sec. 4 v2: per-peer bounds. A flood of POSTs from one other
    # address, then from a few, never evicts the victim's live exchange.
    server, counter, clock, _ = make()
    victim = req("counter", code=m.POST, mid=0x7777)
    first = server.handle(victim, PEER)
    for mid in range(200):
        server.handle(req("counter", code=m.POST, mid=mid), OTHER)
    for i in range(3):
        other = ("192.0.2.%d" % (10 + i), 5683)
        for mid in range(40):
            server.handle(req("counter", code=m.POST, mid=mid), other)
    n = counter.count
    assert server.handle(victim, PEER) == first
    assert counter.count == n
    assert len(server._dedup) <= 16


def test_dedup_byte_budget():
    server, counter, clock, _ = make(dedup_size=32, dedup_bytes=64)
    for mid in range(10):
        server.handle(req("counter", code=m.POST, mid=mid), PEER)
    assert server._dedup._bytes <= 64
    raises(ValueError, CoapServer, Site(), (), None, 4, None, 1152, None, 0)
