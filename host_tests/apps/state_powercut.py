"""Power cuts under the lock's security state on a real littlefs (PROFILE
sec. 2 "Revocation": acknowledged only once durable; sec. 6 "Lock state":
written atomically, a damaged or lost state fails closed). Run by
host_tests/test_state_powercut.py in the simulator's MicroPython.

usage: micropython state_powercut.py PLAN.json

The plan (JSON, written by the test, which holds the AS and client keys)
gives the lock configuration, the tokens (raw, token id, cti, issuer, exi
sequence number) and a workload: steps
  ["upload", name, granted?]           POST /authz-info
  ["unlock", name, granted?]           proof of possession for a stored token
  ["inline", name, granted?]           the token in the Bearer option, with proof
  ["revoke", {"ids": [names], "ctis": [names], "exi": {issuer: n}}, acked?]
                                       POST /revoke: the admin's proof, then the revocation
A proof needs the client's key, which stays in the test: the app prints
"SIGN <token name> <challenge hex>" and reads the signature (hex) from stdin.

1. Record: format a VfsLfs2 on a RAM flash (blockdev.RAMBlockDev, ESP32
   geometry and littlefs options), boot a real LockApp on it (wall clock
   synced, a clock the app drives: one second per step), run the workload
   through the app's Authorizer as the CoAP resources do, and log every
   flash program and erase with the step it belongs to and the state save
   it is part of (StateFile.save is wrapped to tag them).
2. Cut: for the flash operations chosen (every one inside the first state
   save and inside the first revocation, the rest evenly spread up to the
   plan's `max_cuts`), rebuild the flash as it was when power failed during
   operation N: operations 1..N-1 whole, only the first k bytes of N (k
   pseudo-random, 0..all; an erase cut short leaves the rest of its block
   as it was), nothing after. Mount it, boot a fresh LockApp on it with the
   wall clock unsynced and check against what the workload had been told
   before the cut:
   (a) every token whose revocation was acknowledged is refused (REVOKED)
       and is not in the store; its id / cti is in the verifier's lists;
   (b) an exi token whose first receipt was acknowledged (its upload or use
       granted) is refused (no new lifetime: without a clock it cannot be
       within its exi across a reboot), stored or uploaded again; every exi
       token at or below an acknowledged floor is refused; on a copy of the
       same image booted with the wall clock synced, such a token may only
       be granted within its exi from its first receipt;
   (c) the boot does not crash; its state is OK (everything acknowledged
       present: revocations, floors, exi windows) or DAMAGED (fail closed:
       exi blocked, no stored token, a STATE_DAMAGED record "state"/"local"
       of this boot in the log); MISSING only on a first boot;
   then the lock works on: the AS's floors for every issuer are
   acknowledged, a fresh exi token is granted, and a second boot reads an
   OK state that still refuses everything above and the fresh token.
The plan's "mutant" runs the workload on a broken StateFile.save instead
("skip_saves": nothing written after the first save; "remove_first": the
old file removed before the new one is written), so the test can show that
these checks fail when the state is not durable or not atomic.
Prints "FAIL ..." lines, figures, and a closing
"cuts=... checked=... failures=F" line; exits 1 on any failure.
"""
import json
import os
import sys
from binascii import hexlify, unhexlify

import vfs

import blockdev
from lock import config, state
from lock.actuator import SimActuator
from lock.app import LockApp
from lock.clock import Clock
from trust import cbor, cose, pop, reasons

_BLOCKS = blockdev.BLOCKS
_MNT = "/flash"
_ROOT = _MNT + "/lock"           # where boards/unix/main.py keeps the lock's files
_LFS = blockdev.LFS_OPTIONS
_STEP_MS = 1000
_PEER = b"\x7f\x00\x00\x02"      # a raw IPv4 address, as resources._peer_id gives
_REPLAY_WALL_AFTER = 30          # synced replay: the wall clock this long after the run

_REC = [None]                    # the recording device while the workload runs


class _Recorder(blockdev.RAMBlockDev):
    """Logs (step, save, address, data) for programs and (step, save, block,
    None) for erases; `save` is the ordinal of the state save in progress
    (1 for the first one), 0 outside a save."""

    def __init__(self, blocks):
        blockdev.RAMBlockDev.__init__(self, blocks)
        self.ops = []
        self.step = -1
        self.save = 0
        self.saves = 0

    def program(self, addr, data):
        self.ops.append((self.step, self.save, addr, bytes(data)))
        blockdev.RAMBlockDev.program(self, addr, data)

    def erase(self, block, nbytes=None):
        self.ops.append((self.step, self.save, block, None))
        blockdev.RAMBlockDev.erase(self, block, nbytes)


_real_save = state.StateFile.save


_MUTANT = [None]


def _tagged_save(self, st):
    dev = _REC[0]
    if dev is None:
        return _real_save(self, st)
    dev.saves += 1
    dev.save = dev.saves
    try:
        # Mutants of the firmware, for the test to show that the checks
        # catch them: saves that write nothing after the first one (an
        # acknowledgement before the state is durable), and a save that
        # removes the old file first (not atomic).
        if _MUTANT[0] == "skip_saves" and dev.saves > 1:
            return None
        if _MUTANT[0] == "remove_first":
            try:
                os.remove(self.path)
            except OSError:
                pass
        return _real_save(self, st)
    finally:
        dev.save = 0


state.StateFile.save = _tagged_save

# The replay boots hundreds of locks that check the same few signatures: a
# signature that verified once is not checked again (the verifier's own
# logic around it, revocation first, runs every time).
_real_verify = cose.verify_sign1
_verified = set()


def _memo_verify(s, pub):
    k = bytes(pub) + bytes(s.signature) + bytes(s.protected_raw) + bytes(s.payload)
    if k in _verified:
        return
    _real_verify(s, pub)
    _verified.add(k)


def _sign(name, challenge):
    print("SIGN %s %s" % (name, hexlify(challenge).decode()))
    line = sys.stdin.readline().strip()
    if not line:
        raise SystemExit("no signature from the test for " + name)
    return unhexlify(line)


class _Plan:
    def __init__(self, d):
        self.cfg = config.Config(d["cfg"])
        self.wall = d["wall"]
        self.steps = d["steps"]
        self.max_cuts = d.get("max_cuts", 0)
        self.seed = d.get("seed", 1)
        _MUTANT[0] = d.get("mutant")
        self.admin = d["admin"]          # a name: the admin token a revocation is posted with
        self.fresh = d["fresh"]          # a name: exi token above every floor the AS gives
        self.as_floors = d["as_floors"]  # {issuer: highest exi number issued} (without `fresh`)
        self.tok = {}
        for name, t in d["tokens"].items():
            t = dict(t)
            t["raw"] = unhexlify(t["raw"])
            t["id"] = unhexlify(t["id"])
            t["cti"] = unhexlify(t["cti"]) if t.get("cti") else None
            self.tok[name] = t


def _clock(ticks, wall=None):
    c = Clock(lambda: ticks[0], lambda a, b: a - b)
    if wall is not None:
        c.set_wall(wall)
    return c


def _boot(cfg, clock, said):
    act = SimActuator(clock.uptime_ms, cfg.relock_ms)
    return LockApp(cfg, _ROOT, act, clock, said.append), act


def _status(said):
    for line in said:
        if line.startswith("state: "):
            return line[7:].split(";")[0]
    return None


def record(plan):
    """Runs the workload; returns (base image, ops, results). results[i]:
    [kind, arg, acked, reason, wall] of step i (step 0: the first boot)."""
    dev = _Recorder(_BLOCKS)
    vfs.VfsLfs2.mkfs(dev, **_LFS)
    base = bytearray(dev.image)
    dev.ops = []
    vfs.mount(vfs.VfsLfs2(dev, **_LFS), _MNT)
    _REC[0] = dev
    ticks = [0]
    clock = _clock(ticks, plan.wall)
    said = []
    dev.step = 0
    app, act = _boot(plan.cfg, clock, said)
    results = [["boot", None, _status(said) == state.MISSING, None, clock.wall()]]
    authz = app.authz
    nonces = {}
    dev_id = plan.cfg.device_id
    for i, (kind, arg, want) in enumerate(plan.steps, 1):
        ticks[0] += _STEP_MS
        act.poll()
        dev.step = i
        reason = None
        if kind == "upload":
            d = authz.post_token(plan.tok[arg]["raw"], "coap", _PEER)
            ok, reason = d.granted, d.reason
            if ok:
                nonces[arg] = authz.nonce(_PEER)   # the cnonce of the 2.01
        elif kind in ("unlock", "inline"):
            t = plan.tok[arg]
            nonce = nonces.pop(arg, None) if kind == "unlock" else None
            if nonce is None:
                nonce = authz.nonce(_PEER)         # the cnonce of a 4.01
            proof = cbor.encode([nonce, _sign(arg, pop.challenge(dev_id, nonce, "unlock", t["id"]))])
            d = authz.decide("unlock", "coap", _PEER, t["raw"] if kind == "inline" else None,
                             proof, None, act.ready)
            ok, reason = d.granted, d.reason
            if ok:
                act.unlock()
        elif kind == "revoke":
            # POST /revoke as the resource serves it: the admin's proof of
            # possession, a logged decision, then the revocation.
            nonce = authz.nonce(_PEER)
            adm = plan.tok[plan.admin]
            proof = cbor.encode([nonce, _sign(plan.admin, pop.challenge(dev_id, nonce, "admin", adm["id"]))])
            d = authz.decide("admin", "coap", _PEER, None, proof)
            if not d.granted:
                print("FAIL record step %d: admin refused: %s" % (i, reasons.name(d.reason)))
            try:
                authz.revoke([plan.tok[n]["id"] for n in arg.get("ids", ())],
                             [plan.tok[n]["cti"] for n in arg.get("ctis", ())], arg.get("exi"))
                ok = True
            except reasons.Refused as e:
                ok, reason = False, e.reason
        else:
            raise ValueError("step kind " + kind)
        if ok != want:
            print("FAIL record step %d %s %s: %s (%s), plan says %s"
                  % (i, kind, arg, ok, reasons.name(reason or 0), want))
        results.append([kind, arg, ok, reason, clock.wall()])
    dev.step = len(results)
    app.log.close()
    _REC[0] = None
    vfs.umount(_MNT)
    return base, dev.ops, results


class _Acked:
    """What the workload had been told before step s."""

    def __init__(self, plan, results, s):
        self.rev_ids = set()
        self.rev_ctis = set()
        self.floors = {}
        self.exi = {}     # name -> wall clock of its first presentation
        self.first_save = s > 0   # the boot's state save returned
        seen = {}
        for j in range(1, s):
            kind, arg, ok, _, wall = results[j]
            if kind == "revoke":
                if ok:
                    self.rev_ids.update(arg.get("ids", ()))
                    self.rev_ctis.update(arg.get("ctis", ()))
                    for iss, n in arg.get("exi", {}).items():
                        self.floors[iss] = max(self.floors.get(iss, -1), n)
                continue
            t = plan.tok[arg]
            if t.get("seq") is None:
                continue
            seen.setdefault(arg, wall)
            if ok:
                self.exi.setdefault(arg, seen[arg])

    def revoked(self, plan):
        return sorted(self.rev_ids | self.rev_ctis)

    def below_floor(self, plan):
        return sorted(n for n, t in plan.tok.items()
                      if t.get("seq") is not None and t["seq"] <= self.floors.get(t["iss"], -1))


def check(plan, img, results, s, synced, fails, n, stats):
    step = results[s] if s < len(results) else ["end", None]

    def bad(msg):
        fails.append("FAIL cut %d (step %d %s %s%s): %s"
                     % (n, s, step[0], step[1] if step[1] is not None else "",
                        ", clock synced" if synced else "", msg))

    dev = blockdev.RAMBlockDev(_BLOCKS, image=img)
    try:
        fs = vfs.VfsLfs2(dev, **_LFS)
    except OSError as x:
        bad("littlefs does not mount: %r" % x)
        return
    vfs.mount(fs, _MNT)
    e = _Acked(plan, results, s)
    app = app2 = None
    try:
        ticks = [0]
        wall = results[-1][4] + _REPLAY_WALL_AFTER if synced else None
        clock = _clock(ticks, wall)
        said = []
        app, act = _boot(plan.cfg, clock, said)
        status = _status(said)
        if not synced:
            stats[status] = stats.get(status, 0) + 1
            if status == state.DAMAGED and e.first_save:
                stats["damaged_after_first_save"] += 1
        authz, v, boot = app.authz, app.verifier, app.log.boot
        try:
            os.stat(_ROOT + "/state.cbor.tmp")
            bad("a temporary state file left after the boot")
        except OSError:
            pass
        mine = [r for r in app.log.records(0, 10000) if r[2] == boot]
        marks = [r for r in mine if r[9] == reasons.STATE_DAMAGED]
        # (c) the boot's state: OK, or fail-closed and said so.
        if status == state.OK:
            if marks or v.exi.blocked:
                bad("state ok but STATE_DAMAGED logged %r / exi blocked %r" % (marks, v.exi.blocked))
            for iss, f in e.floors.items():
                got = v.exi.issuers.get(iss, [-1])[0]
                if got < f:
                    bad("acknowledged exi floor %s=%d lost (floor %d)" % (iss, f, got))
            for name in e.exi:
                t = plan.tok[name]
                w = v.exi.issuers.get(t["iss"])
                if w is None or (t["seq"] not in w[1] and t["seq"] > w[0]):
                    bad("acknowledged first receipt of %s (seq %d) lost: %r" % (name, t["seq"], w))
        elif status == state.DAMAGED:
            if not v.exi.blocked or len(app.store):
                bad("damaged state but exi blocked %r, %d stored token(s)" % (v.exi.blocked, len(app.store)))
            if not [r for r in marks if r[5] == "state" and r[4] == "local" and not r[8]]:
                bad("damaged state without a STATE_DAMAGED state/local record: %r" % mine)
        elif status == state.MISSING:
            if boot != 1 or e.first_save:
                bad("state missing at boot %d after the first save returned" % boot)
        else:
            bad("no state line at boot: %r" % said)
        # (a) acknowledged revocations.
        for name in e.rev_ids:
            if plan.tok[name]["id"] not in v.revoked_hashes:
                bad("acknowledged revocation of the id of %s lost" % name)
        for name in e.rev_ctis:
            if plan.tok[name]["cti"] not in v.revoked_ctis:
                bad("acknowledged revocation of the cti of %s lost" % name)
        for name in e.revoked(plan):
            t = plan.tok[name]
            if app.store.get(t["id"]) is not None:
                bad("revoked %s restored into the store" % name)
            d = authz.post_token(t["raw"], "coap", _PEER)
            if d.granted or d.reason != reasons.REVOKED:
                bad("revoked %s uploaded: granted %r reason %s" % (name, d.granted, reasons.name(d.reason)))
        # (b) no new lifetime for an exi token, nothing at or below a floor.
        now = clock.wall()
        for name in sorted(e.exi):
            t = plan.tok[name]
            if name in e.rev_ids or name in e.rev_ctis:
                continue
            if app.store.get(t["id"]) is not None:
                d = authz.decide("unlock", "coap", _PEER, t["id"])
                if d.reason not in (reasons.EXI_EXPIRED, reasons.STATE_DAMAGED) and (
                        not synced or now - e.exi[name] >= t["exi"]):
                    bad("stored exi token %s named by its id: %s" % (name, reasons.name(d.reason)))
            d = authz.post_token(t["raw"], "coap", _PEER)
            if d.granted:
                if not synced:
                    bad("exi token %s, first receipt acknowledged, accepted again after the cut" % name)
                elif now - e.exi[name] >= t["exi"]:
                    bad("exi token %s accepted %d s after its first receipt (exi %d)"
                        % (name, now - e.exi[name], t["exi"]))
                else:
                    stats["synced_within_exi"] += 1
            elif d.reason not in (reasons.EXI_EXPIRED, reasons.STATE_DAMAGED):
                bad("exi token %s refused for %s" % (name, reasons.name(d.reason)))
        for name in e.below_floor(plan):
            d = authz.post_token(plan.tok[name]["raw"], "coap", _PEER)
            if d.granted or d.reason not in (reasons.EXI_EXPIRED, reasons.STATE_DAMAGED, reasons.REVOKED):
                bad("%s at or below an acknowledged floor: granted %r reason %s"
                    % (name, d.granted, reasons.name(d.reason)))
        if synced:
            return
        # The lock works on: the AS gives its floors, a fresh exi token is
        # granted; a second boot reads an OK state that refuses it (no clock).
        try:
            authz.revoke((), (), plan.as_floors)
        except reasons.Refused as x:
            bad("floors after the cut not acknowledged: %s" % x)
        fresh = plan.tok[plan.fresh]
        d = authz.post_token(fresh["raw"], "coap", _PEER)
        if not d.granted or v.exi.blocked:
            bad("fresh exi token after the floors: %s, blocked %r" % (reasons.name(d.reason), v.exi.blocked))
        app.log.close()
        app = None
        said = []
        ticks2 = [0]
        app2, _ = _boot(plan.cfg, _clock(ticks2), said)
        if _status(said) != state.OK:
            bad("second boot after the cut: %r" % said)
        for name in e.revoked(plan) + [plan.fresh]:
            d = app2.authz.post_token(plan.tok[name]["raw"], "coap", _PEER)
            if d.granted:
                bad("second boot grants %s" % name)
    except Exception as x:  # report any crash for this cut and go on with the next
        sys.print_exception(x)
        bad("%s: %s" % (type(x).__name__, x))
    finally:
        for a in (app, app2):
            if a is not None:
                try:
                    a.log.close()
                except Exception:
                    pass
        vfs.umount(_MNT)


def _choose(ops, results, max_cuts):
    """Cut points (1-based op numbers): every one inside the first state save
    and inside the first revocation, the others spread evenly."""
    must = set()
    first_revoke = None
    for i, r in enumerate(results):
        if r[0] == "revoke":
            first_revoke = i
            break
    for n in range(1, len(ops) + 1):
        s, save = ops[n - 1][0], ops[n - 1][1]
        if save == 1 or s == first_revoke:
            must.add(n)
    rest = [n for n in range(1, len(ops) + 1) if n not in must]
    room = max(0, max_cuts - len(must)) if max_cuts else len(rest)
    if room >= len(rest):
        pick = rest
    else:
        pick = [rest[(i * len(rest)) // room] for i in range(room)]
    return must, set(pick)


def _per_kind(ops, results):
    """{kind: [steps, erases, state-save erases, programs]} over the run."""
    out = {}
    for r in results:
        out.setdefault(r[0], [0, 0, 0, 0])[0] += 1
    for s, save, _, data in ops:
        k = out[results[s][0]]
        if data is None:
            k[1] += 1
            if save:
                k[2] += 1
        else:
            k[3] += 1
    return out


def main():
    with open(sys.argv[1]) as f:
        plan = _Plan(json.load(f))
    base, ops, results = record(plan)
    cose.verify_sign1 = _memo_verify
    must, pick = _choose(ops, results, plan.max_cuts)
    img = bytearray(base)
    flash = blockdev.RAMBlockDev(_BLOCKS, image=img)
    fails = []
    rnd = plan.seed * 2654435761 & 0xFFFFFFFF or 1
    stats = {"damaged_after_first_save": 0, "synced_within_exi": 0}
    checked = partial = synced_checked = 0
    for n in range(1, len(ops) + 1):
        s, save, where, data = ops[n - 1]
        rnd ^= (rnd << 13) & 0xFFFFFFFF
        rnd ^= rnd >> 17
        rnd ^= (rnd << 5) & 0xFFFFFFFF
        chosen = n in must or n in pick
        if chosen:
            cut = bytearray(img)
            torn = blockdev.RAMBlockDev(_BLOCKS, image=cut)
            if data is None:
                k = rnd % (flash.block_size + 1)
                torn.erase(where, k)
            else:
                k = rnd % (len(data) + 1)
                torn.program(where, data[:k])
            if 0 < k < (flash.block_size if data is None else len(data)):
                partial += 1
            copy = bytearray(cut) if checked % 4 == 0 else None
            check(plan, cut, results, s, False, fails, n, stats)
            if copy is not None:
                check(plan, copy, results, s, True, fails, n, stats)
                synced_checked += 1
            checked += 1
        if data is None:
            flash.erase(where)
        else:
            flash.program(where, data)
    # The whole run, uncut: the workload's end state.
    check(plan, bytearray(img), results, len(results), False, fails, len(ops) + 1, stats)
    for f in fails[:40]:
        print(f)
    kinds = _per_kind(ops, results)
    for kind in ("boot", "upload", "unlock", "inline", "revoke"):
        if kind in kinds:
            c, er, ser, pr = kinds[kind]
            print("per %s: %d step(s), flash erases %.2f (state file %.2f), programs %.1f"
                  % (kind, c, er / c, ser / c, pr / c))
    saves = {}
    for op in ops:
        if op[1]:
            saves.setdefault(op[1], [0, 0])[0 if op[3] is None else 1] += 1
    if saves:
        print("state saves: %d, flash erases per save %.2f, programs per save %.1f"
              % (len(saves), sum(v[0] for v in saves.values()) / len(saves),
                 sum(v[1] for v in saves.values()) / len(saves)))
    print("first save: %d flash operations, all cut; first revocation: %d, all cut"
          % (len([o for o in ops if o[1] == 1]),
              len([n for n in must if ops[n - 1][1] != 1])))
    print("outcomes: ok=%d damaged=%d missing=%d damaged_after_first_save=%d; synced boots %d, "
          "exi tokens granted within their exi %d"
          % (stats.get(state.OK, 0), stats.get(state.DAMAGED, 0), stats.get(state.MISSING, 0),
             stats["damaged_after_first_save"], synced_checked, stats["synced_within_exi"]))
    print("cuts=%d checked=%d partial=%d steps=%d failures=%d"
          % (len(ops), checked, partial, len(results) - 1, len(fails)))
    sys.exit(1 if fails else 0)


main()
