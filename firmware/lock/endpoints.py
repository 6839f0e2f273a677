"""The lock's network endpoints as its configuration asks (PROFILE sec. 1,
4), opened for a board: frozen with the firmware, so the boards' main
scripts (compiled onto the heap at boot) stay small.
"""
from coap import udp
from lock import config


def open_all(cfg, say, coap_port=None):
    """Bind the configured UDP endpoints; returns [(socket, transport)]
    for LockApp.run ("coap": plain CoAP, every resource when `coap.enabled`
    (development only), else /authz-info only (RFC 9202 sec. 3.3.1);
    "coaps": DTLS 1.2). Raises config.ConfigError (CoAPS with no mode);
    the certificate-mode files are read and checked once, by coaps(). A
    port that cannot be bound is fatal (udp.bound)."""
    cert = cfg.lock_cert or cfg.lock_key  # named: coaps() reads them
    out = []
    if cfg.coap_enabled or cfg.coap_authz_info:
        port = coap_port or cfg.coap_port
        out.append((udp.bound(cfg.bind, port), "coap"))
        if cfg.coap_enabled:
            say("WARNING: plain CoAP (no DTLS) is enabled on %s:%d - development only" % (cfg.bind, port))
        else:
            say("CoAP on %s:%d: /authz-info only (token upload, RFC 9202 sec. 3.3.1)" % (cfg.bind, port))
    if cfg.coaps_enabled:
        modes = [m for m, on in (("PSK mode", cfg.as_lock_key), ("certificate mode", cert)) if on]
        if not modes:
            raise config.ConfigError("coaps: no mode (PSK mode needs as_lock_key, certificate mode lock_cert)")
        out.append((udp.bound(cfg.bind, cfg.coaps_port), "coaps"))
        say("CoAPS (DTLS 1.2) on %s:%d: %s" % (cfg.bind, cfg.coaps_port, " and ".join(modes)))
    return out


def coaps(endpoints, cfg, bundle):
    """For LockApp(coaps=...): (the CoAPS socket, its coap.dtls.Contexts),
    made now, first thing at boot, while the heap is whole; None when no
    CoAPS endpoint was opened. Raises config.ConfigError (the bundle's
    certificate or key cannot be read or loaded) or MemoryError."""
    for sock, transport in endpoints:
        if transport == "coaps":
            from coap.dtls import Contexts
            cert = config.credentials(cfg, bundle)
            try:
                return sock, Contexts(bool(cfg.as_lock_key), cert)
            except (ValueError, OSError) as e:
                raise config.ConfigError("coaps: %s" % (e,))
    return None
