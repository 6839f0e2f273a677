"""`lockctl coap`: the phone, over CoAP with aiocoap (PROFILE.md sec. 3-4).

Uploads a token to /authz-info, answers the lock's challenge (the cnonce of
a 2.01 or of a 4.01's AS Request Creation Hints) with a PoP proof, and
reports the outcome readably.
"""
import asyncio
import sys

import cbor2

from . import cose_host as ch
from .reasons import ERROR_NAMES

BEARER = 65001
POP = 65005
ERROR = 65000
# A 5.03 with Max-Age (the lock is asking its AS: PROFILE sec. 7) is tried
# again after that many seconds, this many times at most.
RETRIES = 5
MAX_WAIT_S = 30
ACTIONS = {
    "status": ("GET", "lock", "status"),
    "unlock": ("POST", "lock/unlock", "unlock"),
    "lock": ("POST", "lock/lock", "lock"),
    "log": ("GET", "log", "admin"),
    "revoke": ("POST", "revoke", "admin"),
    "rebind": ("POST", "rebind", "admin"),
}


def _register_options():
    from aiocoap.numbers.optionnumbers import OptionNumber
    from aiocoap.optiontypes import OpaqueOption, UintOption
    for num, name, cls in ((BEARER, "BEARER", OpaqueOption), (POP, "POP", OpaqueOption),
                           (ERROR, "ACE_ERROR", UintOption)):
        try:
            OptionNumber(num)
        except Exception:
            pass
        try:
            OptionNumber(num).format = cls
        except Exception:
            pass


class Outcome:
    def __init__(self, code, payload, error=None, hints=None, tries=1, waits=0):
        self.code = code
        self.payload = payload
        self.error = error
        self.hints = hints
        self.tries = tries
        self.waits = waits    # 5.03 answers waited out (Max-Age) before this one

    @property
    def ok(self):
        return self.code.startswith("2.")

    def describe(self):
        s = self.code
        if self.error is not None:
            s += " error=%s" % ERROR_NAMES.get(self.error, self.error)
        if self.payload and self.ok:
            try:
                s += " %s" % (cbor2.loads(self.payload),)
            except Exception:
                s += " %r" % self.payload[:64]
        return s


def _code(resp):
    c = int(resp.code)
    return "%d.%02d" % (c >> 5, c & 31)


def _uint_option(resp, number):
    """The value of uint option `number` of aiocoap message `resp`, or None."""
    for opt in resp.opt.option_list():
        if int(opt.number) == number:
            v = opt.value
            return v if isinstance(v, int) else int.from_bytes(v, "big")
    return None


def _max_age(resp):
    return _uint_option(resp, 14)        # Max-Age (RFC 7252 5.10.5)


def _error_of(resp):
    return _uint_option(resp, ERROR)


class Phone:
    """`retries`: how many 5.03 answers with Max-Age (the lock is asking its
    AS about the token: introspection_pending) are waited out and tried
    again; `say`: where that is said (stderr)."""

    def __init__(self, host, port, device_id, token=None, key=None, scheme="coap", retries=RETRIES, say=None):
        self.base = "%s://%s:%d/" % (scheme, host if ":" not in host else "[%s]" % host, port)
        self.device_id = device_id
        self.token = token
        self.key = key
        self.nonce = None
        self.ctx = None
        self.retries = retries
        self.say = say or (lambda text: print(text, file=sys.stderr))

    async def __aenter__(self):
        import aiocoap
        _register_options()
        self.ctx = await aiocoap.Context.create_client_context()
        return self

    async def __aexit__(self, *a):
        await self.ctx.shutdown()

    async def _send(self, method, path, payload=b"", options=(), cf=None):
        import aiocoap
        from aiocoap.optiontypes import OpaqueOption
        req = aiocoap.Message(code=getattr(aiocoap, method), uri=self.base + path, payload=payload)
        for num, val in options:
            req.opt.add_option(OpaqueOption(num, val))
        if cf is not None:
            req.opt.content_format = cf
        resp = await asyncio.wait_for(self.ctx.request(req).response, 30)
        return resp

    async def discover(self):
        resp = await self._send("GET", ".well-known/core")
        return Outcome(_code(resp), resp.payload)

    async def upload(self):
        resp = await self._send("POST", "authz-info", self.token, cf=61)
        out = Outcome(_code(resp), resp.payload, _error_of(resp))
        if out.ok:
            body = cbor2.loads(resp.payload)
            self.nonce = body.get(39)
        return out

    def _proof(self, permission):
        return ch.pop_proof(self.key, self.device_id, self.nonce, permission, ch.token_id(self.token))

    async def act(self, action, inline=False, payload=b"", query=(), by_id=False):
        """Send the action; on 4.01 with a cnonce, sign and retry once.
        `inline`: the token in the Bearer option; `by_id`: only its 32-byte
        token id there (the lock stores the token: PROFILE sec. 4)."""
        method, path, perm = ACTIONS[action]
        return await self.request(method, path, perm, inline, payload, query, by_id)

    async def request(self, method, path, perm, inline=False, payload=b"", query=(), by_id=False):
        if query:
            path = path + "?" + "&".join(query)
        tries = 0
        waits = 0
        hinted = False     # a 4.01's cnonce taken since the last answer waited out
        while True:
            tries += 1
            opts = []
            prove = self.nonce is not None and self.key is not None and self.token
            # A token bound to a key goes with its proof only: without one the
            # lock refuses it (pop_missing) and counts that against this
            # address. With no nonce yet, the first request presents nothing
            # and the 4.01's hints bring the cnonce (not counted).
            if (inline or by_id) and self.token and (prove or self.key is None):
                opts.append((BEARER, ch.token_id(self.token) if by_id else self.token))
            if prove:
                opts.append((POP, self._proof(perm)))
                self.nonce = None
            resp = await self._send(method, path, payload, options=opts)
            hints = None
            code = _code(resp)
            if resp.payload and (code.startswith("4.") or code == "5.03"):
                try:
                    hints = cbor2.loads(resp.payload)
                except Exception:
                    hints = None
            out = Outcome(code, resp.payload, _error_of(resp), hints, tries, waits)
            if (out.code == "4.01" and not hinted and isinstance(hints, dict) and 39 in hints
                    and self.key is not None and self.token):
                hinted = True
                self.nonce = hints[39]
                continue
            age = _max_age(resp) if code == "5.03" else None
            if age is not None and waits < self.retries:
                # PROFILE sec. 7: the lock is asking its AS (nothing there
                # waits for the network): ask again after Max-Age, with the
                # fresh cnonce it sent, if any.
                waits += 1
                wait_s = min(age, MAX_WAIT_S)
                self.say("%s: 5.03, the lock is asking its AS; trying again in %d s (%d of %d)"
                         % (path, wait_s, waits, self.retries))
                await asyncio.sleep(wait_s)
                hinted = False
                if isinstance(hints, dict) and isinstance(hints.get(39), bytes) and self.key is not None:
                    self.nonce = hints[39]
                    hinted = True
                continue
            return out


# Command-line glue shared by `lockctl coap` and `lockctl logs`: which lock,
# over which transport, in which DTLS mode.

class TargetError(Exception):
    """The command line does not name a reachable lock (the message says why)."""


def add_target_args(s):
    """The options that say how to reach the lock (argparse)."""
    g = s.add_argument_group("reaching the lock")
    g.add_argument("--bundle", help="the lock's bundle: its device id, its certificate for coaps, "
                                    "and its ports (default 5683/5684 when not given)")
    g.add_argument("--device-id", help="the lock's device id, without --bundle")
    g.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    g.add_argument("--scheme", choices=("coap", "coaps"), default=None,
                   help="coaps (default): DTLS 1.2, PSK mode with --psk-identity/--psk, else "
                        "certificate mode (the lock's certificate must be the one in --bundle); "
                        "coap: plain CoAP (a lock serves more than /authz-info there only with "
                        "`lockctl provision --plain-coap`)")
    g.add_argument("--port", type=int, default=None,
                   help="the lock's port for --scheme (default: the bundle's, else 5683 coap, 5684 coaps)")
    g.add_argument("--coap-port", type=int, default=None,
                   help="coaps PSK mode: the token goes to /authz-info over plain CoAP on this port "
                        "first (default: the bundle's, else 5683)")
    g.add_argument("--psk-identity", help="hex: the PSK identity (the kid `lockctl token --psk` prints)")
    g.add_argument("--psk", help="hex: the PSK (printed by `lockctl token --psk`; never stored)")
    g.add_argument("--handshake-timeout", type=float, default=10.0, help="seconds (coaps; default 10)")


class Target:
    """Where and how to reach the lock, from add_target_args' options.
    `phone(token, key, inline)` makes a connected-on-enter Phone."""

    def __init__(self, a):
        from .provision import ProvisionError, load_bundle
        self.a = a
        cfg = {}
        if a.bundle:
            try:
                cfg = load_bundle(a.bundle)[0]
            except ProvisionError as e:
                raise TargetError(str(e))
        self.cfg = cfg
        # Needed for proofs of possession (they sign it), not to connect.
        self.device_id = a.device_id or cfg.get("device_id")
        self.host = a.host
        self.scheme = a.scheme or "coaps"
        self.scheme_given = a.scheme is not None
        coap_port = cfg.get("coap", {}).get("port", 5683)
        coaps_port = cfg.get("coaps", {}).get("port", 5684)
        self.coap_port = a.coap_port if a.coap_port is not None else coap_port
        self.port = a.port if a.port is not None else (coaps_port if self.scheme == "coaps" else coap_port)
        self.psk = None
        self.dtls = {}
        self.errors = ()
        if self.scheme == "coap":
            if a.psk_identity or a.psk:
                raise TargetError("--psk-identity/--psk need --scheme coaps")
            return
        from .dtls import DtlsError, bundle_certs
        self.errors = (DtlsError,)
        if bool(a.psk_identity) != bool(a.psk):
            raise TargetError("PSK mode needs both --psk-identity and --psk (lockctl token --psk prints them)")
        if a.psk:
            self.psk = (_hex_arg("--psk-identity", a.psk_identity), _hex_arg("--psk", a.psk))
            self.dtls = dict(psk=self.psk)
            return
        if not a.bundle:
            raise TargetError("certificate mode (coaps without --psk) needs --bundle: the lock's "
                              "certificate is checked against the bundle's")
        try:
            lock_cert, ca_cert = bundle_certs(a.bundle)
        except DtlsError as e:
            raise TargetError(str(e))
        self.dtls = dict(lock_cert=lock_cert, ca_cert=ca_cert)

    def plain_fallback(self):
        """Plain CoAP to the same lock, when its bundle serves every
        resource there and the scheme was not chosen; else None."""
        if self.scheme_given or self.scheme != "coaps" or self.psk_mode \
                or not self.cfg.get("coap", {}).get("enabled") or self.a.port is not None:
            return None
        self.scheme = "coap"
        self.port = self.coap_port
        self.errors = ()
        return self

    @property
    def psk_mode(self):
        return self.psk is not None

    def describe(self):
        return "%s://%s:%d" % (self.scheme, self.host, self.port)

    def phone(self, token=None, key=None):
        if self.scheme == "coap":
            return Phone(self.host, self.port, self.device_id, token, key)
        from .dtls import DtlsPhone
        return DtlsPhone(self.host, self.port, self.device_id, token, key,
                         handshake_timeout=self.a.handshake_timeout, **self.dtls)

    def plain_phone(self, token=None):
        """Plain CoAP to the lock's /authz-info port (PSK mode uploads)."""
        return Phone(self.host, self.coap_port, self.device_id, token, None)

    def network_errors(self):
        import aiocoap.error
        return self.errors + (OSError, asyncio.TimeoutError, aiocoap.error.NetworkError,
                              aiocoap.error.ConRetransmitsExceeded)


def _hex_arg(name, value):
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise TargetError("%s must be hex, got %r" % (name, value))
