"""`lockctl logs`: the lock's decision log as a table (PROFILE sec. 6).

Reads `GET /log?after=SEQ` pages (4 records each) with an admin token, as
the phone: the token is uploaded once and then named by its id with a fresh
proof for every page (lockctl.cache), over CoAPS by default. A record is
CBOR [seq, wall|null, boot, uptime_ms, transport, permission, sub,
token_id, granted, reason]; the reason number is the firmware's
(firmware/trust/reasons.py), shown by name, with its meaning below the
table. `--follow` keeps polling for new records.

Every page read is itself a logged decision (permission admin); those of
this command are left out of the table unless `--all`.
"""
import asyncio
import sys
import time

import cbor2

from . import cose_host as ch
from . import reasons

EPILOG = """\
examples:
  lockctl token --bundle mylock --scope admin --key admin.pem --out admin.cwt
  lockctl logs --bundle mylock --token admin.cwt --key admin.pem
  lockctl logs --bundle mylock --token admin.cwt --key admin.pem --tail 20 --follow
  lockctl logs --bundle mylock --scheme coap --token admin.cwt --key admin.pem --after 120

The table: seq, time (UTC, or boot and uptime while the lock's clock is
unsynced), transport, permission, sub (the token's subject; for a summary
of token-less requests, +N: how many went unwritten), token id (first 8 hex
digits), granted, reason (name; meanings below the table). Exit status 0,
1 when the lock refused the admin token, 2 when it could not be reached.
"""

RETRIES = 4
RETRY_PAUSE_S = 0.5
COLUMNS = ("seq", "time", "transport", "permission", "sub", "token", "granted", "reason")
WIDTHS = (6, 20, 9, 10, 12, 8, 7, 0)


def _time(rec):
    wall, boot, up = rec[1], rec[2], rec[3]
    if isinstance(wall, int):
        return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(wall))
    return "boot %s +%.1fs" % (boot, (up or 0) / 1000)


def _sub(v):
    if v is None:
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        return "+%d" % v if v else "-"
    s = str(v)
    return s if len(s) <= 12 else s[:11] + "~"


def row(rec):
    """The table cells of one record."""
    tid = rec[7]
    return (str(rec[0]), _time(rec), str(rec[4]), str(rec[5]), _sub(rec[6]),
            tid.hex()[:8] if isinstance(tid, (bytes, bytearray)) else "-",
            "yes" if rec[8] else "no", reasons.name(rec[9]))


def line(cells):
    out = []
    for c, w in zip(cells, WIDTHS):
        out.append(c.rjust(w) if w == WIDTHS[0] else (c.ljust(w) if w else c))
    return "  ".join(out).rstrip()


def header():
    return line(COLUMNS) + "\n" + line(tuple("-" * max(len(c), w) for c, w in zip(COLUMNS, WIDTHS)))


class LogReader:
    """Pages of the log through one phone session. `own`: records of this
    reader's own page reads (granted admin decisions of its token) are
    counted in `hidden` instead of returned."""

    def __init__(self, phone, token, by_id, cache=None, show_own=False, can_id=True):
        self.p = phone
        self.tid = ch.token_id(token)
        self.by_id = by_id
        self.can_id = can_id  # not in PSK mode: the session names the token
        self.cache = cache
        self.show_own = show_own
        self.first_own = None
        self.hidden = 0
        self.retries = 0
        self.body = None

    async def _get(self, after):
        # A page costs the lock a few KB of heap; on the ESP32's 56 KiB with
        # a DTLS session up it may not have them at once (5.03 no_memory,
        # or 5.00): try again after a pause, as the lock's own advice is.
        for tries in range(RETRIES):
            out = await self.p.act("log", query=("after=%d" % after,), by_id=self.by_id)
            if out.code not in ("5.03", "5.00"):
                break
            self.retries += 1
            await asyncio.sleep(RETRY_PAUSE_S)
        return out

    async def page(self, after):
        """(records, shown, at_end) after `after`; raises Refusal."""
        out = await self._get(after)
        if not out.ok and self.by_id and out.code == "4.01" and out.error == 1 and self.cache is not None:
            # The lock no longer holds the admin token: upload it again.
            self.cache.forget()
            up = await self.p.upload()
            if not up.ok:
                raise Refusal(up, "authz-info")
            self.by_id = False
            out = await self._get(after)
        if not out.ok:
            raise Refusal(out, "admin")
        if self.cache is not None and not self.by_id:
            self.cache.remember()
        if self.can_id:
            self.by_id = True   # stored now: its id and a proof from here on
        body = cbor2.loads(out.payload)
        self.body = body
        if self.first_own is None:
            self.first_own = body["next_seq"] - 1
        recs = body.get("records") or []
        at_end = not recs or recs[-1][0] >= body["next_seq"] - 1
        shown = []
        for r in recs:
            if (not self.show_own and r[0] >= self.first_own and r[5] == "admin" and r[8]
                    and r[7] == self.tid):
                self.hidden += 1
                continue
            shown.append(r)
        return recs, shown, at_end


class Refusal(Exception):
    def __init__(self, outcome, permission):
        super().__init__(outcome.describe())
        self.outcome = outcome
        self.permission = permission


def cmd_logs(a):
    from .cache import TokenCache
    from .cli import _coap_cache_path, _die, _load_key, _read, explain_refusal
    from .client import Target, TargetError
    token = _read(a.token, "token")
    key = None if a.psk else _load_key(a.key, False)
    try:
        t = Target(a)
    except TargetError as e:
        _die(str(e))
    if not t.device_id:
        _die("--bundle or --device-id names the lock (a proof of possession signs its device id)")
    try:
        ch.token_id(token)
    except Exception:
        _die("%s is not a token (lockctl token --scope admin ... --out %s)" % (a.token, a.token))
    cache = None
    if not t.psk_mode:
        cache = TokenCache(_coap_cache_path(a), t.device_id, token)
    seen_reasons = []
    state = {"after": a.after, "rows": 0, "header": False}

    def show(recs):
        if not state["header"]:
            print(header())
            state["header"] = True
        for r in recs:
            print(line(row(r)), flush=True)
            state["rows"] += 1
            nm = reasons.name(r[9])
            if not r[8] and nm not in seen_reasons:
                seen_reasons.append(nm)
                if a.follow:
                    print("        %s" % reasons.words(nm), flush=True)

    async def session():
        if t.psk_mode:
            async with t.plain_phone(token) as pp:
                up = await pp.upload()
                if not up.ok:
                    raise Refusal(up, "authz-info")
        async with t.phone(None if t.psk_mode else token, key) as p:
            by_id = cache is not None and cache.holds()
            if cache is not None and not by_id:
                up = await p.upload()
                if not up.ok:
                    raise Refusal(up, "authz-info")
            rd = LogReader(p, token, by_id, cache, a.all, can_id=not t.psk_mode)
            if a.tail is not None and state["after"] == 0 and not state["header"]:
                await rd.page(0)
                state["after"] = max(0, rd.body["next_seq"] - 1 - a.tail)
            first = not state["header"]
            while True:
                recs, shown, at_end = await rd.page(state["after"])
                if first:
                    b = rd.body
                    print("lock %s at %s: boot %d, next seq %d, acknowledged up to %d, %d dropped"
                          % (t.device_id, t.describe(), b["boot"], b["next_seq"], b["acked"], b["dropped"]))
                    first = False
                if recs:
                    state["after"] = recs[-1][0]
                show(shown)
                if at_end:
                    if not a.follow:
                        return rd
                    await asyncio.sleep(a.interval)

    import aiocoap.error
    net = t.network_errors()
    while True:
        try:
            rd = asyncio.run(session())
            break
        except Refusal as e:
            if (e.outcome.code in ("5.00", "5.03") and not state["header"] and t.plain_fallback()):
                print("lockctl: the lock could not serve its log over CoAPS now (%s: out of heap with a "
                      "DTLS session up?); its bundle serves plain CoAP too: reading it at %s"
                      % (e.outcome.code, t.describe()), file=sys.stderr, flush=True)
                continue
            print("%s: %s" % ("authz-info" if e.permission == "authz-info" else "log", e.outcome.describe()))
            explain_refusal(e.outcome, t, token, e.permission, a.bundle, log_hint=False)
            if e.outcome.code.startswith("5.") and t.scheme == "coaps" and t.cfg.get("coap", {}).get("enabled"):
                print("  (this lock serves plain CoAP too: --scheme coap leaves it the heap a DTLS "
                      "session takes)", file=sys.stderr)
            if e.outcome.code == "4.03" or e.outcome.error == 2:
                print("  (reading the log needs a token with scope 'admin')", file=sys.stderr)
            sys.exit(1)
        except net as e:
            msg = str(e) or e.__class__.__name__
            if not state["header"] and t.plain_fallback():
                print("lockctl: no answer over CoAPS (%s); its bundle serves plain CoAP too: reading "
                      "the log at %s" % (msg, t.describe()), file=sys.stderr, flush=True)
                continue
            if not a.follow or not state["header"]:
                _die("no answer from %s (%s)" % (t.describe(), msg))
            print("lockctl: lost the lock (%s); trying again in %.0f s" % (msg, a.interval),
                  file=sys.stderr, flush=True)
            time.sleep(a.interval)
        except aiocoap.error.Error as e:
            _die("%s: %s" % (t.describe(), e))
    if not state["header"]:
        print(header())
    if rd.hidden:
        print("(%d read(s) of the log by this command not shown; --all shows them)" % rd.hidden)
    if seen_reasons:
        print("reasons:")
        for nm in seen_reasons:
            print("  %s" % reasons.words(nm))
    sys.exit(0)


def add_parser(sub):
    """The `logs` subcommand of lockctl."""
    import argparse
    from .client import add_target_args
    s = sub.add_parser("logs", help="show the lock's decision log (needs an admin token)",
                       description="Show the lock's decision log as a table (needs a token with "
                                   "scope 'admin').", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--token", required=True, help="a token with scope 'admin' (lockctl token --scope admin)")
    s.add_argument("--key", default="admin.pem", help="the PoP key of that token (default admin.pem)")
    s.add_argument("--after", type=int, default=0, help="show records after this seq (default: all)")
    s.add_argument("--tail", type=int, default=None, help="show only the last N records")
    s.add_argument("--follow", "-f", action="store_true", help="keep polling for new records (Ctrl-C ends)")
    s.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --follow (default 2)")
    s.add_argument("--all", action="store_true", help="also show this command's own reads of the log")
    s.add_argument("--cache", help="token cache file (default TOKEN.coap-cache.json, shared with lockctl coap)")
    s.add_argument("--no-cache", action="store_true", help="always upload the full token")
    add_target_args(s)
    s.set_defaults(fn=cmd_logs)
    return s
