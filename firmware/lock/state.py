"""Persistence of the lock's security state across reboots (PROFILE sec. 6):
revocations, the exi sequence-number windows (RFC 9200 5.10.3), stored
tokens and the uplink's cursors (PROFILE sec. 7).

File format (version 3): a CBOR sequence (RFC 8742) of small arrays,
replaced atomically (a temporary file, then a rename, which littlefs
commits atomically):

    [0, 3, flags]                         header; flags bit 0: exi blocked
    [1, token id (32 bytes)]              one per revoked token id
    [2, cti (1-64 bytes)]                 one per revoked cti
    [3, issuer, floor, [[seq, exi, boot, uptime_s, wall_s|null], ...]]
    [4, token (bytes, at most 1024), used]  one per stored token (used: it
                                          authorized a request with proof)
    [5, trl_pos, wall_s|null]             the uplink (at most one): the AS's
                                          revocation-list position applied,
                                          the last good wall time from the AS
    [9, CRC-32 of every byte before this item]

It is written and read item by item through small buffers: on the ESP32's
fragmented heap a state of several KB never needs one contiguous block.
Revocations come first, so a file damaged further on still gives them
back. `load` tells a good file from a missing and a damaged one; the caller
fails closed on a damaged one (PROFILE sec. 6). Files of versions 1 and 2
(one CBOR map; version 2 followed by a 4-byte CRC-32) are still read.
"""
import os
import struct
from binascii import crc32

from micropython import const

from trust import cbor

VERSION = const(3)
FLAG_EXI_BLOCKED = const(1)
_CHUNK = const(128)
_READ = const(1152)   # the largest item: a 1024-byte token in [4, ...]
_HASH_LEN = const(32)
_MAX_TOKEN = const(1024)

OK = "ok"
MISSING = "missing"
DAMAGED = "damaged"


class State:
    """What the file holds: flags, revoked ids and ctis (lists of bytes),
    exi windows {issuer: [floor, [[seq, exi, boot, uptime_s, wall_s], ...]]},
    stored tokens (list of (raw bytes, used))."""

    def __init__(self):
        self.flags = 0
        self.rh = []
        self.rc = []
        self.exi = {}
        self.tokens = []
        self.uplink = None  # [trl_pos, last good wall time (s) or None]


class _Writer:
    """The append/extend of a bytearray (what cbor.encode_into uses), onto a
    file through one small buffer, with a running CRC-32."""

    def __init__(self, f):
        self.f = f
        self.buf = bytearray(_CHUNK)
        self.n = 0
        self.crc = 0

    def append(self, byte):
        if self.n == _CHUNK:
            self.flush()
        self.buf[self.n] = byte
        self.n += 1

    def extend(self, data):
        mv = memoryview(data)
        i = 0
        while i < len(mv):
            if self.n == _CHUNK:
                self.flush()
            k = min(_CHUNK - self.n, len(mv) - i)
            self.buf[self.n:self.n + k] = mv[i:i + k]
            self.n += k
            i += k

    def flush(self):
        part = memoryview(self.buf)[:self.n]
        self.crc = crc32(part, self.crc)
        self.f.write(part)
        self.n = 0


def _items(f, scratch=None):
    """(item, crc of the bytes before it) for each CBOR item of the file, then
    (None, crc) at the end. Raises ValueError on an item that is ill-formed
    or larger than the read buffer."""
    buf = scratch if scratch is not None and len(scratch) >= _READ else bytearray(_READ)
    mv = memoryview(buf)[:_READ]
    n = 0
    crc = 0
    eof = False
    while True:
        if not eof and n < _READ:
            k = f.readinto(mv[n:])
            if not k:
                eof = True
            else:
                n += k
                continue
        if n == 0:
            yield None, crc
            return
        try:
            item, used = cbor.decode_prefix(mv[:n], 4, _READ)
        except cbor.CBORError:
            if eof or n == _READ:
                raise ValueError("ill-formed item")
            continue
        yield item, crc
        crc = crc32(mv[:used], crc)
        buf[:n - used] = buf[used:n]
        n -= used


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _exi_entry_ok(e):
    return (isinstance(e, list) and len(e) == 5 and _is_int(e[0]) and e[0] >= 0 and _is_int(e[1])
            and _is_int(e[2]) and _is_int(e[3]) and (e[4] is None or _is_int(e[4])))


def _take(st, item, seen_header):
    """Put one item into `st`; False if it is not a valid item."""
    if not isinstance(item, list) or not item or not _is_int(item[0]):
        return False
    kind = item[0]
    if kind == 0:
        if seen_header or len(item) != 3 or item[1] != VERSION or not _is_int(item[2]):
            return False
        st.flags = item[2]
    elif not seen_header or len(item) < 2:
        return False
    elif kind == 1:
        if len(item) != 2 or not isinstance(item[1], bytes) or len(item[1]) != _HASH_LEN:
            return False
        st.rh.append(item[1])
    elif kind == 2:
        if len(item) != 2 or not isinstance(item[1], bytes) or not 1 <= len(item[1]) <= 64:
            return False
        st.rc.append(item[1])
    elif kind == 3:
        if (len(item) != 4 or not isinstance(item[1], str) or not _is_int(item[2]) or item[2] < -1
                or not isinstance(item[3], list) or not all(_exi_entry_ok(e) for e in item[3])):
            return False
        st.exi[item[1]] = [item[2], item[3]]
    elif kind == 4:
        if (len(item) != 3 or not isinstance(item[1], bytes) or len(item[1]) > _MAX_TOKEN
                or not isinstance(item[2], bool)):
            return False
        st.tokens.append((item[1], item[2]))
    elif kind == 5:
        if (len(item) != 3 or st.uplink is not None or not _is_int(item[1]) or item[1] < 0
                or not (item[2] is None or _is_int(item[2]) and item[2] >= 0)):
            return False
        st.uplink = [item[1], item[2]]
    else:
        return False
    return True


def _from_map(d):
    """A version-1 or -2 file (one CBOR map). Its exi table had no issuer and
    no sequence numbers, so it cannot be carried over: if it had entries,
    exi tokens are blocked until the AS gives floors (fail closed)."""
    if not isinstance(d, dict) or d.get("v") not in (1, 2):
        raise ValueError("version")
    st = State()
    for h in d.get("rh", ()):
        if isinstance(h, bytes) and len(h) == _HASH_LEN:
            st.rh.append(h)
    for c in d.get("rc", ()):
        if isinstance(c, bytes) and 1 <= len(c) <= 64:
            st.rc.append(c)
    st.tokens = [(t, True) for t in d.get("tokens", ()) if isinstance(t, bytes)]
    if d.get("exi"):
        st.flags |= FLAG_EXI_BLOCKED
    return st


class StateFile:
    def __init__(self, path):
        self.path = path
        self.unread = False  # the last load ran out of heap: the file is kept, never saved over

    def load(self, scratch=None):
        """(State, status): status OK, MISSING (no file: an empty State) or
        DAMAGED (the State holds only the revocations read before the
        damage; the file is kept aside as PATH.bad). `scratch`: a bytearray
        of at least _READ bytes, idle until this returns, to read into
        instead of allocating one (a block that size may be missing on a
        fragmented heap at boot)."""
        try:
            f = open(self.path, "rb")
        except OSError:
            return State(), MISSING
        st = State()
        try:
            with f:
                first = f.read(1)
                f.seek(0)
                if first and first[0] >> 5 == 5:   # a map: version 1 or 2
                    return self._load_map(f.read()), OK
                header = done = False
                for item, crc in _items(f, scratch):
                    if done:
                        if item is not None:
                            raise ValueError("bytes after the CRC")
                        return st, OK
                    if item is None:
                        raise ValueError("no CRC item")
                    if isinstance(item, list) and len(item) == 2 and item[0] == 9:
                        if not header or item[1] != crc:
                            raise ValueError("CRC")
                        done = True
                    elif not _take(st, item, header):
                        raise ValueError("bad item")
                    header = True
        except MemoryError:
            # Not the file's fault: fail closed for this boot, and keep the
            # file as it is (`unread`: nothing may be saved over it).
            self.unread = True
        except (ValueError, OSError):
            try:
                os.rename(self.path, self.path + ".bad")
            except OSError:
                pass
        salvaged = State()
        salvaged.rh = st.rh
        salvaged.rc = st.rc
        return salvaged, DAMAGED

    def _load_map(self, raw):
        if len(raw) > 4 and struct.unpack(">I", raw[-4:])[0] == crc32(memoryview(raw)[:-4]):
            try:
                return _from_map(cbor.decode(memoryview(raw)[:-4], 6, 65536))
            except ValueError:
                pass
        return _from_map(cbor.decode(raw, 6, 65536))

    def save(self, st):
        """Write `st` (a State) atomically. Raises OSError (the old file is
        then still in place), also when the file could not be read at boot
        for lack of heap (it holds what this boot does not know)."""
        if self.unread:
            raise OSError("the state file was not read (no heap at boot): kept as it is")
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                w = _Writer(f)
                enc = cbor.encode_into
                enc([0, VERSION, st.flags], w)
                for h in st.rh:
                    enc([1, h], w)
                for c in st.rc:
                    enc([2, c], w)
                for iss in st.exi:
                    floor, entries = st.exi[iss]
                    enc([3, iss, floor, entries], w)
                for raw, used in st.tokens:
                    enc([4, raw, used], w)
                if st.uplink is not None:
                    enc([5, st.uplink[0], st.uplink[1]], w)
                w.flush()
                enc([9, w.crc], w)
                w.flush()
            os.rename(tmp, self.path)
        except MemoryError:
            raise OSError(12, "out of memory while saving the state")

    def remove_stale(self):
        """A temporary file left by a reset during save is not the state."""
        try:
            os.remove(self.path + ".tmp")
        except OSError:
            pass


def snapshot(verifier, store, uplink=None):
    """The State to save, from the verifier, the token store and the
    uplink's [trl_pos, last good wall time] (None: nothing to keep)."""
    st = State()
    st.uplink = uplink
    st.flags = FLAG_EXI_BLOCKED if verifier.exi.blocked else 0
    st.rh = list(verifier.revoked_hashes)
    st.rc = list(verifier.revoked_ctis)
    st.exi = verifier.exi.to_state()
    st.tokens = [(t.raw, store.is_used(t)) for t in store.tokens]
    return st


def restore(st, verifier, issuers):
    """Revocations and exi windows (of the `issuers` still trusted) into the
    verifier; returns the stored tokens as (raw, used) for the caller to
    verify again (keys may have changed since they were stored)."""
    for h in st.rh:
        verifier.revoked_hashes.add(h)
    for c in st.rc:
        verifier.revoked_ctis.add(c)
    verifier.exi.load({i: st.exi[i] for i in st.exi if i in issuers},
                      bool(st.flags & FLAG_EXI_BLOCKED))
    return st.tokens
