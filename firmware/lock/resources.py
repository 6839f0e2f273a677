"""CoAP binding of the lock (PROFILE.md sec. 4; RFC 9200; seed
draft-tschofenig-ace-oauth-bt-00): /authz-info and the protected resources.

Resources only translate: CoAP options in, a Decision from the authorizer,
CoAP codes, the Error option and AS Request Creation Hints out.
"""
from micropython import const

from coap import message as m
from coap.server import Response
from trust import cbor, reasons

CF_ACE_CBOR = const(19)   # application/ace+cbor (RFC 9200 8.16)
CF_CBOR = const(60)
CF_CWT = const(61)
_LOG_PAGE = const(4)      # records per GET /log reply: one datagram, small on a full heap
_HINT_AS = const(1)
_HINT_AUDIENCE = const(5)
_HINT_CNONCE = const(39)


def peer_host(p):
    """A peer's host, without the port: lockout counts per host. The unix
    and ESP32 ports report a raw sockaddr; CPython a tuple."""
    if isinstance(p, tuple):
        return p[0]
    if isinstance(p, (bytes, bytearray)):
        if len(p) == 16:
            return bytes(p[4:8])      # sockaddr_in: family, port, address
        if len(p) >= 24:
            return bytes(p[8:24])     # sockaddr_in6: family, port, flowinfo, address
    return p


def _peer_id(ex):
    # The peer the lockout, nonces and the token store count against. Plain
    # CoAP's source address is not verified (anyone can send from it), so
    # what is counted there must not lock the same host out of CoAPS, whose
    # cookie exchange verifies it: six forged /authz-info datagrams kept a
    # host's phones off DTLS for 30 s at a time (attack pass).
    h = peer_host(ex.peer)
    if ex.transport == "coap":
        return b"u" + h if isinstance(h, (bytes, bytearray)) else ("u", h)
    return h


def _check_format(req, allowed):
    cf = req.get(m.CONTENT_FORMAT)
    if cf is not None and m.decode_uint(cf) not in allowed:
        return Response(m.UNSUPPORTED_CONTENT_FORMAT)
    return None


class Binding:
    """Shared by the resources of one lock: the authorizer and its hints."""

    def __init__(self, authz, actuator, log, as_uri, device_id, on_rebind=None):
        self.authz = authz
        self.actuator = actuator
        self.log = log
        self.as_uri = as_uri
        self.device_id = device_id
        self.on_rebind = on_rebind  # (record, transport, peer) -> Decision; raises OSError

    def hints(self, peer):
        # RFC 9200 5.3: AS Request Creation Hints; the cnonce is the PoP
        # nonce for the retry (PROFILE sec. 4), bound to this peer.
        return cbor.encode({_HINT_AS: self.as_uri, _HINT_AUDIENCE: self.device_id,
                            _HINT_CNONCE: self.authz.nonce(peer)})

    def refusal(self, reason, peer, retry_s=0):
        code = reasons.coap_code(reason)
        opts = []
        err = reasons.error_value(reason)
        if err is not None:
            opts.append((m.ERROR, m.encode_uint(err)))
        if reason == reasons.LOCKED_OUT:
            opts.append((m.MAX_AGE, m.encode_uint(retry_s)))
            return Response(code, b"", opts)
        if reason == reasons.INTROSPECTION_PENDING:
            # PROFILE sec. 7: the AS is being asked; retry after Max-Age.
            # A proof's nonce is spent: a fresh cnonce for the retry (this
            # peer's request has just passed every local check).
            opts.append((m.MAX_AGE, m.encode_uint(retry_s)))
            return Response(code, cbor.encode({_HINT_CNONCE: self.authz.nonce(peer)}), opts, CF_ACE_CBOR)
        if code >> 5 == 4:
            return Response(code, self.hints(peer), opts, CF_ACE_CBOR)
        return Response(code, b"", opts)


class AuthzInfo:
    """POST /authz-info (RFC 9200 5.10.1): token upload, 2.01 with a cnonce."""
    attrs = {"rt": "ace.ai", "ct": CF_CWT}

    def __init__(self, b):
        self.b = b

    def post(self, req, ex):
        bad = _check_format(req, (CF_CWT, CF_CBOR))
        if bad:
            return bad
        b = self.b
        peer = _peer_id(ex)
        d = b.authz.post_token(bytes(req.payload), ex.transport, peer)
        if not d.granted:
            return b.refusal(d.reason, peer, d.retry_s)
        return Response(m.CREATED, cbor.encode({_HINT_CNONCE: b.authz.nonce(peer)}), (), CF_ACE_CBOR)


class Protected:
    """A resource that needs one permission; `action` says what it does."""

    def __init__(self, b, res):
        self.b = b
        self.res = res
        self.attrs = {"rt": "lock." + res.action, "title": res.permission}
        if res.method == "GET":
            self.get = self._handle
        elif res.method == "POST":
            self.post = self._handle
        elif res.method == "PUT":
            self.put = self._handle

    def _handle(self, req, ex):
        b = self.b
        action = self.res.action
        moves = action in ("unlock", "lock", "pulse")
        ready = b.actuator.ready if action in ("unlock", "pulse") else None
        peer = _peer_id(ex)
        d = b.authz.decide(self.res.permission, ex.transport, peer,
                           req.get(m.BEARER), req.get(m.POP), ex.session, ready, self.res.online_check)
        if not d.granted:
            return b.refusal(d.reason, peer, d.retry_s)
        # A grant over plain CoAP needs a proof over a nonce sent to this
        # address (bearer tokens are refused there, PSK needs DTLS): the
        # address is proven, so its answer need not be cut (PROFILE sec. 4).
        ex.verified = True
        if moves:
            try:
                if action == "unlock":
                    b.actuator.unlock()
                elif action == "lock":
                    b.actuator.lock()
                else:
                    b.actuator.pulse(self.res.channel)
            except Exception as e:  # the door did not move: say so, fail secure
                b.actuator.set_fault(str(e))
                b.actuator.lock("fault")
                return b.refusal(reasons.ACTUATOR_FAULT, peer)
            return Response(m.CHANGED)
        if action == "status":
            return Response(m.CONTENT, cbor.encode({"state": b.actuator.state(),
                                                    "fault": b.actuator.fault}), (), CF_CBOR)
        if action == "log":
            return self._log(req)
        if action == "revoke":
            return self._revoke(req)
        if action == "rebind":
            return self._rebind(req, ex)
        return Response(m.NOT_IMPLEMENTED)

    def _rebind(self, req, ex):
        # PROFILE sec. 7: the new AS (lock.rebind); 2.04 only once the
        # record is durable, 4.00 with the field that is wrong.
        from lock import rebind
        bad = _check_format(req, (CF_CBOR,))
        if bad:
            return bad
        if self.b.on_rebind is None:
            return Response(m.NOT_IMPLEMENTED)
        try:
            rec = rebind.parse(bytes(req.payload))
        except rebind.RebindError as e:
            return Response(m.BAD_REQUEST, str(e).encode())
        try:
            self.b.on_rebind(rec, ex.transport, _peer_id(ex))
        except OSError as e:
            return Response(reasons.coap_code(reasons.STATE_FAILURE), str(e).encode())
        return Response(m.CHANGED)

    def _log(self, req):
        after = 0
        for q in req.get_all(m.URI_QUERY):
            # Only "after=N" (decimal digits, at most 10) is understood; a
            # query that is not UTF-8 or not a number is 4.00.
            try:
                q = m.decode_text(q)
            except m.FormatError:
                return Response(m.BAD_REQUEST)
            if q.startswith("after="):
                num = q[6:]
                if not (0 < len(num) <= 10 and all("0" <= ch <= "9" for ch in num)):
                    return Response(m.BAD_REQUEST)
                after = int(num)
        log = self.b.log
        recs = log.records(after, _LOG_PAGE)
        body = {"boot": log.boot, "next_seq": log.next_seq, "dropped": log.dropped,
                "acked": log.acked_seq, "records": recs}
        return Response(m.CONTENT, cbor.encode(body), (), CF_CBOR)

    def _revoke(self, req):
        # Body: {"ids": [token id (32 bytes)], "ctis": [cti (1-64 bytes)],
        # "exi": {issuer: highest exi sequence number issued (uint)}}
        # (PROFILE sec. 2: a token is named by its token id). Validated like
        # a token: a map of these keys only, exact types, sizes and counts.
        # 2.04 only once the revocation is durable (PROFILE sec. 2).
        try:
            body = cbor.decode(req.payload, 3, 1024)
            if not isinstance(body, dict) or not body or any(k not in ("ids", "ctis", "exi") for k in body):
                raise ValueError
            hashes = body.get("ids", [])
            ctis = body.get("ctis", [])
            floors = body.get("exi", {})
            if not isinstance(hashes, list) or not isinstance(ctis, list) or not isinstance(floors, dict):
                raise ValueError
            for x in hashes:
                if not isinstance(x, bytes) or len(x) != 32:
                    raise ValueError
            for x in ctis:
                if not isinstance(x, bytes) or not 1 <= len(x) <= 64:
                    raise ValueError
            for k in floors:
                v = floors[k]
                if (not isinstance(k, str) or not k or isinstance(v, bool) or not isinstance(v, int)
                        or not 0 <= v < 1 << 64):
                    raise ValueError
        except (ValueError, AttributeError, TypeError):
            return Response(m.BAD_REQUEST)
        try:
            self.b.authz.revoke(hashes, ctis, floors)
        except reasons.Refused as e:
            return Response(reasons.coap_code(e.reason), str(e).encode())
        return Response(m.CHANGED)
