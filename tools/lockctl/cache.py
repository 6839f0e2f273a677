"""The phone's token cache: which tokens a lock already holds.

After a grant with the full token the lock keeps it (PROFILE sec. 4, 5), so
the phone remembers "lock DEVICE_ID holds token TOKEN_ID" and next time
sends only the 32-byte token id (BLE: in the Request; CoAP: in the Bearer
option with a PoP proof). When the lock answers that it does not know the id
(it restarted with damaged state, pushed the token out of its store...),
the phone forgets the entry and sends the full token again.

One JSON file per token (`lockctl ble`: TOKEN.ble-cache.json, `lockctl
coap`: TOKEN.coap-cache.json): {"DEVICE_ID/TOKEN_ID_HEX": true}. It holds no
secret (token ids are public), and a lost or unreadable file only costs one
full upload.
"""
import json
import os

from . import cose_host as ch


def cache_load(path):
    try:
        with open(path) as f:
            c = json.load(f)
    except (OSError, ValueError):
        return {}
    return c if isinstance(c, dict) else {}


def cache_save(path, cache):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cache, f, indent=1)
    os.replace(tmp, path)


def entry(device_id, token):
    return "%s/%s" % (device_id, ch.token_id(token).hex())


class TokenCache:
    """The cache entry of one (lock, token) pair; `path` None: no cache
    (always the full token)."""

    def __init__(self, path, device_id, token):
        self.path = path
        self.key = entry(device_id, token)
        self.data = cache_load(path) if path else {}

    def holds(self):
        """The lock is known to hold the token: send its id only."""
        return self.data.get(self.key) is True

    def remember(self):
        self.data[self.key] = True
        self._save()

    def forget(self):
        if self.data.pop(self.key, None) is not None:
            self._save()

    def _save(self):
        if self.path:
            cache_save(self.path, self.data)
