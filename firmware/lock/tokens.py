"""Authorization layer: the bounded store of verified access tokens
(RFC 9200 5.10.1), keyed by token id (PROFILE sec. 2), one token per
proof-of-possession key.

Fairness (PROFILE sec. 4 v2): what one peer uploads must not push out
another peer's token before its time. Tokens are public (they cross the air
in the clear), so anyone may upload a token sniffed from someone else; what
only the key holder can do is use it. The store therefore tells tokens that
were used (a granted request proved possession of their key) from those
only uploaded, like a segmented LRU cache: used tokens hold at most
capacity - `probation` slots, and a token that becomes used beyond that
pushes out the used token idle longest. An upload, which proves nothing,
makes room only from, in order:
  1. tokens no longer valid;
  2. an unused token the same peer uploaded (a peer replaces its own);
  3. an unused token older than `grace_ms` (a fresh upload has that long to
     be used, so a flood cannot push it out between upload and proof);
  4. the used token idle longest, once idle for `idle_ms`;
and otherwise refuses the upload (STORE_FULL, 5.03; the client can still
send its token inline). So uploads alone never push out a used token that
is in use, and a new phone still gets in once it proves its key.

Tokens for the same proof-of-possession key are separate entries under
the same rules until one of them is used (the PoP challenge signs the token
id, so a proof names its token): that one becomes the key's token and the
others go. An upload can therefore neither displace the token a phone uses
nor the one it has just uploaded (say, with a sniffed token of a smaller
scope); a token older (by iat) than the one the key holder uses is refused
(TOKEN_SUPERSEDED). A PSK-mode token (RFC 9202) replaces the stored one for
its kid.
"""
from trust import reasons
from trust.reasons import Refused


class TokenStore:
    def __init__(self, capacity=8, grace_ms=30000, idle_ms=3600000, probation=1):
        self.capacity = capacity
        self.probation = min(probation, capacity - 1)
        self.grace_ms = grace_ms
        self.idle_ms = idle_ms
        self.tokens = []  # verified Token objects, oldest upload first
        self._info = {}   # token id -> [uploader peer, used (bool), uptime ms of upload or last use]

    def __len__(self):
        return len(self.tokens)

    def get(self, digest):
        for t in self.tokens:
            if t.hash == digest:
                return t
        return None

    @staticmethod
    def _key_id(tok):
        c = tok.claims
        if c.pop_key is not None:
            return c.pop_key
        if c.psk_kid is not None:
            return b"psk:" + c.psk_kid
        return None

    def add(self, tok, expired, peer=None, now_ms=0, used=False):
        """Store `tok`, uploaded by `peer` at uptime `now_ms`; `expired(t)`
        tells whether a stored token is no longer valid. Returns the tokens
        dropped to make room. Raises Refused(TOKEN_SUPERSEDED) for a token
        older than the stored one for its key, Refused(STORE_FULL) when no
        stored token may be dropped (see the module docstring)."""
        if self.get(tok.hash) is not None:
            return []                      # the same token, in any envelope
        kid = self._key_id(tok)
        dropped = []
        if kid is not None:
            for t in list(self.tokens):
                if self._key_id(t) != kid:
                    continue
                old, new = t.claims.iat, tok.claims.iat
                if tok.claims.psk_kid is not None:
                    # PSK mode: the kid names one token, the newest the AS
                    # issued; an older one (a stranger re-posting a sniffed
                    # token of wider scope) does not put it back.
                    if old is not None and (new is None or new < old):
                        raise Refused(reasons.TOKEN_SUPERSEDED, "the lock holds a newer token for this PSK")
                    self._remove(t)
                    dropped.append(t)
                    continue
                if self._info[t.hash][1] and old is not None and (new is None or new < old):
                    raise Refused(reasons.TOKEN_SUPERSEDED, "the key holder uses a newer token")
        if len(self.tokens) >= self.capacity:
            for t in list(self.tokens):
                if expired(t):
                    self._remove(t)
                    dropped.append(t)
        if len(self.tokens) >= self.capacity:
            victim = self._victim(peer, now_ms)
            if victim is None:
                raise Refused(reasons.STORE_FULL)
            self._remove(victim)
            dropped.append(victim)
        self.tokens.append(tok)
        self._info[tok.hash] = [peer, used, now_ms]
        return dropped

    def _victim(self, peer, now_ms):
        own = old = None
        for t in self.tokens:
            who, used, at = self._info[t.hash]
            if not used:
                if own is None and peer is not None and who == peer:
                    own = t
                if old is None and now_ms - at >= self.grace_ms:
                    old = t
        if own or old:
            return own or old
        idle = self._idlest_used()
        if idle is not None and now_ms - self._info[idle.hash][2] >= self.idle_ms:
            return idle
        return None

    def _idlest_used(self, but=None):
        """The used token (other than `but`) idle longest, or None."""
        best = None
        for t in self.tokens:
            i = self._info[t.hash]
            if i[1] and t is not but and (best is None or i[2] < self._info[best.hash][2]):
                best = t
        return best

    def is_used(self, tok):
        info = self._info.get(tok.hash)
        return info is not None and info[1]

    def used(self, tok, now_ms):
        """`tok` authorized a granted request with proof of possession.
        True when that changed what is stored (first use: the token became
        used, and may have pushed out the used token idle longest)."""
        info = self._info.get(tok.hash)
        if info is None or info[1]:
            if info is not None:
                info[2] = now_ms
            return False
        info[1] = True
        info[2] = now_ms
        kid = self._key_id(tok)
        for t in [t for t in self.tokens if t is not tok and self._key_id(t) == kid]:
            self._remove(t)  # the key holder chose this token: it supersedes
        n = sum(1 for t in self.tokens if self._info[t.hash][1])
        if n > self.capacity - self.probation:
            lru = self._idlest_used(tok)
            if lru is not None:
                self._remove(lru)
        return True

    def _remove(self, t):
        self.tokens.remove(t)
        del self._info[t.hash]

    def remove_if(self, pred):
        gone = [t for t in self.tokens if pred(t)]
        for t in gone:
            self._remove(t)
        return gone

    def by_psk_kid(self, kid):
        for t in self.tokens:
            if t.claims.psk_kid == kid:
                return t
        return None

    def candidates(self, permission):
        """Stored tokens with an EC2 cnf key that allow `permission`, in the
        order a PoP proof (which names its token only by the signature) is
        tried: used tokens, most recently used first, then unused uploads,
        newest first; so a phone in use matches on its first check whatever
        strangers uploaded."""
        used = []
        unused = []
        for t in reversed(self.tokens):
            if t.claims.pop_key is not None and t.allows(permission):
                (used if self._info[t.hash][1] else unused).append(t)
        used.sort(key=lambda t: -self._info[t.hash][2])
        return used + unused
