"""Authorization layer: the bounded store of verified access tokens
(RFC 9200 5.10.1), keyed by token id (PROFILE sec. 2), one token per proof-of-possession
key: a new token for the same key supersedes the old one.
"""


class TokenStore:
    def __init__(self, capacity=8):
        self.capacity = capacity
        self.tokens = []  # verified Token objects, oldest first

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

    def add(self, tok, expired):
        """Store `tok`; `expired(t)` tells whether a stored token is no
        longer valid. Returns the tokens dropped to make room."""
        dropped = []
        kid = self._key_id(tok)
        for t in list(self.tokens):
            if t.hash == tok.hash or (kid is not None and self._key_id(t) == kid):
                self.tokens.remove(t)
                if t.hash != tok.hash:
                    dropped.append(t)
        if len(self.tokens) >= self.capacity:
            for t in list(self.tokens):
                if expired(t):
                    self.tokens.remove(t)
                    dropped.append(t)
        while len(self.tokens) >= self.capacity:
            dropped.append(self.tokens.pop(0))
        self.tokens.append(tok)
        return dropped

    def remove_if(self, pred):
        gone = [t for t in self.tokens if pred(t)]
        for t in gone:
            self.tokens.remove(t)
        return gone

    def by_psk_kid(self, kid):
        for t in self.tokens:
            if t.claims.psk_kid == kid:
                return t
        return None

    def candidates(self, permission):
        """Stored tokens with an EC2 cnf key that allow `permission`,
        newest first (a PoP proof names its token by the signature)."""
        out = []
        for t in reversed(self.tokens):
            if t.claims.pop_key is not None and t.allows(permission):
                out.append(t)
        return out
