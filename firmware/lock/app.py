"""Application layer: wires configuration, trust core, authorization, log,
actuator and the transports handed in by the board.

The board creates sockets (and later the BLE radio) and passes them to
`LockApp.run`; nothing here opens a socket or touches a pin.
"""
import asyncio
import gc
import os

from coap import message as m
from coap.server import CoapServer, Site
from lock import resources, state
from lock.authz import Authorizer, Decision
from lock.declog import DecisionLog
from lock.lockout import Lockout
from lock.tokens import TokenStore
from trust import pop, reasons
from trust.reasons import Refused
from trust.verifier import Verifier


# PROFILE sec. 4: the profile's critical request options, neither repeatable
# (number: (min length, max length, repeatable)).
PROFILE_OPTIONS = {m.BEARER: (0, 1024, False), m.POP: (0, 255, False)}


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass


class LockApp:
    def __init__(self, cfg, root, actuator, clock, say=print, coaps=None, uplink=None):
        """`coaps`: (socket, coap.dtls.Contexts made first at boot:
        lock.endpoints.coaps) for the CoAPS server, or None. `uplink`: the
        board's connect() for the uplink to the AS (coap.dtls_client), or
        None (no uplink)."""
        self.cfg = cfg
        self.clock = clock
        self.actuator = actuator
        self.say = say
        _mkdir(root)  # DecisionLog creates its own folder below it
        self.log = DecisionLog(root + "/log", cfg.log_capacity, cfg.log_segment)
        self.verifier = Verifier(cfg.device_id, cfg.as_keys, cfg.as_lock_key, cfg.skew_s,
                                 cfg.allow_bearer, cfg.exi_table, cfg.revocations)
        self.store = TokenStore(cfg.token_store)
        self.nonces = pop.NonceTable(clock.uptime_ms, cfg.nonce_table)
        self.statefile = state.StateFile(root + "/state.cbor")
        self.authz = Authorizer(cfg.device_id, self.verifier, self.store, self.nonces, clock,
                                self.log, Lockout(*cfg.lockout), self.log.boot, self.persist)
        b = resources.Binding(self.authz, actuator, self.log, cfg.as_uri, cfg.device_id)
        self.site = Site()
        ai = resources.AuthzInfo(b)
        self.site.add(("authz-info",), ai, ai.attrs)
        for r in cfg.resources:
            res = resources.Protected(b, r)
            self.site.add(tuple(r.path.split("/")), res, res.attrs)
        sites = {}
        if not cfg.coap_enabled:
            # RFC 9202 sec. 3.3.1, RFC 9200 sec. 5.10.1: plain CoAP serves
            # only /authz-info (a PSK-mode client posts its token there before
            # it can open DTLS); everything else needs CoAPS.
            plain = Site()
            plain.add(("authz-info",), ai, ai.attrs)
            sites["coap"] = plain
        size, per_peer, nbytes = cfg.dedup
        self.server = CoapServer(self.site, known_options=PROFILE_OPTIONS, now_ms=clock.uptime_ms,
                                 on_error=self._error, dedup_size=size, dedup_per_peer=per_peer,
                                 dedup_bytes=nbytes, sites=sites)
        self.dtls = None
        if coaps is not None:
            self._dtls(*coaps)
        self.cursors = [0, None]  # the uplink's [trl_pos, last good wall time] (state.py)
        self._restore()
        self.uplink = None
        if uplink is not None and cfg.uplink.enabled:
            from lock.uplink import Uplink
            if cfg.uplink.ca_der is not None and hasattr(uplink, "retarget"):
                # A rebinding (lock.rebind) replaced the bundle's AS after
                # the board made the connector from the bundle.
                try:
                    uplink.retarget()
                except Exception as e:
                    say("uplink: off (cannot follow the rebinding: %s)" % (e,))
                    uplink = None
        if uplink is not None and cfg.uplink.enabled:
            self.uplink = Uplink(cfg.uplink, cfg.device_id, self.log, clock, self.authz, self.cursors,
                                 self.persist, uplink, say, buf=self.dtls.buf if self.dtls is not None else None)

    def _restore(self):
        """PROFILE sec. 6: a damaged or unreadable state file (or none on a
        lock that has booted before: the first boot writes one) fails
        closed: no stored token, exi tokens blocked until the AS gives
        floors, every revocation still readable kept; and it is logged."""
        self.statefile.remove_stale()
        # The DTLS receive reserve, made first at boot and idle until serving
        # starts, takes the read: no second block of its size is needed.
        st, status = self.statefile.load(self.dtls.reserve if self.dtls is not None else None)
        if status == state.MISSING and self.log.boot > 1:
            status = state.DAMAGED
        issuers = [k.issuer for k in self.cfg.as_keys]
        raws = state.restore(st, self.verifier, issuers)
        if st.uplink is not None:
            self.cursors[0], self.cursors[1] = st.uplink
        kept = 0
        if status == state.DAMAGED:
            self.verifier.exi.blocked = True
            raws = ()
        now = self.clock.uptime_ms()
        for raw, used in raws:
            try:
                tok = self.verifier.verify(raw, self.clock.wall(), self.log.boot,
                                           self.clock.uptime_s(), check_exi=False)
                self.store.add(tok, lambda t: False, None, now, used)
                kept += 1
            except Refused:
                pass  # expired, revoked or from a key no longer trusted
            except MemoryError:
                # Not the token's fault: it stays in the file for the next
                # boot (nothing is saved over the file this boot) and is
                # not served now.
                gc.collect()
                self.statefile.unread = True
        shown = "not all read (no heap), kept for the next boot" if self.statefile.unread else status
        self.say("state: %s; %d stored token(s) restored, %d dropped, %d revocation(s)%s" % (
            shown, kept, len(raws) - kept, len(self.verifier.revoked_hashes) + len(self.verifier.revoked_ctis),
            ", exi tokens blocked until the AS gives floors" if self.verifier.exi.blocked else ""))
        if status == state.DAMAGED:
            self.authz.record(Decision(False, reasons.STATE_DAMAGED, None, "state"), "local")
        if status != state.OK or kept != len(raws):
            try:
                self.persist()
            except OSError:
                pass  # said; the next change tries again

    def _error(self, exc):
        # A request that crashed its handler was answered 5.00; the loop goes on.
        self.say("ERROR %s: %s" % (type(exc).__name__, exc))

    def persist(self):
        """Save the state; raises OSError (said) when it cannot be written."""
        try:
            c = self.cursors
            self.statefile.save(state.snapshot(self.verifier, self.store,
                                               c if c[0] or c[1] is not None else None))
            self.verifier.exi.dirty = False
        except (OSError, MemoryError) as e:
            self.say("state: cannot save: %s" % e)
            raise OSError("state not saved: %s" % e)

    async def _relock(self, period_ms=100):
        while True:
            # Reading the uptime here keeps it right through idle weeks
            # (ticks_diff is only good for readings < 2**29 ms apart).
            try:
                self.clock.uptime_ms()
                self.actuator.poll()
            except Exception as e:
                # The relock must outlive anything (a MemoryError on a
                # flooded heap): say so, make room, try again next period.
                gc.collect()
                self._error(e)
            await asyncio.sleep_ms(period_ms)

    # DTLS (coap/dtls.py) -------------------------------------------------
    def psk_key(self, identity, addr=None):
        """RFC 9202 sec. 3.3: (PSK, session id) for a DTLS psk_identity, or
        None (unknown identity). The identity is the kid of a stored
        PSK-mode token (sec. 3.3.1: the token was posted to /authz-info),
        or the token itself (sec. 3.3.2; longer than any kid, which is at
        most 64 bytes): verified and stored as a POST to /authz-info would
        be (same checks, lockout and log); the session id is the kid of
        the token's key, so the session is bound to that token."""
        identity = bytes(identity)
        tok = self.store.by_psk_kid(identity)
        if tok is None and len(identity) > 64:
            d = self.authz.post_token(identity, "coaps", resources.peer_host(addr))
            tok = d.token if d.granted else None
        if tok is None or tok.claims.psk is None or self.authz._expired(tok):
            return None
        return tok.claims.psk, tok.claims.psk_kid

    def session_ok(self, kid):
        """Does the token a PSK session is bound to still hold (stored, not
        expired, not revoked)?"""
        tok = self.store.by_psk_kid(kid)
        return tok is not None and not self.authz._expired(tok)

    def admit(self, addr):
        """May `addr` start a DTLS handshake: not while its host is locked out."""
        return not self.authz.lockout.remaining_s(resources.peer_host(addr), self.clock.uptime_ms())

    def handshake_failed(self, addr, kind, session, token_identity=False):
        from coap import dtls
        if kind == dtls.FAIL_UNKNOWN_IDENTITY and token_identity:
            return  # the token as identity was decided (logged, counted) as an upload
        reason = {dtls.FAIL_UNKNOWN_IDENTITY: reasons.TOKEN_UNKNOWN, dtls.FAIL_PSK_MISMATCH: reasons.PSK_MISMATCH,
                  dtls.FAIL_LOCK: reasons.NO_MEMORY}.get(kind, reasons.DTLS_FAILED)
        self.authz.handshake_failed(reason, "coaps", resources.peer_host(addr), session)

    def _dtls(self, sock, contexts):
        """The CoAPS server on `sock` with its coap.dtls.Contexts."""
        from coap.dtls import DtlsServer
        self.dtls = DtlsServer(
            sock, self.server, contexts, self.psk_key if contexts.psk is not None else None,
            self.cfg.coaps_sessions, self.cfg.coaps_idle_ms, self.cfg.coaps_handshake_ms,
            say=self.say, now_ms=self.clock.uptime_ms, admit=self.admit,
            on_failure=self.handshake_failed, session_ok=self.session_ok)
        return self.dtls

    async def run(self, endpoints):
        """endpoints: list of (socket, transport name) the board opened; a
        "coaps" one is served by the CoAPS server built by the constructor
        (`coaps`). Raises ValueError for a "coaps" endpoint without it."""
        from coap import udp
        tasks = [asyncio.create_task(self._relock())]
        if self.uplink is not None:
            tasks.append(asyncio.create_task(self.uplink.run()))
        for sock, transport in endpoints:
            if transport == "coaps":
                if self.dtls is None or self.dtls.sock is not sock:
                    raise ValueError("a CoAPS endpoint needs LockApp(coaps=...)")
                tasks.append(asyncio.create_task(self.dtls.serve()))
            else:
                tasks.append(asyncio.create_task(udp.serve(sock, self.server, transport)))
        await asyncio.gather(*tasks)
