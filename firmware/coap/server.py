"""Server core: CoAP message layer and routing (RFC 7252 sec. 4, 5; RFC 6690).

Transport independent: `CoapServer.handle` takes the bytes of one datagram
and who sent it, and returns the bytes to send back (or None). It owns the
message layer (piggybacked ACKs, RST, fresh MIDs for NON responses, the
duplicate table of sec. 4.5) and the request checks of sec. 5.4 (unknown
critical options, option lengths and repeats), then hands the request to a
resource found in a `Site`. No socket is ever touched here.

Amplification (PROFILE sec. 4 v2; RFC 7252 sec. 11.3): a response to a
request from an unverified address is at most AMPLIFICATION times the size
of the request's datagram. Which addresses are verified is decided per
transport (`CoapServer.verified_transports`): plain CoAP ("coap") never
is, since a UDP source address costs nothing to forge; DTLS ("coaps") always
is, since a request reaches the server only after a handshake whose
HelloVerifyRequest cookie proved the address. Besides, a resource that has
itself seen proof that the peer receives at its address (the lock: a PoP
proof signing a nonce it sent to that address, PROFILE sec. 3) may set
`exchange.verified`. A response that would be larger is cut down in the
message layer, whatever resource produced it (`CoapServer._bounded`).
"""
from micropython import const

from coap import message as m
from coap.message import FormatError, Message, decode_uint, encode_uint, parse, serialize

# Sec. 4.8.2 (default transmission parameters)
EXCHANGE_LIFETIME_MS = const(247000)
NON_LIFETIME_MS = const(145000)
# Sec. 4.6: 1152 bytes is the default upper bound for a message.
MAX_MESSAGE_SIZE = const(1152)

_LINK_FORMAT = const(40)  # RFC 6690 sec. 7.3
_SZX_MAX = const(6)  # RFC 7959 sec. 2.2: 1024-byte blocks, SZX 7 reserved

# PROFILE sec. 4 v2: the largest response to an unverified address, as a
# multiple of the request's datagram size.
AMPLIFICATION = const(3)
# Transports whose peer address is verified before any request reaches the
# server (DTLS: the handshake, with its HelloVerifyRequest cookie, completed).
VERIFIED_TRANSPORTS = ("coaps",)
# The one exemption (PROFILE sec. 4): a refusal carrying AS Request Creation
# Hints (RFC 9200 sec. 5.3), Content-Format 19 application/ace+cbor, with
# the codes of the profile's Error table (4.00, 4.01, 4.03).
_CF_ACE_CBOR = const(19)
_HINT_CODES = (m.BAD_REQUEST, m.UNAUTHORIZED, m.FORBIDDEN)

_METHODS = {m.GET: "get", m.POST: "post", m.PUT: "put", m.DELETE: "delete"}

# Options this core implements: number -> (min length, max length, repeatable),
# from the table of sec. 5.10 and RFC 7959 sec. 2.1. A value outside the
# length range or a repeat of a non-repeatable option is treated like an
# unrecognized option (sec. 5.4.3, 5.4.5). If-Match/If-None-Match are left
# out on purpose: this core does not evaluate conditions, so they are
# unrecognized critical options and get 4.02 rather than being ignored.
_RULES = {
    m.URI_HOST: (1, 255, False),  # ignored: single-host server
    m.ETAG: (1, 8, True),
    m.OBSERVE: (0, 3, False),  # RFC 7641; not implemented, elective
    m.URI_PORT: (0, 2, False),  # ignored
    m.URI_PATH: (0, 255, True),
    m.CONTENT_FORMAT: (0, 2, False),
    m.MAX_AGE: (0, 4, False),
    m.URI_QUERY: (0, 255, True),
    m.ACCEPT: (0, 2, False),
    m.BLOCK2: (0, 3, False),  # RFC 7959: honoured for GET only
    m.SIZE2: (0, 4, False),
    m.PROXY_URI: (1, 1034, False),  # answered 5.05
    m.PROXY_SCHEME: (1, 255, False),  # answered 5.05
    m.SIZE1: (0, 4, False),
}


class Response:
    """What a resource returns: a code, a payload, extra options as
    (number, bytes) pairs and an optional Content-Format number."""
    __slots__ = ("code", "payload", "options", "content_format")

    def __init__(self, code, payload=b"", options=(), content_format=None):
        self.code = code
        self.payload = payload
        self.options = options
        self.content_format = content_format


class CoapError(Exception):
    """Raised by a resource (or the core) to answer with an error code."""

    def __init__(self, code, payload=b"", options=(), content_format=None):
        super().__init__(code)
        self.code = code
        self.payload = payload
        self.options = options
        self.content_format = content_format

    def response(self):
        return Response(self.code, self.payload, self.options, self.content_format)


class Exchange:
    """Context handed to a resource: the transport reports who the peer is,
    the resource decides what that is worth. `verified`: the peer's address
    is known to be its own (set by the server from the transport); a
    resource may set it when its own checks prove that (see the module
    docstring), which lifts the amplification bound for its response."""
    __slots__ = ("peer", "transport", "session", "request", "verified")

    def __init__(self, peer, transport, session, request, verified=False):
        self.peer = peer
        self.transport = transport
        self.session = session
        self.request = request
        self.verified = verified


_SAFE = b"-._~!$&'()*+=:@"  # RFC 3986 pchar without ',' and ';' (link-format separators)


def _pct(segment):
    out = []
    for c in segment.encode():
        if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c in _SAFE:
            out.append(chr(c))
        else:
            out.append("%%%02X" % c)
    return "".join(out)


def _quoted(value):
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


_ATTR_ORDER = ("rt", "if", "ct", "sz", "obs", "title")


class _WellKnownCore:
    """GET /.well-known/core (RFC 6690 sec. 4)."""

    def __init__(self, site):
        self._site = site

    def get(self, request, exchange):
        accept = request.get(m.ACCEPT)
        if accept is not None and decode_uint(accept) != _LINK_FORMAT:
            raise CoapError(m.NOT_ACCEPTABLE)
        return Response(m.CONTENT, self._site.link_format().encode(), content_format=_LINK_FORMAT)


class Site:
    """Routes a request by its Uri-Path to a resource object whose
    get/post/put/delete(request, exchange) return a Response."""

    def __init__(self):
        self._entries = []  # (path, resource, attrs) in registration order
        self._by_path = {}
        self.add((".well-known", "core"), _WellKnownCore(self), {"hidden": True})

    def add(self, path, resource, attrs=None):
        """Register `resource` at `path`, a tuple of str segments. attrs:
        rt, if, ct, sz, obs, title and other RFC 6690 attributes; `hidden`
        keeps the resource out of /.well-known/core."""
        path = tuple(path)
        entry = (path, resource, attrs or {})
        if path in self._by_path:
            self._entries = [e for e in self._entries if e[0] != path]
        self._entries.append(entry)
        self._by_path[path] = entry

    def link_format(self):
        """RFC 6690 sec. 5 serialization of the visible resources."""
        links = []
        for path, _, attrs in self._entries:
            if attrs.get("hidden"):
                continue
            link = "<" + ("".join("/" + _pct(s) for s in path) or "/") + ">"
            extra = sorted(k for k in attrs if k not in _ATTR_ORDER and k != "hidden")
            for key in _ATTR_ORDER + tuple(extra):
                if key not in attrs:
                    continue
                value = attrs[key]
                if value is True:
                    link += ";" + key
                elif isinstance(value, int):
                    link += ";%s=%d" % (key, value)
                else:
                    link += ";%s=%s" % (key, _quoted(value))
            links.append(link)
        return ",".join(links)

    def render(self, request, exchange):
        """Response for a request, or CoapError (4.04, 4.05, or the
        resource's own)."""
        try:
            path = tuple(request.uri_path())
        except FormatError:
            raise CoapError(m.BAD_REQUEST, b"Uri-Path is not UTF-8")
        entry = self._by_path.get(path)
        if entry is None:
            raise CoapError(m.NOT_FOUND)
        name = _METHODS.get(request.code)
        handler = getattr(entry[1], name, None) if name else None
        if handler is None:
            # Sec. 5.8: unknown or unsupported method -> 4.05.
            raise CoapError(m.METHOD_NOT_ALLOWED)
        return handler(request, exchange)


class _Dedup:
    """Responses by (transport, peer, MID), kept until they expire (RFC 7252
    sec. 4.5), so a duplicate CON gets the same bytes and the door moves once.

    Who fills it: any peer that sends a request (on plain CoAP the address is
    spoofable). Bounded per peer first, then globally (STYLE: shared state):
    a peer holds at most `per_peer` exchanges (a new one replaces its own
    oldest), and the table at most `size` entries and `max_bytes` of stored
    responses; when it is full, the oldest entry of the peer holding the most
    entries goes. So one flooding peer only ever displaces itself, and a peer
    with no more than its share keeps its exchanges for their lifetime unless
    more than size/per_peer peers each fill their quota (many addresses:
    plain CoAP only, where addresses cost nothing to forge)."""

    def __init__(self, size, per_peer=4, max_bytes=3072):
        if size < 1 or per_peer < 1:
            raise ValueError("dedup_size and per_peer must be >= 1")
        self.size = size
        self.per_peer = per_peer
        self.max_bytes = max_bytes
        # key -> (expires_ms, response bytes or None, request datagram size)
        self._table = {}
        self._order = []  # keys, oldest first
        self._bytes = 0

    def __len__(self):
        return len(self._table)

    def get(self, key, now):
        e = self._table.get(key)
        if e is None:
            return None
        if now >= e[0]:
            self._drop(key)
            return None
        return e

    def _drop(self, key):
        e = self._table.pop(key)
        if e[1] is not None:
            self._bytes -= len(e[1])
        self._order.remove(key)

    def _victim(self):
        counts = {}
        for k in self._order:
            p = k[:2]
            counts[p] = counts.get(p, 0) + 1
        top = max(counts.values())
        for k in self._order:
            if counts[k[:2]] == top:
                return k

    def put(self, key, response, expires, size=0):
        if key in self._table:
            self._drop(key)
        need = len(response) if response is not None else 0
        peer = key[:2]
        own = [k for k in self._order if k[:2] == peer]
        if len(own) >= self.per_peer:
            self._drop(own[0])
        while self._order and (len(self._order) >= self.size or self._bytes + need > self.max_bytes):
            self._drop(self._victim())
        self._table[key] = (expires, response, size)
        self._order.append(key)
        self._bytes += need

    def expire(self, now):
        # Runs for every datagram: walks the (short) order list in place
        # rather than building a list of what to drop.
        order = self._order
        i = 0
        while i < len(order):
            if now >= self._table[order[i]][0]:
                self._drop(order[i])
            else:
                i += 1


class _TicksClock:
    """Non-wrapping milliseconds from MicroPython's wrapping ticks_ms.
    Correct as long as it is read at least once per half ticks period
    (2**29 ms, about 6 days on the ESP32); CoapServer reads it per datagram."""

    def __init__(self, ticks_ms, ticks_diff):
        self._ticks_ms = ticks_ms
        self._diff = ticks_diff
        self._last = ticks_ms()
        self._now = 0

    def __call__(self):
        t = self._ticks_ms()
        self._now += max(0, self._diff(t, self._last))
        self._last = t
        return self._now


def _default_clock():
    import time
    if hasattr(time, "ticks_ms"):
        return _TicksClock(time.ticks_ms, time.ticks_diff)
    return lambda: int(time.monotonic() * 1000)


def _random_mid():
    import os
    return int.from_bytes(os.urandom(2), "big")


def _rst(mid):
    # Sec. 4.2: a Reset echoes the MID and is otherwise empty.
    return bytes((0x70, 0, mid >> 8, mid & 0xFF))


def _exempt(resp):
    # PROFILE sec. 4: a refusal with AS Request Creation Hints (4.00/4.01/
    # 4.03 with Content-Format 19) is sent whatever its size.
    return resp.code in _HINT_CODES and resp.content_format == _CF_ACE_CBOR


def _hashable(peer):
    return bytes(peer) if isinstance(peer, (bytearray, memoryview)) else peer


class CoapServer:
    """Message layer over a Site. `known_options`: the options the
    resources handle themselves (e.g. the profile's Bearer and PoP), as
    {number: (min length, max length, repeatable)}; they are held to the same
    rules as RFC 7252's own (sec. 5.4.3, 5.4.5: a critical one that is
    repeated or out of its length range is unrecognized, so 4.02). `now_ms`: monotonic,
    non-wrapping milliseconds. `on_error(exc)`: told about handler crashes
    and transport errors. `verified_transports`: the transport names whose peer
    addresses are verified (default: DTLS only); a response to a request
    that came over any other transport is at most AMPLIFICATION times the
    request's size. `sites`: {transport name: Site} for transports that
    serve another set of resources than `site` (a CoAP endpoint and a CoAPS
    endpoint are different origins, RFC 7252 sec. 6.1-6.2). Counters: rx,
    dropped, errors."""

    def __init__(self, site, known_options=(), now_ms=None, dedup_size=16,
                 on_error=None, max_size=MAX_MESSAGE_SIZE, mid_start=None, dedup_per_peer=4,
                 dedup_bytes=3072, verified_transports=VERIFIED_TRANSPORTS, sites=None):
        self.site = site
        self.sites = dict(sites or ())
        # Names of the transports whose peers' addresses are verified; on
        # any other, responses are bounded (see the module docstring).
        self.verified_transports = tuple(verified_transports)
        self._known = dict(known_options)
        self._now = now_ms or _default_clock()
        self._dedup = _Dedup(dedup_size, dedup_per_peer, dedup_bytes)
        self.on_error = on_error
        self.max_size = max_size
        self._mid = _random_mid() if mid_start is None else mid_start & 0xFFFF
        self.rx = 0
        self.dropped = 0
        self.errors = 0

    def report(self, exc):
        """Count an error and pass it to on_error (which must not raise)."""
        self.errors += 1
        if self.on_error:
            try:
                self.on_error(exc)
            except Exception:
                pass

    def handle(self, data, peer, transport="coap", session=None, truncated=False):
        """Process one datagram; returns the bytes to send to `peer` or None.
        `truncated`: the transport could not receive the whole datagram.
        Unless `transport` is in `verified_transports` (or the resource
        set `exchange.verified`), the answer is at most
        AMPLIFICATION * len(data) bytes (PROFILE sec. 4 v2)."""
        self.rx += 1
        now = self._now()
        self._dedup.expire(now)
        verified = transport in self.verified_transports
        limit = None if verified else AMPLIFICATION * len(data)
        if truncated or len(data) > self.max_size:
            return self._too_large(data, limit)
        try:
            req = parse(data)
        except FormatError:
            self.dropped += 1
            # Sec. 3: unknown versions are silently ignored; sec. 4.2: a CON
            # with a format error is rejected with a Reset, other types are
            # ignored (sec. 4.3).
            if len(data) >= 4 and data[0] >> 4 == 0x4:
                return _rst((data[2] << 8) | data[3])
            return None
        mtype = req.mtype
        if mtype == m.ACK or mtype == m.RST:
            # We never send CON messages, so there is nothing to match.
            self.dropped += 1
            return None
        if req.code == m.EMPTY or req.code >> 5:
            # Empty CON ("CoAP ping", sec. 4.3) -> RST; a response or a
            # reserved class as a request lacks context (sec. 4.2) -> RST for
            # CON; an Empty NON is not allowed and is ignored (sec. 4.3).
            self.dropped += 1
            return _rst(req.mid) if mtype == m.CON else None
        key = (transport, _hashable(peer), req.mid)
        hit = self._dedup.get(key, now)
        if hit is not None:
            # Sec. 4.5: same answer for a duplicate CON, drop a duplicate NON.
            # A true duplicate is the same datagram again; a shorter one
            # reusing the MID does not get a stored answer above its bound
            # (which the original's size allowed, or which was exempt).
            out = hit[1]
            if out is None or (limit is not None and len(out) > limit and len(data) < hit[2]):
                self.dropped += 1
                return None
            return out
        out = self._answer(req, Exchange(peer, transport, session, req, verified), limit)
        # Sec. 4.5 may be relaxed for requests handled in an idempotent
        # fashion: only a success (2.xx: something acted) is kept, so a
        # duplicate cannot act twice. A refusal acted on nothing, and
        # answering its duplicate afresh is harmless; so floods of refused
        # requests take no room here (nor, in fragments, on the heap).
        if out is not None and out[1] >> 5 == 2:
            if mtype == m.CON:
                self._dedup.put(key, out, now + EXCHANGE_LIFETIME_MS, len(data))
            else:
                self._dedup.put(key, None, now + NON_LIFETIME_MS)
        return out

    def _answer(self, req, exchange, limit):
        # `full`: the resource's whole GET representation when `resp` is a
        # block of it (or could become one), with the block asked for.
        full = None
        num = 0
        szx = _SZX_MAX
        bad = self._check_options(req)
        if bad is not None:
            if req.mtype == m.NON:
                # Sec. 5.4.1: a NON with an unrecognized critical option is
                # rejected (sec. 4.3), which may be a Reset.
                return _rst(req.mid)
            resp = Response(m.BAD_OPTION, b"unrecognized option %d" % bad)
        else:
            try:
                resp = self._dispatch(req, exchange)
                if req.code == m.GET and resp.code == m.CONTENT:
                    # RFC 7959 2.2: Block2 cuts a representation; a refusal
                    # (a 4.01 to a later block) goes out as itself.
                    full = resp
                    block2 = req.get(m.BLOCK2)
                    if block2 is not None:
                        v = decode_uint(block2)
                        num, szx = v >> 4, v & 7
                    if block2 is not None or len(resp.payload) > 1 << (4 + _SZX_MAX):
                        resp = self._block2(resp, num, szx)
            except CoapError as e:
                resp = e.response()
                full = None
            except MemoryError as e:
                # RFC 7252 5.9.3.4: the server cannot serve it now.
                self.report(e)
                resp = Response(m.SERVICE_UNAVAILABLE)
                full = None
            except Exception as e:
                self.report(e)
                resp = Response(m.INTERNAL_SERVER_ERROR)
                full = None
        msg = self._message(req)
        try:
            out = self._fill(msg, resp)
        except Exception as e:
            # A resource returned something that cannot be encoded.
            self.report(e)
            full = None
            resp = Response(m.INTERNAL_SERVER_ERROR)
            out = self._fill(msg, resp)
        if limit is None or exchange.verified or len(out) <= limit or _exempt(resp):
            return out
        return self._bounded(msg, resp, limit, full, num, szx)

    def _bounded(self, msg, resp, limit, full, num, szx):
        """PROFILE sec. 4 v2: `resp` serialized in `msg` exceeds `limit`
        bytes (the request came from an unverified address) and is not
        exempt (`_exempt`). In order:
        - a 2.05 to a GET (`full`) is sent as the Block2 block holding the
          offset asked for (block `num` of size SZX `szx`), at the largest
          SZX whose block fits, the block number scaled to it (RFC 7959
          sec. 2.2-2.4, stateless slicing); if not even a 16-byte block
          fits, 5.03 with nothing else;
        - any other response loses its payload (a diagnostic or the body of
          a 2.xx that acted), and if it still does not fit, its options."""
        if full is not None:
            body = full.payload
            offset = num << (4 + szx)
            while szx >= 0:
                # Header and options first: the payload is sliced only for
                # the size that fits.
                size = 1 << (4 + szx)
                block = offset >> (4 + szx)
                more = 1 if offset + size < len(body) else 0
                opts = list(full.options)
                opts.append((m.BLOCK2, encode_uint((block << 4) | (more << 3) | szx)))
                n = len(self._fill(msg, Response(full.code, b"", opts, full.content_format)))
                chunk = min(size, len(body) - offset)
                if chunk > 0:
                    n += 1 + chunk
                if n <= limit:
                    return self._fill(msg, self._block2(full, block, szx))
                szx -= 1
            resp = Response(m.SERVICE_UNAVAILABLE)
        elif resp.payload:
            out = self._fill(msg, Response(resp.code, b"", resp.options))
            if len(out) <= limit:
                return out
        return self._fill(msg, Response(resp.code))

    def _check_options(self, req):
        """Sec. 5.4.1-5.4.5: the number of the first critical option that is
        unknown or malformed, else None. Malformed elective options are
        removed so resources never see them."""
        opts = req.options
        keep = None
        prev = -1
        for i in range(len(opts)):
            num, val = opts[i]
            rule = _RULES.get(num) or self._known.get(num)
            if rule is None:
                ok = not m.is_critical(num)
            else:
                ok = rule[0] <= len(val) <= rule[1] and (rule[2] or num != prev)
            prev = num
            if ok:
                if keep is not None:
                    keep.append(opts[i])
                continue
            if m.is_critical(num):
                return num
            if keep is None:
                keep = opts[:i]
        if keep is not None:
            req.options = keep
        return None

    def _dispatch(self, req, exchange):
        """The resource's Response, whole (Block2 slicing is the caller's)."""
        if req.get(m.PROXY_URI) is not None or req.get(m.PROXY_SCHEME) is not None:
            # Sec. 5.7.2: not a proxy.
            raise CoapError(m.PROXYING_NOT_SUPPORTED)
        block2 = req.get(m.BLOCK2)
        if block2 is not None:
            v = decode_uint(block2)
            if v & 7 == 7:
                raise CoapError(m.BAD_REQUEST, b"Block2 SZX 7 is reserved")
            if v >> 4 and req.code != m.GET:
                # A later block would re-run a non-safe request: refuse it
                # as an option this server does not support there.
                raise CoapError(m.BAD_OPTION, b"Block2 only for GET")
        resp = self.sites.get(exchange.transport, self.site).render(req, exchange)
        if not isinstance(resp, Response):
            raise TypeError("resource returned %r, not a Response" % type(resp))
        return resp

    def _block2(self, resp, num, szx):
        # RFC 7959 sec. 2.2-2.4: stateless slicing of a (regenerated) GET
        # representation; SZX no larger than ours.
        if szx > _SZX_MAX:
            szx = _SZX_MAX
        size = 1 << (4 + szx)
        body = resp.payload
        start = num * size
        if start and start >= len(body):
            raise CoapError(m.BAD_OPTION, b"Block2 beyond the end")
        more = 1 if start + size < len(body) else 0
        if not more and num == 0:
            return resp
        opts = list(resp.options)
        opts.append((m.BLOCK2, encode_uint((num << 4) | (more << 3) | szx)))
        return Response(resp.code, body[start:start + size], opts, resp.content_format)

    def _message(self, req):
        """The response's header: code, options and payload are `_fill`ed."""
        if req.mtype == m.CON:
            # Sec. 5.2.1: piggybacked response in the ACK, same MID.
            return Message(m.ACK, m.EMPTY, req.mid, req.token)
        # Sec. 5.2.3: NON request -> NON response with a fresh MID.
        self._mid = (self._mid + 1) & 0xFFFF
        return Message(m.NON, m.EMPTY, self._mid, req.token)

    def _fill(self, msg, resp):
        """`resp` serialized in the header `msg`."""
        msg.code = resp.code
        msg.options = []
        for num, val in resp.options:
            msg.add(num, val)
        if resp.content_format is not None:
            msg.add(m.CONTENT_FORMAT, encode_uint(resp.content_format))
        msg.payload = resp.payload
        return serialize(msg)

    def _too_large(self, data, limit):
        # Sec. 5.9.2.9: 4.13 with Size1 for a request we could not take in
        # whole; the token sits in the first 12 bytes, so it is intact.
        self.dropped += 1
        if len(data) < 4 or data[0] >> 6 != 1 or (data[0] >> 4) & 3 > m.NON:
            return None
        tkl = data[0] & 0x0F
        code = data[1]
        if tkl > 8 or len(data) < 4 + tkl or code == m.EMPTY or code >> 5:
            return None
        req = Message((data[0] >> 4) & 3, code, (data[2] << 8) | data[3], bytes(data[4:4 + tkl]))
        resp = Response(m.REQUEST_ENTITY_TOO_LARGE, options=((m.SIZE1, encode_uint(self.max_size)),))
        msg = self._message(req)
        out = self._fill(msg, resp)
        # Always fits (8 + tkl bytes for at least 4 + tkl), bounded anyway.
        if limit is None or len(out) <= limit:
            return out
        return self._bounded(msg, resp, limit, None, 0, 0)
