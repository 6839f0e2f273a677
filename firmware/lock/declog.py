"""Lock application: the durable, append-only decision log (PROFILE sec. 6).

Every grant or deny is appended, and is durable, before the door moves.
Records stay until the AS acknowledges them; upload is idempotent by seq.

Files in `root`:
  NNNNNNNN.log  segments, appended to and rotated at `segment_bytes`
  .boot         [boot, seq high-water mark], rewritten at every open
  .state        [seq high-water mark, acked_seq, dropped], on ack and drop
The two small files are written to NAME.tmp, flushed, then renamed over NAME
(littlefs renames atomically). Every field in them only grows, so recovery
takes the field-wise maximum of NAME and a leftover NAME.tmp.

Frame of a record (big endian):
  len u16 | seq u32 | crc32 u32 over seq+payload | payload
  payload = CBOR [seq, wall|null, boot, uptime_ms, transport, permission,
                  sub, token_hash, granted, reason]

Recovery policy at open: each segment is read from its start and trusted up
to its first bad record (short header or payload, length over the cap, CRC
mismatch, ill-formed CBOR, seq not above the previous one). Nothing after a
bad record is used: once one length field is wrong, framing of the rest of
that segment cannot be trusted. Such a segment is sealed (never appended to
again; the bad bytes are left in place and skipped at every open rather than
rewritten) and counted in `damaged`; a segment with no good record at all is
removed. The seq of anything lost shows up as a gap at the AS, and is never
handed out again: within a segment stored seqs are consecutive (a refused
or failed append seals the segment), so the bad bytes after the last good
seq g cannot hold a seq above g + bad bytes // _MIN_FRAME, and next_seq
starts above that when no good record follows (then .boot persists it).

The files are written only by this object and by one task at a time (the
shared header buffers are not reentrant).
"""
import os
import struct
from binascii import crc32

from micropython import const

from trust import cbor

_HDR = const(10)  # len u16 + seq u32 + crc32 u32
_FIELDS = const(10)  # items in a record
_MAX_PAYLOAD = const(1024)  # cap checked before a payload is read or written
_MIN_FRAME = const(21)  # header + the smallest payload (11 one-byte items)
_MAX_STATE = const(64)  # cap for .boot / .state
_SEQ_MAX = 0xFFFFFFFF  # seq is a u32 in the frame
_EIO = const(5)
_EINVAL = const(22)
_EFBIG = const(27)

# Segment index entry: [number, first seq, last seq, good bytes, file bytes, clean]
_NUM = const(0)
_FIRST = const(1)
_LAST = const(2)
_END = const(3)
_SIZE = const(4)
_CLEAN = const(5)

# CPython on a real OS needs fsync for a flush to reach the disk; MicroPython
# has no os.fsync: there f.flush() is lfs2_file_sync (littlefs) or fsync (posix).
_fsync = getattr(os, "fsync", None)


def _seg_num(name):
    # "00000042.log" -> 42; anything else -> -1
    if len(name) != 12 or name[8:] != ".log":
        return -1
    n = 0
    for c in name[:8]:
        d = ord(c) - 48
        if d < 0 or d > 9:
            return -1
        n = n * 10 + d
    return n


def _uints(v, n):
    # A stored small-file value: a list of n non-negative ints.
    if not isinstance(v, list) or len(v) != n:
        return False
    for x in v:
        if not isinstance(x, int) or isinstance(x, bool) or x < 0:
            return False
    return True


def _log_id(v, n):
    # The stored log identity: [8 bytes].
    return isinstance(v, list) and len(v) == n and isinstance(v[0], bytes) and len(v[0]) == 8


class DecisionLog:
    def __init__(self, root, capacity_bytes=65536, segment_bytes=8192, grant_reserve_bytes=None):
        if segment_bytes < 256 or capacity_bytes < segment_bytes:
            raise ValueError("segment_bytes >= 256 and capacity_bytes >= segment_bytes")
        self._root = root
        self._cap = capacity_bytes
        # PROFILE sec. 6: the last part of the capacity takes grants only, so
        # a flood of denials never leaves a grant unrecorded.
        self._deny_cap = capacity_bytes - (capacity_bytes // 8 if grant_reserve_bytes is None
                                           else grant_reserve_bytes)
        self._seg_bytes = segment_bytes
        self._whdr = bytearray(_HDR)  # frame header of appends and state files
        self._rhdr = bytearray(_HDR)  # frame header of reads
        self._f = None  # open append handle of self._cur
        self._cur = None  # index entry appended to, None: next append starts a segment
        self._segs = []
        self._seg_hi = -1  # highest segment number seen
        self.used_bytes = 0
        self.damaged = 0
        try:
            os.stat(root)
        except OSError:
            os.mkdir(root)
        boot = hwm = 0
        for v in self._load(".boot", 2):
            boot = max(boot, v[0])
            hwm = max(hwm, v[1])
        self.acked_seq = 0
        self.dropped = 0
        for v in self._load(".state", 3):
            hwm = max(hwm, v[0])
            self.acked_seq = max(self.acked_seq, v[1])
            self.dropped = max(self.dropped, v[2])
        hwm = max(hwm, self.acked_seq)
        last_seq, last_boot = self._scan(hwm)
        # The largest boot seen in a record is a floor too, in case .boot was lost.
        self.boot = max(boot, last_boot) + 1
        # seq never goes back, even after every record was acked and deleted.
        self.next_seq = max(hwm, last_seq) + 1
        self._save(".boot", [self.boot, self.next_seq - 1])
        # The log's identity: 8 random bytes made with the log, uploaded with
        # its records, so the AS can tell a log that starts over at seq 1 (a
        # wiped flash) from one it already holds (PROFILE sec. 7).
        self.log_id = None
        for v in self._load(".id", 1, _log_id):
            self.log_id = v[0]
        if self.log_id is None:
            self.log_id = os.urandom(8)
            self._save(".id", [self.log_id])
        # Appends continue the last segment only where its seqs stay
        # consecutive (not after a refused record or a recovered gap).
        last = self._segs[-1] if self._segs else None
        if (last is not None and last[_CLEAN] and last[_SIZE] < segment_bytes
                and last[_LAST] + 1 == self.next_seq):
            self._cur = last

    # -- public API ---------------------------------------------------------

    def append(self, wall, uptime_ms, transport, permission, sub, token_hash, granted, reason, reserve=None):
        """Append one decision; returns its seq once it is durable, or None
        when the log is full (the seq is consumed and `dropped` counted);
        records that may not use the grant reserve (`reserve` False; by
        default denials) find it full an eighth of the capacity earlier.
        Raises OSError when it cannot be stored: the caller then denies
        (PROFILE sec. 6)."""
        seq = self.next_seq
        if seq > _SEQ_MAX:
            raise OSError(_EFBIG)
        rec = [seq, wall, self.boot, uptime_ms, transport, permission, sub, token_hash,
               True if granted else False, reason]
        try:
            payload = cbor.encode(rec)
        except ValueError:
            raise OSError(_EINVAL)
        if len(payload) > _MAX_PAYLOAD:
            raise OSError(_EFBIG)
        # From here the seq is spent: a record that is not stored leaves a gap
        # the AS can see.
        self.next_seq = seq + 1
        size = _HDR + len(payload)
        if reserve is None:
            reserve = granted
        if self.used_bytes + size > (self._cap if reserve else self._deny_cap):
            # Full: keep the oldest unacknowledged records, count the rest
            # (PROFILE sec. 6). The count is persisted with the seq it spent;
            # the segment is sealed so that its seqs stay consecutive.
            self.dropped += 1
            self._close_file()
            self._cur = None
            self._save_state()
            return None
        self._write(seq, payload, size)
        return seq

    def records(self, after_seq=0, limit=16):
        """Up to `limit` decoded records with seq > after_seq, oldest first.
        Acknowledged records are never returned."""
        out = []
        after = max(after_seq, self.acked_seq)
        for seg in self._segs:
            if len(out) >= limit:
                break
            if seg[_LAST] <= after:
                continue
            with open(self._path(seg[_NUM]), "rb") as f:
                prev = seg[_FIRST] - 1
                pos = 0
                while pos < seg[_END] and len(out) < limit:
                    rec, n = self._next(f, prev, after)
                    if n <= 0:
                        # Went bad after it was scanned: stop this segment as
                        # the scan at the next open will.
                        break
                    pos += n
                    prev = self._rseq
                    if rec is not None:
                        out.append(rec)
        return out

    def pending(self):
        """Is a stored record not yet acknowledged?"""
        return bool(self._segs) and self._segs[-1][_LAST] > self.acked_seq

    def raw_into(self, buf, pos, end, limit):
        """For the uplink (PROFILE sec. 7): copy the CBOR payloads of the
        oldest unacknowledged records, as stored (each is the record's CBOR
        array), into buf[pos:end], as many whole ones as fit, at most
        `limit`; nothing is decoded and nothing allocated but the file
        handle. Returns (records, new pos, seq of the last one or 0).
        A record whose CRC fails is not sent, nor what follows it in its
        segment (as records() and the scan at the next open)."""
        n = 0
        last = 0
        after = self.acked_seq
        mv = memoryview(buf)
        h = self._rhdr
        for seg in self._segs:
            if n >= limit:
                break
            if seg[_LAST] <= after:
                continue
            with open(self._path(seg[_NUM]), "rb") as f:
                done = 0
                prev = seg[_FIRST] - 1
                while done < seg[_END] and n < limit:
                    if f.readinto(h) != _HDR:
                        break
                    size, seq, crc = struct.unpack_from(">HII", h, 0)
                    if size == 0 or size > _MAX_PAYLOAD or seq <= prev:
                        break
                    prev = seq
                    done += _HDR + size
                    if seq <= after:
                        f.seek(done)
                        continue
                    if pos + size > end:
                        return n, pos, last
                    part = mv[pos:pos + size]
                    if f.readinto(part) != size or crc32(part, crc32(memoryview(h)[2:6])) != crc:
                        break  # went bad since the scan: the rest of this segment is not trusted
                    pos += size
                    n += 1
                    last = seq
        return n, pos, last

    def ack(self, upto_seq):
        """The AS has everything <= upto_seq: persist that, then delete the
        segments it covers entirely. Returns acked_seq."""
        upto = min(upto_seq, self.next_seq - 1)
        if upto > self.acked_seq:
            old = self.acked_seq
            self.acked_seq = upto
            try:
                self._save_state()
            except OSError:
                self.acked_seq = old
                raise
        self._purge()
        return self.acked_seq

    def close(self):
        self._close_file()

    # -- internals ----------------------------------------------------------

    def _path(self, num):
        return "%s/%08d.log" % (self._root, num)

    def _close_file(self):
        f = self._f
        self._f = None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass  # the segment is sealed or deleted by the caller

    def _next(self, f, prev, after=-1):
        # Reads one frame. Returns (record, frame bytes) with record None when
        # its seq <= after (not decoded); (None, 0) at a clean end of file;
        # (None, -1) at a bad record. The seq read is left in self._rseq.
        h = self._rhdr
        got = f.readinto(h)
        if not got:
            return None, 0
        if got != _HDR:
            return None, -1
        n, seq, crc = struct.unpack_from(">HII", h, 0)
        if n == 0 or n > _MAX_PAYLOAD or seq <= prev:
            return None, -1
        payload = f.read(n)
        if len(payload) != n or crc32(payload, crc32(memoryview(h)[2:6])) != crc:
            return None, -1
        self._rseq = seq
        if seq <= after:
            return None, _HDR + n
        try:
            rec = cbor.decode(payload)
        except ValueError:
            return None, -1
        if not isinstance(rec, list) or len(rec) != _FIELDS or rec[0] != seq:
            return None, -1
        return rec, _HDR + n

    def _scan(self, hwm):
        # Rebuild the segment index from the files; returns (the highest seq
        # that may have been handed out, the last boot seen in a record).
        nums = []
        for name in os.listdir(self._root):
            n = _seg_num(name)
            if n >= 0:
                nums.append(n)
        nums.sort()
        prev = 0
        last_boot = 0
        floor = 0  # highest seq the bad bytes after the last good record can hold
        for num in nums:
            self._seg_hi = num
            path = self._path(num)
            size = os.stat(path)[6]
            first = 0
            end = 0
            rec = None
            with open(path, "rb") as f:
                while True:
                    r, n = self._next(f, prev)
                    if n <= 0:
                        break
                    rec = r
                    prev = r[0]
                    if not first:
                        first = prev
                    end += n
            clean = n == 0
            if first:
                floor = 0  # every seq lost before a good record is below it
            if not clean:
                self.damaged += 1
                base = prev if first else max(prev, hwm)
                floor = max(floor, base + (size - end) // _MIN_FRAME)
            if rec is not None and isinstance(rec[2], int) and rec[2] > last_boot:
                last_boot = rec[2]
            if not first or prev <= self.acked_seq:
                # Nothing readable, or all acknowledged (an ack cut short by a
                # reset): the space is free.
                os.remove(path)
                continue
            self._segs.append([num, first, prev, end, size, clean])
            self.used_bytes += size
        return max(prev, floor), last_boot

    def _write(self, seq, payload, size):
        cur = self._cur
        if cur is not None and cur[_SIZE] + size > self._seg_bytes:
            self._close_file()
            cur = self._cur = None
        num = cur[_NUM] if cur is not None else self._seg_hi + 1
        h = self._whdr
        struct.pack_into(">HII", h, 0, len(payload), seq, 0)
        struct.pack_into(">I", h, 6, crc32(payload, crc32(memoryview(h)[2:6])))
        try:
            f = self._f
            if f is None:
                f = self._f = open(self._path(num), "ab")
            if f.write(h) != _HDR or f.write(payload) != len(payload):
                raise OSError(_EIO)
            # On littlefs flush() commits the file (lfs2_file_sync): the record
            # is durable when append returns (PROFILE sec. 6).
            f.flush()
            if _fsync is not None:
                _fsync(f.fileno())
        except OSError:
            self._close_file()
            # Part of the frame may be in the file: never append after it.
            if cur is None:
                self._seg_hi = num
                try:
                    os.remove(self._path(num))
                except OSError:
                    pass  # a torn first record is removed at the next open
            else:
                cur[_CLEAN] = False
                self._cur = None
            raise
        if cur is None:
            self._seg_hi = num
            cur = self._cur = [num, seq, seq, 0, 0, True]
            self._segs.append(cur)
        cur[_LAST] = seq
        cur[_END] += size
        cur[_SIZE] += size
        self.used_bytes += size

    def _purge(self):
        # Delete the oldest segments whose every record is acknowledged.
        while self._segs and self._segs[0][_LAST] <= self.acked_seq:
            seg = self._segs[0]
            if seg is self._cur:
                self._close_file()
                self._cur = None
            try:
                os.remove(self._path(seg[_NUM]))
            except OSError:
                return  # retried by the next ack or open
            self._segs.pop(0)
            self.used_bytes -= seg[_SIZE]

    def _save_state(self):
        self._save(".state", [self.next_seq - 1, self.acked_seq, self.dropped])

    def _save(self, name, value):
        # Write-temp-then-rename: littlefs makes the rename atomic.
        payload = cbor.encode(value)
        path = self._root + "/" + name
        tmp = path + ".tmp"
        h = self._whdr
        struct.pack_into(">I", h, 0, crc32(payload))
        f = open(tmp, "wb")
        try:
            f.write(memoryview(h)[:4])
            f.write(payload)
            f.flush()
            if _fsync is not None:
                _fsync(f.fileno())
        finally:
            f.close()
        os.rename(tmp, path)

    def _load(self, name, n, valid=_uints):
        # The values among NAME and a leftover NAME.tmp that `valid` takes.
        out = []
        path = self._root + "/" + name
        for p in (path, path + ".tmp"):
            try:
                with open(p, "rb") as f:
                    data = f.read(_MAX_STATE + 1)
            except OSError:
                continue
            if len(data) < 5 or len(data) > _MAX_STATE:
                continue
            body = memoryview(data)[4:]
            if crc32(body) != struct.unpack_from(">I", data, 0)[0]:
                continue
            try:
                v = cbor.decode(body)
            except ValueError:
                continue
            if valid(v, n):
                out.append(v)
        return out
