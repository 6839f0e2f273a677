"""The revocation list on flash (PROFILE sec. 6 and 7): every token id and
cti the lock holds revoked beyond the few kept in RAM, for a token
revocation list of thousands of entries on a 56 KiB heap.

The verifier keeps new revocations in two small RAM sets (saved in the state
file); when they would overflow, they are merged into this list, a sorted
file of 32-byte entries: a token id as it is, a cti as SHA-256("cti" || cti),
so both kinds share one order and one lookup. A lookup is a binary search
first over fences in RAM (the first 3 bytes of every 16th entry: 4 bytes
of RAM per 16 ids), then one read of the stride of 16 entries that may hold it into one
preallocated 512-byte buffer, searched in RAM: one read, no allocation,
whatever the list's length.

File format (`trl.bin`), replaced atomically (a temporary file, then a
rename, which littlefs commits atomically):

    b"TRL1", count (uint32 BE), CRC-32 of the entries (uint32 BE),
    flags (uint32 BE; bit 0: the entries are not sorted)
    count entries of 32 bytes, sorted unless the flag says otherwise

A file that does not check (magic, count, length or CRC) is `damaged`:
every 32-byte entry the file holds is still a revocation (a damaged one
revokes some random id, which harms nobody), and since damage may have
broken the order, the list is searched linearly from then on (one 512-byte
read per 16 entries) and merges append to it (flag "not sorted"), so no
entry is ever lost to a damaged header or a bad byte. The lock then fails
closed on its stored tokens and fetches the AS's whole list again
(lock/app.py). `clear()` (a rebinding) ends the linear mode.
"""
import os
import struct
from array import array
from binascii import crc32

import micropython
from micropython import const

from trust.reasons import REVOCATIONS_FULL, Refused

_MAGIC = b"TRL1"
_HEADER = const(16)
ENTRY = const(32)
_RUN = const(8)   # entries read or written at a time while merging
_STRIDE = const(16)  # one fence in RAM per 16 entries on flash
_UNSORTED = const(1)


@micropython.native
def _cmp(win, off, entry):
    # win[off:off + 32] against entry, as bytes compare: <0, 0, >0; no heap.
    for i in range(ENTRY):
        d = win[off + i] - entry[i]
        if d:
            return d
    return 0


def _prefix(e):
    # The first 3 bytes as an int: a small int on a 32-bit port (no heap).
    return (e[0] << 16) | (e[1] << 8) | e[2]


class RevocationList:
    def __init__(self, path, capacity=4096):
        """The list at `path` (read at once; an absent file is an empty list).
        `capacity`: entries at most (32 bytes of flash each)."""
        self.path = path
        self.capacity = capacity
        self._buf = bytearray(ENTRY)
        self._win = None  # one stride read by a lookup: made with the first entry
        self._f = None
        self._open()

    def _open(self):
        # Sets count, damaged, sorted (False: searched linearly, a damaged
        # list or merges into one) and the fences from the file.
        if self._f is not None:
            self._f.close()
            self._f = None
        self.count = 0
        self.damaged = False
        self.sorted = True
        self._fence = array("I")
        try:
            f = open(self.path, "rb")
        except OSError:
            return
        head = f.read(_HEADER)
        size = f.seek(0, 2)
        self._f = f
        held = max(0, size - _HEADER) // ENTRY
        count = crc = flags = None
        if len(head) == _HEADER and head[:4] == _MAGIC:
            count, crc, flags = struct.unpack(">III", head[4:16])
        if count is None or count != held or self._crc(held) != crc:
            # Every entry the file holds still revokes (PROFILE sec. 6);
            # their order is no longer known.
            self.damaged = True
            self.sorted = False
            self.count = held
            return
        self.count = count
        self.sorted = not flags & _UNSORTED
        if not self.sorted:
            return
        fence = array("I")
        for i in range(0, self.count, _STRIDE):
            fence.append(_prefix(self._at(i)))
        self._fence = fence

    def _crc(self, n):
        f = self._f
        f.seek(_HEADER)
        crc = 0
        buf = bytearray(ENTRY * _RUN)
        mv = memoryview(buf)
        left = n * ENTRY
        while left:
            k = f.readinto(mv[:min(left, len(buf))])
            if not k:
                break
            crc = crc32(mv[:k], crc)
            left -= k
        return crc

    def __len__(self):
        return self.count

    def _at(self, i):
        f = self._f
        f.seek(_HEADER + i * ENTRY)
        f.readinto(self._buf)
        return self._buf

    @micropython.native
    def contains(self, entry):
        """Is `entry` (32 bytes: a token id, or cti_entry(cti)) listed?
        Binary search over the fences in RAM, then in the stride (or the
        few, when prefixes tie) whose fences allow it, read whole."""
        if not self.count:
            return False
        if not self.sorted:
            return self._scan(entry)
        p = _prefix(entry)
        fence = self._fence
        # Strides [a, b) may hold it: a is the last fence < p (or 0), b the
        # first fence > p (prefixes may tie across fences).
        a, hi = 0, len(fence)
        while a < hi:
            mid = (a + hi) >> 1
            if fence[mid] < p:
                a = mid + 1
            else:
                hi = mid
        b, hi = a, len(fence)
        while b < hi:
            mid = (b + hi) >> 1
            if fence[mid] <= p:
                b = mid + 1
            else:
                hi = mid
        first = max(0, a - 1) * _STRIDE
        end = min(self.count, b * _STRIDE)
        while first < end:
            # One read brings a whole stride; the search goes on in RAM.
            n = min(end - first, _STRIDE)
            f = self._f
            f.seek(_HEADER + first * ENTRY)
            win = self._window()
            got = f.readinto(memoryview(win)[:n * ENTRY]) // ENTRY
            lo, hi = 0, got
            while lo < hi:
                mid = (lo + hi) >> 1
                c = _cmp(win, mid * ENTRY, entry)
                if c == 0:
                    return True
                if c < 0:
                    lo = mid + 1
                else:
                    hi = mid
            if got < n:
                return False
            first += n
        return False

    def _window(self):
        win = self._win
        if win is None:
            win = self._win = bytearray(ENTRY * _STRIDE)
        return win

    @micropython.native
    def _scan(self, entry):
        # Linear search: a list whose order is not known.
        f = self._f
        f.seek(_HEADER)
        win = self._window()
        mv = memoryview(win)
        left = self.count
        while left > 0:
            n = min(left, _STRIDE)
            got = f.readinto(mv[:n * ENTRY]) // ENTRY
            for k in range(got):
                if _cmp(win, k * ENTRY, entry) == 0:
                    return True
            if got < n:
                return False
            left -= n
        return False

    def add(self, entries):
        """Merge `entries` (32-byte bytes) into the list: all or none.
        Raises Refused(REVOCATIONS_FULL) beyond the capacity, or OSError
        (the old list is then in place).
        Returns how many were new."""
        new = sorted(set(bytes(e) for e in entries if not self.contains(e)))
        for e in new:
            if len(e) != ENTRY:
                raise ValueError("a revocation list entry is 32 bytes")
        if not new:
            return 0
        if self.count + len(new) > self.capacity:
            raise Refused(REVOCATIONS_FULL, "%d entries at most on flash" % self.capacity)
        tmp = self.path + ".tmp"
        n = self.count + len(new)
        try:
            with open(tmp, "wb") as out:
                out.write(bytes(_HEADER))
                crc = 0
                run = bytearray(ENTRY * _RUN)
                used = 0
                j = 0
                old = self.count
                i = 0
                cur = bytearray(ENTRY)
                keep_order = self.sorted
                while i < old or j < len(new):
                    if i < old:
                        cur[:] = self._at(i)
                    # A list whose order is not known is copied as it is,
                    # the new entries after it.
                    if j < len(new) and (i >= old or (keep_order and new[j] < cur)):
                        run[used:used + ENTRY] = new[j]
                        j += 1
                    else:
                        run[used:used + ENTRY] = cur
                        i += 1
                    used += ENTRY
                    if used == len(run):
                        out.write(run)
                        crc = crc32(run, crc)
                        used = 0
                if used:
                    out.write(memoryview(run)[:used])
                    crc = crc32(memoryview(run)[:used], crc)
                out.seek(0)
                out.write(_MAGIC + struct.pack(">III", n, crc, 0 if keep_order else _UNSORTED))
            if self._f is not None:
                self._f.close()
                self._f = None
            os.rename(tmp, self.path)
        except OSError:
            try:
                os.remove(tmp)
            except OSError:
                pass
            self._open()
            raise
        self._open()
        return len(new)

    def clear(self):
        """Forget the list (the lock moved to another AS). Raises OSError."""
        if self._f is not None:
            self._f.close()
            self._f = None
        try:
            os.remove(self.path)
        except OSError as e:
            if not (e.args and e.args[0] == 2):
                raise
        self.count = 0
        self.damaged = False
        self.sorted = True
        self._fence = array("I")

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None
