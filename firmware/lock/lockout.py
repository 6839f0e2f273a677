"""Authorization layer: per-peer lockout after repeated failures.

A peer that collects `max_failures` refusals within `window_s` is refused
(CoAP 4.29 with Max-Age) for `penalty_s`. A refusal weighs as many
failures as the signature checks it cost (at least one), so the lockout is
also the per-peer budget of signature checks (PROFILE sec. 4 v2). The
table is bounded; an entry is forgotten only once it holds nothing (its
penalty ended, its failures are older than the window); while the table is
full of entries that still count, the peers left outside share one entry,
so a flood from many addresses still gets one budget rather than none; the
last 8 peers that proved possession are not held to that shared entry.
"""
from micropython import const

_GOOD = const(8)


class Lockout:
    def __init__(self, max_failures=5, window_s=60, penalty_s=30, capacity=32):
        self.max_failures = max_failures
        self.window_ms = window_s * 1000
        self.penalty_ms = penalty_s * 1000
        self.capacity = capacity
        self.peers = {}  # peer -> [failures, first_ms, locked_until_ms, last_ms]
        # Peers that find the table full of entries that still count share
        # one entry: many addresses at once get one budget, not unlimited.
        self.overflow = None
        # The last peers that proved possession keep their own standing:
        # strangers filling the table cannot lock them out with the overflow.
        self.good = []

    def _room(self, now_ms):
        """True if a new peer can have an entry of its own. Only entries
        that no longer hold anything (a penalty that ended, failures older
        than the window) make room: peers with recent failures are not
        forgotten for newcomers, so many addresses taking turns cannot
        wash their failures out of the table."""
        if len(self.peers) < self.capacity:
            return True
        for p in [p for p, v in self.peers.items()
                  if (v[2] and v[2] <= now_ms) or (not v[2] and now_ms - v[1] > self.window_ms)]:
            del self.peers[p]
        return len(self.peers) < self.capacity

    def remaining_s(self, peer, now_ms):
        """Seconds the peer stays locked out, 0 if it may proceed."""
        e = self.peers.get(peer)
        if e is None and self.overflow is not None and peer not in self.good and not self._room(now_ms):
            e = self.overflow
        if e is None or e[2] == 0:
            return 0
        left = e[2] - now_ms
        if left <= 0:
            if e is self.overflow:
                self.overflow = None
            else:
                del self.peers[peer]
            return 0
        return (left + 999) // 1000

    def shared(self, peer):
        """True if the peer has no entry of its own (remaining_s then
        answers for the shared overflow entry)."""
        return peer not in self.peers

    def failure(self, peer, now_ms, weight=1):
        """Count a refusal that cost `weight` signature checks (at least 1)."""
        e = self.peers.get(peer)
        shared = e is None and not self._room(now_ms)
        if shared:
            e = self.overflow
        if e is None or now_ms - e[1] > self.window_ms:
            e = [0, now_ms, 0, now_ms]
            if shared:
                self.overflow = e
            else:
                self.peers[peer] = e
        e[0] += weight
        e[3] = now_ms
        if e[0] >= self.max_failures:
            e[2] = now_ms + self.penalty_ms

    def success(self, peer):
        """The peer proved possession of a token's key."""
        if peer in self.peers and self.peers[peer][2] == 0:
            del self.peers[peer]
        if peer in self.good:
            self.good.remove(peer)
        elif len(self.good) >= _GOOD:
            self.good.pop(0)
        self.good.append(peer)
