"""Persistence of the lock's security state across reboots: stored tokens,
revocation lists and the exi first-receipt table (RFC 9200 5.10.3).

One CBOR file replaced atomically (write a temporary file, then rename,
which littlefs commits atomically). A missing or unreadable file means
an empty state; an unreadable one is kept aside for inspection.
"""
import os

from trust import cbor

_VERSION = 1


class StateFile:
    def __init__(self, path):
        self.path = path

    def load(self):
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except OSError:
            return None
        try:
            st = cbor.decode(raw, 6, 65536)
            if not isinstance(st, dict) or st.get("v") != _VERSION:
                raise ValueError("version")
            return st
        except ValueError:
            try:
                os.rename(self.path, self.path + ".bad")
            except OSError:
                pass
            return None

    def save(self, st):
        st["v"] = _VERSION
        data = cbor.encode(st)
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, self.path)


def snapshot(verifier, store):
    return {
        "tokens": [t.raw for t in store.tokens],
        "rh": sorted(verifier.revoked_hashes),
        "rc": sorted(verifier.revoked_ctis),
        "exi": verifier.exi.to_list(),
    }


def restore(st, verifier):
    """Revocations and exi first; the stored tokens are returned raw so the
    caller re-verifies each (keys may have changed since they were stored)."""
    if not st:
        return []
    for h in st.get("rh", ()):
        verifier.revoked_hashes.add(h)
    for c in st.get("rc", ()):
        verifier.revoked_ctis.add(c)
    verifier.exi.load(st.get("exi", ()))
    return list(st.get("tokens", ()))
