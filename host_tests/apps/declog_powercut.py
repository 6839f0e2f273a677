"""Power cuts under the decision log on a real littlefs (PROFILE sec. 6:
"a record written and flushed is never lost"). Run by
host_tests/test_declog_powercut.py in the MicroPython unix port.

usage: micropython declog_powercut.py [SEED [CAPACITY SEGMENT RECORDS]]

1. Record: format a VfsLfs2 on a RAM flash (blockdev.RAMBlockDev, ESP32
   geometry and littlefs options), then run a workload (open, RECORDS
   appends, three acks in between; a full log when CAPACITY is small) while
   logging every flash program and erase with the workload step it belongs to.
2. Cut: for every N from 1 to the number of logged operations, rebuild the
   flash as it was when power failed during operation N: operations 1..N-1
   whole, only the first k bytes of operation N (k pseudo-random, 0..all),
   nothing after. Mount it, open the log and check it against what the
   workload had been told before the cut; then append and reopen.

Prints "FAIL N: ..." lines and a closing "cuts=... failures=F" line;
exits 1 on any failure.
"""
import sys

import vfs

import blockdev
from lock.declog import DecisionLog

_BLOCKS = 48
_MNT = "/pc"
_ROOT = _MNT + "/log"


def _args(i):
    # (wall, uptime_ms, transport, permission, sub, token_hash, granted, reason)
    return (None if i % 4 == 0 else 1700000000 + i, 1000 * i, "coap" if i % 2 else "ble",
            "open", "user%d" % i, bytes([i]) * 16, i % 3 != 0, 0 if i % 3 else 23)


def _record(seq, boot, i):
    a = _args(i)
    return [seq, a[0], boot, a[1], a[2], a[3], a[4], a[5], a[6], a[7]]


class _Recorder(blockdev.RAMBlockDev):
    """Logs (step, address, data) for programs and (step, block, None) for erases."""

    def __init__(self, blocks):
        blockdev.RAMBlockDev.__init__(self, blocks)
        self.ops = []
        self.step = -1

    def program(self, addr, data):
        self.ops.append((self.step, addr, bytes(data)))
        blockdev.RAMBlockDev.program(self, addr, data)

    def erase(self, block, nbytes=None):
        self.ops.append((self.step, block, None))
        blockdev.RAMBlockDev.erase(self, block, nbytes)


class _Cfg:
    capacity = 640
    segment = 256
    records = 30
    ack_at = {}  # after append i, ack up to the seq of append j


def record():
    """Runs the workload; returns (base image, ops, steps). Each step is
    (kind, value, result, next_seq after it): kind "open" / "append"
    (value: args index) / "ack" (value: upto) / "close"."""
    dev = _Recorder(_BLOCKS)
    vfs.VfsLfs2.mkfs(dev, **blockdev.LFS_OPTIONS)
    base = bytearray(dev.image)
    dev.ops = []
    vfs.mount(vfs.VfsLfs2(dev, **blockdev.LFS_OPTIONS), _MNT)
    steps = []
    seqs = {}
    dev.step = 0
    d = DecisionLog(_ROOT, _Cfg.capacity, _Cfg.segment)
    steps.append(("open", None, d.boot, d.next_seq))
    for i in range(1, _Cfg.records + 1):
        dev.step = len(steps)
        seq = d.append(*_args(i))
        seqs[i] = d.next_seq - 1  # spent even when the record was refused
        steps.append(("append", i, seq, d.next_seq))
        if i in _Cfg.ack_at:
            upto = seqs[_Cfg.ack_at[i]]
            dev.step = len(steps)
            steps.append(("ack", upto, d.ack(upto), d.next_seq))
    dev.step = len(steps)
    d.close()
    steps.append(("close", None, None, d.next_seq))
    vfs.umount(_MNT)
    return base, dev.ops, steps


def expected(steps, s):
    """What the workload knew when power failed in step s."""
    e = {"returned": {}, "acked": 0, "acked_fly": None, "dropped": 0, "drop_fly": 0,
         "spent": 0, "fly": None, "opened": s > 0}
    for j in range(s + 1):
        kind, value, result, nxt = steps[j]
        done = j < s
        if kind == "append":
            if result is None:
                if done:
                    e["dropped"] += 1
                else:
                    e["drop_fly"] = 1
            elif done:
                e["returned"][result] = _record(result, 1, value)
            else:
                e["fly"] = _record(result, 1, value)
        elif kind == "ack":
            if done:
                e["acked"] = result
            else:
                e["acked_fly"] = result
        if done:
            e["spent"] = nxt - 1
    return e


def check(img, e, fails, n, stats):
    def bad(msg):
        fails.append("FAIL %d: %s" % (n, msg))

    dev = blockdev.RAMBlockDev(_BLOCKS, image=img)
    try:
        fs = vfs.VfsLfs2(dev, **blockdev.LFS_OPTIONS)
    except OSError as x:
        bad("littlefs does not mount: %r" % x)
        return
    vfs.mount(fs, _MNT)
    try:
        d = DecisionLog(_ROOT, _Cfg.capacity, _Cfg.segment)
        boots = (2,) if e["opened"] else (1, 2)
        if d.boot not in boots:
            bad("boot %d, want %r" % (d.boot, boots))
        if d.acked_seq not in (e["acked"], e["acked_fly"]):
            bad("acked_seq %d, want %d or %r" % (d.acked_seq, e["acked"], e["acked_fly"]))
        if d.dropped not in (e["dropped"], e["dropped"] + e["drop_fly"]):
            bad("dropped %d, want %d (+%d)" % (d.dropped, e["dropped"], e["drop_fly"]))
        recs = d.records(0, 1000)
        have = {}
        prev = d.acked_seq
        for r in recs:
            if r[0] <= prev:
                bad("seq %d after %d in records()" % (r[0], prev))
            prev = r[0]
            have[r[0]] = r
        for seq in e["returned"]:
            if seq > d.acked_seq and have.get(seq) != e["returned"][seq]:
                bad("returned record %d lost or changed: %r" % (seq, have.get(seq)))
        extra = [s for s in have if s not in e["returned"]]
        fly = e["fly"]
        if extra and (len(extra) > 1 or fly is None or have[extra[0]] != fly):
            bad("unexpected records %r (in flight: %r)" % (extra, fly))
        if fly is not None:
            stats["fly_kept" if extra else "fly_lost"] += 1
        if d.next_seq <= e["spent"] or (recs and d.next_seq <= recs[-1][0]):
            bad("next_seq %d goes back (spent %d)" % (d.next_seq, e["spent"]))
        # The log works after the cut: a new record, then a clean reopen.
        want = d.next_seq
        dropped = d.dropped
        seq = d.append(*_args(99))
        if seq is None:
            if d.dropped != dropped + 1:
                bad("refused append without counting it")
        elif seq != want:
            bad("append after reopen gave seq %d, want %d" % (seq, want))
        d.close()
        d2 = DecisionLog(_ROOT, _Cfg.capacity, _Cfg.segment)
        if d2.next_seq != want + 1 or d2.boot != d.boot + 1 or d2.dropped != d.dropped:
            bad("second reopen: next_seq %d boot %d dropped %d" % (d2.next_seq, d2.boot, d2.dropped))
        if seq is not None:
            got = d2.records(seq - 1, 1)
            if got != [_record(seq, d.boot, 99)]:
                bad("record appended after the cut not read back: %r" % got)
        d2.close()
    except Exception as x:  # report any crash for this N and go on with the next
        bad("%s: %s" % (type(x).__name__, x))
    finally:
        vfs.umount(_MNT)


def main():
    a = sys.argv
    seed = int(a[1]) if len(a) > 1 else 1
    if len(a) > 4:
        _Cfg.capacity, _Cfg.segment, _Cfg.records = int(a[2]), int(a[3]), int(a[4])
    r = _Cfg.records
    # Three acks, each a few records behind the newest.
    _Cfg.ack_at = {r * 3 // 10: r * 3 // 10 - 4, r * 6 // 10: r * 6 // 10 - 4, r * 9 // 10: r * 9 // 10 - 2}
    base, ops, steps = record()
    img = bytearray(base)
    flash = blockdev.RAMBlockDev(_BLOCKS, image=img)
    fails = []
    rnd = seed * 2654435761 & 0xFFFFFFFF or 1
    progs = erases = partial = 0
    stats = {"fly_kept": 0, "fly_lost": 0}
    for n in range(1, len(ops) + 1):
        s, where, data = ops[n - 1]
        rnd ^= (rnd << 13) & 0xFFFFFFFF
        rnd ^= rnd >> 17
        rnd ^= (rnd << 5) & 0xFFFFFFFF
        cut = bytearray(img)
        torn = blockdev.RAMBlockDev(_BLOCKS, image=cut)
        if data is None:
            erases += 1
            k = rnd % (flash.block_size + 1)
            torn.erase(where, k)
            flash.erase(where)
        else:
            progs += 1
            k = rnd % (len(data) + 1)
            torn.program(where, data[:k])
            flash.program(where, data)
        if 0 < k < (flash.block_size if data is None else len(data)):
            partial += 1
        check(cut, expected(steps, s), fails, n, stats)
    for f in fails[:30]:
        print(f)
    appends = [st for st in steps if st[0] == "append"]
    print("capacity=%d segment=%d seed=%d" % (_Cfg.capacity, _Cfg.segment, seed))
    print("cuts during an append that stored its record: record kept %d, absent %d"
          % (stats["fly_kept"], stats["fly_lost"]))
    print("cuts=%d progs=%d erases=%d partial=%d steps=%d appends=%d acks=%d dropped=%d failures=%d"
          % (len(ops), progs, erases, partial, len(steps), len(appends),
             len([st for st in steps if st[0] == "ack"]),
             len([st for st in appends if st[2] is None]), len(fails)))
    sys.exit(1 if fails else 0)


main()
