"""Bench AS: its CoAP resources, transport-free. The transport hands in
the request and who the peer is (a Peer: the lock or phone row its DTLS
certificate names, or Peer.ANON on plain CoAP); the resource decides
(aiocoap's `authenticated_claims` pattern).

Where PROFILE sec. 7 leaves the encoding open, this AS decides:
- phones: `POST /token` (RFC 9200 5.8; tokens.py), Content-Format 19
  (application/ace+cbor) both ways; 2.01, or 4.00/4.01 with an error map;
  over CoAPS with the phone's certificate, or over plain CoAP (bench).
- locks only (an authenticated peer, else 4.01):
  - `POST /audit`, Content-Format 60 (application/cbor): the PROFILE map
    {"lock", "boot", "dropped", "records"}; each record is the lock's
    decision-log record, the CBOR array [seq, wall|null, boot, uptime_ms,
    transport, permission, sub, token_id, granted, reason] (a map with
    "seq", or either one wrapped in a byte string, is taken too; only seq is
    required, the record is stored as received). "lock" must be the peer's
    own device_id (else 4.03). Answer 2.04, Content-Format 60, {"seq": n}:
    the highest seq stored for this lock (0 when none), after this batch,
    in its current log epoch (a lock provisioned anew starts at seq 1);
  - `GET /trl?after=POS` (POS decimal, 0 when absent): 2.05, Content-Format
    60, {"pos", "ids", "ctis", "more"}: this lock's revocations after POS,
    `trl_page` (16) and at most TRL_BYTES of ids and ctis at a time (the
    lock takes answers of 1024 bytes); pos is the last one given (POS when
    none). When the page holds an exi floor (`lockctl as revoke
    --exi-floor`: every exi token issued so far), also "exi": {issuer:
    floor}, as the lock's uplink and POST /revoke take it;
  - `POST /introspect`, Content-Format 19 both ways (tokens.py);
  - `GET /time`: 2.05, Content-Format 60, the CBOR unsigned integer of Unix
    seconds now.
"""
import time

import cbor2

from . import tokens

CF_ACE_CBOR = 19
CF_CBOR = 60
MAX_PAYLOAD = 8192
# A /trl answer fits the lock's 1024-byte answer (lock/uplink.py) with room
# for the map around the entries.
TRL_BYTES = 900
RECORD_FIELDS = ("seq", "wall_s", "boot", "uptime_ms", "transport", "permission", "sub", "token_id",
                 "granted", "reason")


class Response:
    __slots__ = ("code", "payload", "cf")

    def __init__(self, code, payload=b"", cf=None):
        self.code = code          # "2.05" style
        self.payload = payload
        self.cf = cf

    def __repr__(self):
        return "Response(%s, %d bytes)" % (self.code, len(self.payload))


class Peer:
    """Who sent a request: `kind` "lock", "phone" or None (plain CoAP, not
    authenticated), `row` the store's row for it."""
    __slots__ = ("kind", "row")

    def __init__(self, kind=None, row=None):
        self.kind = kind
        self.row = row

    @property
    def lock(self):
        return self.row if self.kind == "lock" else None

    @property
    def name(self):
        if self.kind == "lock":
            return self.row["device_id"]
        return self.row["client_id"] if self.kind == "phone" else "-"


Peer.ANON = Peer()


class Problem(Exception):
    """A CoAP error response (4.xx/5.xx) with a short diagnostic payload
    (RFC 7252 5.5.2)."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code

    def render(self):
        return Response(self.code, str(self).encode()[:120])


def _cbor(code, obj, cf=CF_CBOR):
    return Response(code, cbor2.dumps(obj, canonical=True), cf)


class Resources:
    """The AS's resources over a Home (keys, config, store)."""

    def __init__(self, home, clock=time.time):
        self.home = home
        self.clock = clock

    def now(self):
        return int(self.clock())

    def handle(self, method, path, query, payload, peer=Peer.ANON):
        """method: 'GET'/'POST'/...; path: tuple of segments; query: list of
        'k=v'; peer: a Peer."""
        try:
            if len(payload) > MAX_PAYLOAD:
                raise Problem("4.13", "payload over %d bytes" % MAX_PAYLOAD)
            route = _ROUTES.get(path)
            if route is None:
                raise Problem("4.04", "no such resource")
            want_method, needs_lock, fn = route
            if method != want_method:
                raise Problem("4.05", "%s only" % want_method)
            if needs_lock and peer.lock is None:
                raise Problem("4.01", "locks only, over the uplink (CoAPS with the lock's certificate)")
            return fn(self, query, payload, peer)
        except Problem as p:
            return p.render()
        except Exception as e:  # noqa: one request never takes the AS down (second attack pass)
            return Problem("5.00", "%s: %s" % (type(e).__name__, e)).render()

    def token(self, query, payload, peer):
        authenticated = None if peer.kind is None else (peer.row if peer.kind == "phone" else False)
        code, body = tokens.token_request(self.home, payload, self.now(), authenticated)
        return _cbor(code, body, CF_ACE_CBOR)

    def introspect(self, query, payload, peer):
        code, body = tokens.introspect(self.home, peer.lock, payload, self.now())
        return _cbor(code, body, CF_ACE_CBOR)

    def time_(self, query, payload, peer):
        return _cbor("2.05", self.now())

    def trl(self, query, payload, peer):
        after = 0
        for q in query:
            k, _, v = q.partition("=")
            if k == "after":
                if not (v.isascii() and v.isdigit()) or len(v) > 19:
                    raise Problem("4.00", "after=POS, POS a decimal position")
                after = int(v)
        pos, ids, ctis, floor, more = self.home.store.trl(peer.lock["id"], after, self.home.cfg["trl_page"],
                                                          TRL_BYTES)
        body = {"pos": pos, "ids": ids, "ctis": ctis, "more": more}
        if floor is not None:
            body["exi"] = {self.home.issuer: floor}
        return _cbor("2.05", body)

    def audit(self, query, payload, peer):
        lock = peer.lock
        try:
            m = cbor2.loads(payload)
        except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError):
            raise Problem("4.00", "not CBOR") from None
        if not isinstance(m, dict) or not isinstance(m.get("records"), list):
            raise Problem("4.00", 'a map {"lock", "boot", "dropped", "records"}')
        if m.get("lock") != lock["device_id"]:
            raise Problem("4.03", "a lock uploads its own records only")
        boot, dropped = m.get("boot", 0), m.get("dropped", 0)
        if not (_uint(boot) and _uint(dropped)):
            raise Problem("4.00", "boot and dropped are unsigned integers")
        log_id = m.get("log")
        if log_id is not None and not (isinstance(log_id, bytes) and 1 <= len(log_id) <= 16):
            raise Problem("4.00", "log is the lock's log identity, 1-16 bytes")
        records = [_record(r) for r in m["records"]]
        top, _new = self.home.store.store_audit(lock["id"], boot, dropped, records, log_id)
        return _cbor("2.04", {"seq": top})


def _uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 63


def _record(r):
    """A decision record as audit_records columns; Problem when it has no seq."""
    raw = None
    if isinstance(r, bytes):
        raw = r
        try:
            r = cbor2.loads(r)
        except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError):
            raise Problem("4.00", "a record is not CBOR") from None
    if raw is None:
        raw = cbor2.dumps(r, canonical=True)
    if isinstance(r, list):
        fields = dict(zip(RECORD_FIELDS, r))
    elif isinstance(r, dict):
        fields = {k: r.get(k) for k in RECORD_FIELDS if k in r}
        if "wall" in r:
            fields["wall_s"] = r["wall"]
    else:
        raise Problem("4.00", "a record is an array or a map")
    if not _uint(fields.get("seq")):
        raise Problem("4.00", "a record without an unsigned seq")
    out = {"seq": fields["seq"], "raw": raw}
    # Best effort columns for queries; the raw record is the truth.
    for k, ok in (("wall_s", _uint), ("boot", _uint), ("uptime_ms", _uint), ("reason", _uint),
                  ("transport", lambda v: isinstance(v, str) and len(v) <= 16),
                  ("permission", lambda v: isinstance(v, str) and len(v) <= 32),
                  ("sub", lambda v: isinstance(v, str)),
                  ("token_id", lambda v: isinstance(v, bytes) and len(v) == 32),
                  ("granted", lambda v: isinstance(v, bool))):
        v = fields.get(k)
        out[k] = v if v is not None and ok(v) else None
    return out


_ROUTES = {
    ("token",): ("POST", False, Resources.token),
    ("introspect",): ("POST", True, Resources.introspect),
    ("audit",): ("POST", True, Resources.audit),
    ("trl",): ("GET", True, Resources.trl),
    ("time",): ("GET", True, Resources.time_),
}
