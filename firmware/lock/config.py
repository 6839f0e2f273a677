"""The lock's configuration, from the provisioning bundle (PROFILE.md sec. 1).

`lock.json` holds the device id, the trusted AS keys, the AS-to-lock key,
clock policy, transports and resources. Loading validates everything and
fails closed: a lock with a bad configuration does not start.
"""
import binascii
import json

from trust import p256
from trust.verifier import TrustedKey

# path -> (method, permission, action): PROFILE sec. 2 and 4 defaults.
DEFAULT_RESOURCES = (
    ("lock", "GET", "status", "status"),
    ("lock/unlock", "POST", "unlock", "unlock"),
    ("lock/lock", "POST", "lock", "lock"),
    ("log", "GET", "admin", "log"),
    ("revoke", "POST", "admin", "revoke"),
    ("rebind", "POST", "admin", "rebind"),
)
_ACTIONS = ("status", "unlock", "lock", "log", "revoke", "rebind", "pulse")


class ConfigError(ValueError):
    pass


def _hex(v, n, what):
    try:
        b = binascii.unhexlify(v)
    except Exception:
        raise ConfigError("%s: not hex" % what)
    if n and len(b) != n:
        raise ConfigError("%s: must be %d bytes" % (what, n))
    return b


_ONLINE = ("deny", "allow")


class Resource:
    """`online_check`: None, or the permission's offline policy ("deny" or
    "allow": what happens when the AS cannot be asked) when every request
    for it asks the AS first (PROFILE sec. 7; lock/uplink.py)."""
    online_check = None  # set on the instance only when there is one: no heap for the others

    def __init__(self, path, method, permission, action, channel=None, online_check=None):
        self.path = path
        self.method = method
        self.permission = permission
        self.action = action
        self.channel = channel
        if online_check is not None:
            self.online_check = online_check


def _online(r):
    v = r.get("online_check")
    if v is not None and v not in _ONLINE:
        raise ConfigError("resource %r: online_check is \"deny\", \"allow\" or null" % (r.get("path"),))
    return v


def resources(entries):
    """The defaults (PROFILE sec. 2, 4) with lock.json's "resources" entries:
    {"path", "permission", "action" (default "pulse"), "method" (default
    POST), "channel", "online_check"} adds or replaces the resource at
    `path`; {"path", "online_check"} alone sets the online check of the
    resource already there (a default). The online check belongs to the
    permission (PROFILE sec. 7): every resource that needs it is checked,
    and two resources that say different policies for one permission are
    a ConfigError."""
    if not isinstance(entries, (list, tuple)):
        raise ConfigError("resources: a list")
    out = [Resource(p, m, perm, a) for p, m, perm, a in DEFAULT_RESOURCES]
    for r in entries:
        if not isinstance(r, dict):
            raise ConfigError("resources: each entry an object")
        path = r.get("path", "")
        path = path.strip("/") if isinstance(path, str) else ""
        online = _online(r)
        if "online_check" in r and all(k in ("path", "online_check") for k in r):
            old = [x for x in out if x.path == path]
            if not old:
                raise ConfigError("resource %r: online_check alone needs a resource at that path" % (path,))
            old[0].online_check = online
            continue
        action = r.get("action", "pulse")
        perm = r.get("permission")
        if not path or action not in _ACTIONS or not isinstance(perm, str) or not perm:
            raise ConfigError("resource %r: path, permission and a known action needed" % (r,))
        out = [x for x in out if x.path != path]
        out.append(Resource(path, str(r.get("method", "POST")).upper(), perm, action, r.get("channel", path),
                            online))
    policy = {}
    for x in out:
        if x.online_check is not None:
            if policy.get(x.permission, x.online_check) != x.online_check:
                raise ConfigError("permission %r: online_check \"deny\" and \"allow\" on different resources"
                                  % x.permission)
            policy[x.permission] = x.online_check
    for x in out:
        v = policy.get(x.permission)
        if v != x.online_check:
            x.online_check = v
    return out


class Config:
    def __init__(self, d):
        if not isinstance(d, dict):
            raise ConfigError("configuration must be a JSON object")
        self.device_id = d.get("device_id")
        if not isinstance(self.device_id, str) or not self.device_id:
            raise ConfigError("device_id missing")
        self.as_uri = d.get("as_uri", "")
        keys = d.get("as_keys")
        if not isinstance(keys, list) or not keys:
            raise ConfigError("as_keys: at least one trusted AS key")
        self.as_keys = []
        for k in keys:
            pub = _hex(k.get("pub", ""), 65, "as_keys.pub")
            if not p256.point_valid(pub):
                raise ConfigError("as_keys.pub: not a valid P-256 point")
            kid = _hex(k["kid"], 0, "as_keys.kid") if k.get("kid") else None
            iss = k.get("issuer")
            if not isinstance(iss, str) or not iss:
                raise ConfigError("as_keys.issuer missing")
            self.as_keys.append(TrustedKey(iss, kid, pub))
        self.as_lock_key = _hex(d["as_lock_key"], 16, "as_lock_key") if d.get("as_lock_key") else None
        self.lock_key = d.get("lock_key")
        self.lock_cert = d.get("lock_cert")
        self.skew_s = int(d.get("clock_skew_s", 60))
        self.allow_bearer = bool(d.get("allow_bearer", False))
        self.bind = d.get("bind", "0.0.0.0")
        coap = d.get("coap", {})
        # Plain CoAP: `enabled` serves every resource (development only);
        # otherwise the port serves only /authz-info (RFC 9202 sec. 3.3.1),
        # unless `authz_info` is false too.
        self.coap_enabled = bool(coap.get("enabled", False))
        self.coap_authz_info = bool(coap.get("authz_info", True))
        self.coap_port = int(coap.get("port", 5683))
        coaps = d.get("coaps", {})
        self.coaps_enabled = bool(coaps.get("enabled", True))
        self.coaps_port = int(coaps.get("port", 5684))
        # DTLS session table: sessions (handshaking or established) at once,
        # and how long a handshake or an idle session keeps its slot.
        self.coaps_sessions = int(coaps.get("sessions", 3))
        self.coaps_idle_ms = int(coaps.get("idle_s", 60)) * 1000
        self.coaps_handshake_ms = int(coaps.get("handshake_s", 10)) * 1000
        ble = d.get("ble", {})
        self.ble_enabled = bool(ble.get("enabled", False))
        # PROFILE sec. 5: a stalled transfer is discarded after 5 s; a phone
        # idle that long, or connected for conn_s, makes way for the next.
        self.ble_stall_ms = int(ble.get("stall_s", 5)) * 1000
        self.ble_idle_ms = int(ble.get("idle_s", 10)) * 1000
        self.ble_conn_ms = int(ble.get("conn_s", 30)) * 1000
        self.uplink = uplink(d.get("uplink") or {})
        self.relock_ms = int(d.get("relock_ms", 5000))
        # Table sizes: the defaults fit the ESP32's 56 KiB heap with every
        # table full at once (host_tests/test_e2e_capacity.py measures it).
        lo = d.get("lockout", {})
        self.lockout = (int(lo.get("max_failures", 5)), int(lo.get("window_s", 60)), int(lo.get("penalty_s", 30)),
                        int(lo.get("capacity", 12)))
        self.token_store = int(d.get("token_store", 4))
        self.nonce_table = int(d.get("nonce_table", 16))  # spent PoP nonces remembered (30 s each)
        self.exi_table = int(d.get("exi_table", 12))  # exi sequence numbers remembered per issuer
        self.revocations = int(d.get("revocations", 64))  # revoked token ids and ctis, together
        # Beyond those, in the revocation list on flash (lock.revlist: 32 bytes
        # of flash an entry, 4 bytes of RAM per 16).
        self.revocations_flash = int(d.get("revocations_flash", 4096))
        dd = d.get("dedup", {})
        self.dedup = (int(dd.get("size", 6)), int(dd.get("per_peer", 2)), int(dd.get("bytes", 1536)))
        lg = d.get("log", {})
        self.log_capacity = int(lg.get("capacity_bytes", 65536))
        self.log_segment = int(lg.get("segment_bytes", 8192))
        self.clock = d.get("clock", "unsynced")
        self.resources = resources(d.get("resources") or ())
        if self.skew_s < 0 or self.relock_ms <= 0:
            raise ConfigError("clock_skew_s and relock_ms must be positive")


class Uplink:
    """The uplink to the AS (PROFILE sec. 7; lock/uplink.py), from lock.json's
    "uplink" object:

        "uri": "coaps://HOST:PORT"   the AS (coaps: DTLS, certificate mode,
                                     the default port 5684; "coap://" plain
                                     CoAP, development only, port 5683)
        "ca": "as-cert.pem"          bundle file (PEM or DER) holding the AS
                                     certificate, or the CA that issued it
        "name": null                 the name the AS certificate must carry
                                     (SAN, else CN); default: the URI's host
        "audit_s": 10, "trl_s": 300, "time_s": 3600   how often each runs
        "retry_s": 5, "max_retry_s": 600   backoff after a failed round
        "batch_bytes": 1024          /audit payload cap (one datagram)
        "min_free_bytes": 12288      heap that must be free (after a
                                     collection) to open a session: the
                                     decisions' room comes first
        "introspect_s": 60           how long an answer of the AS's
                                     /introspect stays fresh (online checks)
        "introspect_entries": 8      answers kept (token ids), 1 to 32

    `enabled` is False when "uri" is null or absent."""

    def __init__(self, d):
        uri = d.get("uri")
        self.enabled = uri is not None
        self.scheme = self.host = None
        self.port = 0
        if self.enabled:
            if not isinstance(uri, str):
                raise ConfigError("uplink.uri: text or null")
            self.scheme, self.host, self.port = parse_uri(uri)
        self.ca = d.get("ca", "as-cert.pem")
        self.ca_der = None  # the AS certificate itself, when a rebinding gave it
        self.name = d.get("name")
        self.audit_ms = _seconds(d, "audit_s", 10)
        self.trl_ms = _seconds(d, "trl_s", 300)
        self.time_ms = _seconds(d, "time_s", 3600)
        self.retry_ms = _seconds(d, "retry_s", 5)
        self.max_retry_ms = max(self.retry_ms, _seconds(d, "max_retry_s", 600))
        self.batch_bytes = int(d.get("batch_bytes", 1024))
        self.min_free = int(d.get("min_free_bytes", 12288))
        self.introspect_ms = _seconds(d, "introspect_s", 60)
        n = d.get("introspect_entries", 8)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 32:
            raise ConfigError("uplink.introspect_entries: 1 to 32")
        self.introspect_entries = n
        if not 256 <= self.batch_bytes <= 1024:
            raise ConfigError("uplink.batch_bytes: 256 to 1024 (one datagram)")
        if not isinstance(self.ca, str) or not self.ca or (self.name is not None and not isinstance(self.name, str)):
            raise ConfigError("uplink.ca: a bundle file name; uplink.name: text or null")


def _seconds(d, key, default):
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ConfigError("uplink.%s: a positive number of seconds" % key)
    return int(v * 1000)


def uplink(d):
    if not isinstance(d, dict):
        raise ConfigError("uplink: an object")
    return Uplink(d)


def parse_uri(uri):
    """("coap" | "coaps", host, port) of "coap[s]://HOST[:PORT][/]" (an IPv6
    literal in brackets); ConfigError for anything else (a path among it:
    the AS resources are at its root, PROFILE sec. 7)."""
    for scheme, port in (("coaps", 5684), ("coap", 5683)):
        pre = scheme + "://"
        if uri.startswith(pre):
            rest = uri[len(pre):]
            if rest.endswith("/"):
                rest = rest[:-1]
            if "/" in rest or "?" in rest or "#" in rest or not rest:
                raise ConfigError("uplink.uri: %s: no path, query or fragment" % uri)
            host = rest
            if rest.startswith("["):
                end = rest.find("]")
                if end < 0:
                    raise ConfigError("uplink.uri: %s: unclosed IPv6 literal" % uri)
                host = rest[1:end]
                rest = rest[end + 1:]
                if rest and not rest.startswith(":"):
                    raise ConfigError("uplink.uri: %s" % uri)
                rest = rest[1:] if rest else ""
            elif ":" in rest:
                host, rest = rest.split(":", 1)
            else:
                rest = ""
            if rest:
                if not rest.isdigit() or not 0 < int(rest) < 65536:
                    raise ConfigError("uplink.uri: %s: bad port" % uri)
                port = int(rest)
            if not host:
                raise ConfigError("uplink.uri: %s: no host" % uri)
            return scheme, host, port
    raise ConfigError("uplink.uri: %s: coap:// or coaps:// expected" % uri)


def _der_from_pem(data):
    # The first certificate of a PEM file as DER (DER is returned as it is).
    begin = b"-----BEGIN CERTIFICATE-----"
    i = data.find(begin)
    if i < 0:
        return bytes(data)
    j = data.find(b"-----END", i)
    if j < 0:
        raise ConfigError("uplink.ca: truncated PEM")
    body = b"".join(data[i + len(begin):j].split())
    try:
        return binascii.a2b_base64(body)
    except Exception:
        raise ConfigError("uplink.ca: bad PEM")


def uplink_trust(cfg, bundle):
    """(AS certificate or CA as DER, the name the AS certificate must carry)
    for the uplink's DTLS client (PROFILE sec. 7). ConfigError when the file
    cannot be read."""
    u = cfg.uplink
    der = u.ca_der  # set by a rebinding (lock/rebind.py)
    if der is None:
        try:
            with open(bundle + "/" + u.ca, "rb") as f:
                der = _der_from_pem(f.read())
        except OSError as e:
            raise ConfigError("cannot read %s/%s: %s" % (bundle, u.ca, e))
    return der, u.name or u.host


def credentials(cfg, bundle):
    """(certificate DER, private key DER) of the lock for CoAPS certificate
    mode (PROFILE sec. 1, 4), read from the files the configuration names
    in the bundle directory; None when it names none. Raises ConfigError
    when one is named and unreadable, or only one of the two is named."""
    if not cfg.lock_cert and not cfg.lock_key:
        return None
    if not cfg.lock_cert or not cfg.lock_key:
        raise ConfigError("lock_cert and lock_key go together")
    out = []
    for name in (cfg.lock_cert, cfg.lock_key):
        try:
            with open(bundle + "/" + name, "rb") as f:
                out.append(f.read())
        except OSError as e:
            raise ConfigError("cannot read %s/%s: %s" % (bundle, name, e))
    return tuple(out)


def load(path):
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (path, e))
    except ValueError as e:
        raise ConfigError("%s: invalid JSON: %s" % (path, e))
    return Config(d)

