"""Transport: the lock's DTLS 1.2 client for its uplink to the AS (PROFILE
sec. 7), on MicroPython's `tls` (mbedTLS), for both boards.

Certificate mode, mutual: the lock presents its own key and certificate
(the bundle's, the same as its CoAPS server identity) and accepts only a
server certificate that chains to the AS certificate or CA in its bundle and
carries the configured name (mbedTLS checks the chain and the name: SAN,
else CN). Plain CoAP (`coap://`) is a development switch.

`from_config` gives a `Connector`, which the board hands to lock.uplink:
each call gives a fresh non-blocking channel with `write(bytes) -> n |
None` (None: the DTLS handshake is still running), `readinto(buf) -> n |
None` and `close()`. The SSLContext (about 1.8 KB of GC heap; the
certificates are parsed onto mbedTLS's own heap) and a channel's wrapper
(about 0.4 KB) live only while the uplink has a session.
"""
import socket

_CERT_SUITES = ("TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8", "TLS-ECDHE-ECDSA-WITH-AES-128-CCM",
                "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256")


class Connector:
    """`connect()` for the uplink a lock.config.Config names: each call a
    fresh channel. The SSLContext (about 1.8 KB of GC heap) is made for a
    session and given back with `release()` when the session ends, so an
    idle uplink holds none of it. `retarget()` follows the configuration
    after a rebinding changed the AS (its address, certificate and name)."""

    def __init__(self, cfg, bundle):
        self.cfg = cfg
        self.bundle = bundle
        self.ctx = None
        self.addr = None
        self.name = None
        self.retarget()
        if cfg.uplink.scheme == "coaps":
            try:
                self._context()  # fails now, at boot, on a certificate or key it cannot load
            except MemoryError:
                pass  # no heap to check them now: the first session does
            self.release()

    def retarget(self):
        """Check the configuration, forget the old AS's address and context."""
        u = self.cfg.uplink
        self.ctx = self.addr = None
        if u.scheme == "coaps":
            self.name = u.name or u.host
        elif u.scheme != "coap":
            raise ValueError("uplink: unknown scheme %s" % u.scheme)

    def release(self):
        self.ctx = None

    def _context(self):
        """Raises lock.config.ConfigError, ValueError, MemoryError or the
        `tls` module's errors (a certificate or key it cannot load)."""
        from lock import config
        cert = config.credentials(self.cfg, self.bundle)
        ca, self.name = config.uplink_trust(self.cfg, self.bundle)
        if cert is None:
            raise ValueError("uplink: coaps needs the lock's certificate (lock_cert, lock_key)")
        import tls
        ctx = tls.SSLContext(tls.PROTOCOL_DTLS_CLIENT)
        ctx.load_cert_chain(cert[0], cert[1])
        ctx.load_verify_locations(ca)
        ctx.verify_mode = tls.CERT_REQUIRED
        have = ctx.get_ciphers()
        ctx.set_ciphers([n for n in _CERT_SUITES if n in have])
        self.ctx = ctx

    def __call__(self):
        u = self.cfg.uplink
        if self.addr is None:
            # Resolved once (a name blocks in DNS on lwIP): an address
            # literal costs nothing.
            self.addr = socket.getaddrinfo(u.host, u.port, 0, socket.SOCK_DGRAM)[0][-1]
        if u.scheme == "coaps" and self.ctx is None:
            self._context()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.connect(self.addr)
            s.setblocking(False)
            if u.scheme == "coap":
                return s
            # Fails closed: CERT_REQUIRED with the AS's name (mbedTLS
            # checks the chain to the bundle's AS certificate and the name).
            return self.ctx.wrap_socket(s, server_side=False, do_handshake_on_connect=False,
                                        server_hostname=self.name)
        except BaseException:
            s.close()
            raise


def from_config(cfg, bundle, say=print):
    """The uplink's Connector, or None (no uplink configured, or it cannot
    be set up: said, and the lock runs without it)."""
    u = cfg.uplink
    if not u.enabled:
        say("uplink: off (no uplink.uri in lock.json)")
        return None
    from lock import config
    try:
        conn = Connector(cfg, bundle)
    except (config.ConfigError, ValueError, OSError, MemoryError) as e:
        say("uplink: off (%s)" % (e,))
        return None
    if u.scheme == "coap":
        say("WARNING: uplink over plain CoAP to %s:%d - development only" % (u.host, u.port))
    else:
        say("uplink: coaps://%s:%d, the AS certificate issued to %r" % (u.host, u.port, conn.name))
    return conn
