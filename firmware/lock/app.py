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
from lock import rebind, resources, state
from lock.authz import Authorizer, Decision
from lock.declog import DecisionLog
from lock.lockout import Lockout
from lock.revlist import RevocationList
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
        board's factory of the uplink's connector, `uplink(cfg)` -> connect
        or None (coap.dtls_client.from_config), or None (no uplink)."""
        self.running = False  # run() has started the tasks
        self.cfg = cfg
        self.clock = clock
        self.actuator = actuator
        self.say = say
        _mkdir(root)  # DecisionLog creates its own folder below it
        # A rebinding (lock.rebind) kept beside the state replaces the
        # bundle's AS; a damaged one leaves the lock trusting no AS.
        self.trust_path = root + "/" + rebind.FILE
        self.distrusted = None
        try:
            rec = rebind.load(self.trust_path)
            if rec is not None:
                rebind.apply(cfg, rec)
        except rebind.RebindError as e:
            rebind.distrust(cfg)
            self.distrusted = str(e)
        self.log = DecisionLog(root + "/log", cfg.log_capacity, cfg.log_segment)
        self.verifier = Verifier(cfg.device_id, cfg.as_keys, cfg.as_lock_key, cfg.skew_s,
                                 cfg.allow_bearer, cfg.exi_table, cfg.revocations)
        # Revocations beyond the RAM sets go to flash (an AS's list of
        # thousands: PROFILE sec. 7).
        self.verifier.trl = RevocationList(root + "/trl.bin", cfg.revocations_flash)
        self.store = TokenStore(cfg.token_store)
        self.nonces = pop.NonceTable(clock.uptime_ms, cfg.nonce_table)
        self.statefile = state.StateFile(root + "/state.cbor")
        self.authz = Authorizer(cfg.device_id, self.verifier, self.store, self.nonces, clock,
                                self.log, Lockout(*cfg.lockout), self.log.boot, self.persist)
        b = self.binding = resources.Binding(self.authz, actuator, self.log, cfg.as_uri, cfg.device_id,
                                             self.rebind)
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
        # The uplink: `uplink(cfg)` is the board's factory of its connector
        # (coap.dtls_client.from_config), called once the configuration
        # names the AS it will have (a rebinding's, when there is one).
        self.uplink = None
        self._uplink_for = uplink
        self._start_uplink()

    def _start_uplink(self):
        """Make the uplink (lock.uplink) when there is none yet and the
        configuration names an AS; True when one was made."""
        if self.uplink is not None or self._uplink_for is None or not self.cfg.uplink.enabled:
            return False
        connect = self._uplink_for(self.cfg)
        if connect is None:
            return False
        from lock.uplink import Uplink
        self.uplink = Uplink(self.cfg.uplink, self.cfg.device_id, self.log, self.clock, self.authz, self.cursors,
                             self.persist, connect, self.say, buf=self.dtls.buf if self.dtls is not None else None)
        return True

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
        if self.distrusted:
            self.say("TRUST: %s: the lock trusts no AS and refuses every token until it is "
                     "rebound with physical presence" % self.distrusted)
            self.authz.record(Decision(False, reasons.STATE_DAMAGED, None, "rebind"), "local")
        if self.verifier.trl.damaged:
            # PROFILE sec. 6: what the list still gives is kept, the stored
            # tokens go (one of them may be on the lost part), and the AS's
            # whole list is fetched again.
            self.say("state: the revocation list on flash is damaged: every entry it holds kept, stored "
                     "tokens dropped, %s" % ("the AS's whole list fetched again" if self.cfg.uplink.enabled
                                             else "no uplink: send lost revocations again (POST /revoke)"))
            self.store.remove_if(lambda t: True)
            self.cursors[0] = 0
            self.authz.record(Decision(False, reasons.STATE_DAMAGED, None, "revocations"), "local")
        if status != state.OK or kept != len(raws) or self.verifier.trl.damaged:
            try:
                self.persist()
            except OSError:
                pass  # said; the next change tries again

    def rebind(self, rec, transport, peer=None):
        """Move the lock to the AS of `rec` (a lock.rebind record; PROFILE
        sec. 7, seed sec. 5.1): the record is written first (the commit
        point), then every token, PoP nonce and PSK session of the old AS
        goes (PSK sessions end with their tokens; a certificate-mode session
        authorizes nothing without a token of the new AS), the uplink
        starts over with the new AS, and the change is logged (permission
        "rebind", `sub` the new issuer), so it is uploaded to the new AS.
        Returns the Decision. Raises OSError when the record cannot be
        written: nothing changed.

        A record naming the AS the lock already trusts (same issuer and
        key: a retry, or the AS moved to another address) changes only the
        uplink's target: tokens, revocations and the list position stay."""
        v = self.verifier
        same = not self.distrusted and any(k.issuer == rec["issuer"] and k.pub == rec["pub"] for k in v.keys)
        if not same:
            # The new AS's revocation list is read from its start: that
            # position is on flash before the record, so a power cut between
            # the two never leaves the new AS read from the old one's place.
            # (Before the commit the old AS is still trusted, and reading its
            # list again from the start loses nothing.)
            self.cursors[0] = 0
            try:
                self.persist()
            except OSError:
                pass  # said; the record is not written either then, below
        rebind.save(self.trust_path, rec)
        rebind.apply(self.cfg, rec)
        self.distrusted = None
        v.keys = list(self.cfg.as_keys)
        v.psk_unwrap_key = self.cfg.as_lock_key
        self.binding.as_uri = self.cfg.as_uri
        dropped = 0
        if not same:
            dropped = len(self.store.remove_if(lambda t: True))
            self.nonces.forget_all()
            # The revocations of the old AS protect nothing now (its tokens
            # are refused by key).
            v.revoked_hashes = set()
            v.revoked_ctis = set()
            if v.trl is not None:
                try:
                    v.trl.clear()
                except OSError as e:
                    self.say("TRUST: the old AS's revocation list stays on flash: %s" % e)
        if self.uplink is not None:
            self.uplink.rebound(same)
        elif self._start_uplink() and self.running:
            asyncio.create_task(self.uplink.run())
        try:
            self.persist()
        except OSError:
            pass  # said; the old tokens are refused anyway: their key is gone
        if same:
            self.say("TRUST: %s again (%s): tokens and revocations kept" % (rec["issuer"], rec["uri"]))
        else:
            self.say("TRUST: rebound to %s (%s); %d stored token(s) of the old AS dropped" % (
                rec["issuer"], rec["uri"], dropped))
        return self.authz.record(Decision(True, reasons.OK, None, "rebind"), transport, rec["issuer"])

    def rebind_at_boot(self, bundle, presence):
        """The offline rebinding of a lock whose AS is gone: `bundle`'s
        rebind.cbor (lock.rebind) is taken only with physical presence
        (`presence`: the board's pairing button was held at boot), then
        removed. Returns True when the lock was rebound. A file without
        presence, or one that is not a good record, is said and left."""
        path = bundle + "/" + rebind.REQUEST_FILE
        try:
            with open(path, "rb") as f:
                raw = f.read(rebind.MAX_BYTES + 1)
        except OSError:
            return False
        if not presence:
            self.say("TRUST: %s ignored: hold the pairing button while the lock boots to rebind" % path)
            return False
        try:
            rec = rebind.parse(raw)
            d = self.rebind(rec, "local")
        except (rebind.RebindError, OSError) as e:
            self.say("TRUST: %s not taken: %s" % (path, e))
            self.authz.record(Decision(False, reasons.BAD_REQUEST, None, "rebind"), "local")
            return False
        try:
            os.remove(path)
        except OSError:
            pass
        return d.granted

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
        self.running = True
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
