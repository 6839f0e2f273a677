"""`lockctl coap`: the phone, over CoAP with aiocoap (PROFILE.md sec. 3-4).

Uploads a token to /authz-info, answers the lock's challenge (the cnonce of
a 2.01 or of a 4.01's AS Request Creation Hints) with a PoP proof, and
reports the outcome readably.
"""
import asyncio

import cbor2

from . import cose_host as ch

BEARER = 65001
POP = 65005
ERROR = 65000
ERROR_NAMES = {0: "invalid_request", 1: "invalid_token", 2: "insufficient_scope"}
ACTIONS = {
    "status": ("GET", "lock", "status"),
    "unlock": ("POST", "lock/unlock", "unlock"),
    "lock": ("POST", "lock/lock", "lock"),
    "log": ("GET", "log", "admin"),
    "revoke": ("POST", "revoke", "admin"),
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
    def __init__(self, code, payload, error=None, hints=None, tries=1):
        self.code = code
        self.payload = payload
        self.error = error
        self.hints = hints
        self.tries = tries

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


def _error_of(resp):
    for opt in resp.opt.option_list():
        if int(opt.number) == ERROR:
            v = opt.value
            return v if isinstance(v, int) else int.from_bytes(v, "big")
    return None


class Phone:
    def __init__(self, host, port, device_id, token=None, key=None, scheme="coap"):
        self.base = "%s://%s:%d/" % (scheme, host if ":" not in host else "[%s]" % host, port)
        self.device_id = device_id
        self.token = token
        self.key = key
        self.nonce = None
        self.ctx = None

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

    async def act(self, action, inline=False, payload=b"", query=()):
        """Send the action; on 4.01 with a cnonce, sign and retry once."""
        method, path, perm = ACTIONS[action]
        return await self.request(method, path, perm, inline, payload, query)

    async def request(self, method, path, perm, inline=False, payload=b"", query=()):
        if query:
            path = path + "?" + "&".join(query)
        tries = 0
        while True:
            tries += 1
            opts = []
            if inline and self.token:
                opts.append((BEARER, self.token))
            if self.nonce is not None and self.key is not None and self.token:
                opts.append((POP, self._proof(perm)))
                self.nonce = None
            resp = await self._send(method, path, payload, options=opts)
            hints = None
            if resp.payload and _code(resp).startswith("4."):
                try:
                    hints = cbor2.loads(resp.payload)
                except Exception:
                    hints = None
            out = Outcome(_code(resp), resp.payload, _error_of(resp), hints, tries)
            if (out.code == "4.01" and tries == 1 and isinstance(hints, dict) and 39 in hints
                    and self.key is not None and self.token):
                self.nonce = hints[39]
                continue
            return out
