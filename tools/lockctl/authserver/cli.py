"""`lockctl as ...`: the bench authorization server (issue 10).

Wire it into lockctl with `authserver.add_parser(subparsers)`.
"""
import argparse
import asyncio
import os
import sys
import time

from .. import cose_host as ch
from .home import HomeError, init, open_home
from .policy import (PolicyError, Rule, format_hours, format_instant, format_weekdays, parse_hours,
                     parse_instant, parse_weekdays)
from .store import StoreError

ENV_DIR = "LOCKCTL_AS_DIR"

EPILOG = """\
examples:
  lockctl as init asdir                       # keys, CA, database (SQLite) in asdir/
  export LOCKCTL_AS_DIR=asdir                 # or --dir asdir on every command
  lockctl as lock add front-door --provision mylock --clock system
  lockctl as user add alice --role owner
  lockctl as phone add alice-phone --user alice --key alice.pem --create-key
  lockctl as policy add --user alice --lock front-door --permission unlock,lock,status,admin
  lockctl as user add bob
  lockctl as policy add --user bob --lock front-door --permission unlock \\
          --weekdays mon-fri --hours 08:00-18:00 --tz Europe/Berlin
  lockctl as policy list
  lockctl as seed --lock front-door --keys phones/ --tz Europe/Berlin   # Alice, Bob, Trudy
  lockctl as serve                            # CoAPS :5784 (locks, phones), CoAP :5783 (phones)
  lockctl as request --client-id alice-phone --key phones/alice.pem --aud front-door \\
          --cert phones/alice.crt --ca asdir/as-cert.pem --scope 'unlock status' --out alice.cwt
  lockctl as revoke --lock front-door --user bob
  lockctl as audit --lock front-door
"""


def _die(msg):
    print("lockctl as: error: %s" % msg, file=sys.stderr)
    sys.exit(2)


def _home(a):
    d = a.dir or os.environ.get(ENV_DIR)
    if not d:
        _die("which AS? give --dir DIR or set %s (create one with: lockctl as init DIR)" % ENV_DIR)
    try:
        return open_home(d)
    except HomeError as e:
        _die(str(e))


def _table(headers, rows):
    rows = [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = "  ".join("%-*s" % (w, h) for w, h in zip(widths, headers))
    print(line.rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join("%-*s" % (w, v) for w, v in zip(widths, r)).rstrip())
    if not rows:
        print("(none)")


def _run(fn):
    def wrapped(a):
        try:
            return fn(a)
        except (StoreError, PolicyError, HomeError) as e:
            _die(str(e))
        except (ValueError, OverflowError) as e:
            _die("bad input: %s" % e)
        except OSError as e:
            _die("%s: %s" % (getattr(e, "filename", None) or "file", e.strerror or e))
    return wrapped


# -- commands -------------------------------------------------------------------
@_run
def cmd_init(a):
    home = init(a.dir_pos, issuer=a.issuer, kid=a.kid, db=a.db, server_names=a.server_name, force=a.force,
                coap_port=a.coap_port, coaps_port=a.coaps_port, token_ttl_s=a.token_ttl)
    print("AS ready in %s: issuer %s, kid %s, database %s" % (a.dir_pos, home.issuer, home.cfg["kid"],
                                                               home.db_url.split("://")[0]))
    print("as-key.pem signs tokens and certificates: keep it secret")
    home.close()


@_run
def cmd_user_add(a):
    home = _home(a)
    home.store.add_user(a.name, a.role)
    print("user %s (%s) added" % (a.name, a.role))


@_run
def cmd_user_list(a):
    home = _home(a)
    _table(["id", "user", "role", "created"],
           [[u["id"], u["name"], u["role"], format_instant(u["created_s"], "UTC")] for u in home.store.users()])


@_run
def cmd_phone_add(a):
    home = _home(a)
    if a.key:
        if os.path.exists(a.key):
            with open(a.key, "rb") as f:
                pub = ch.pub_bytes(ch.key_from_pem(f.read()))
        elif a.create_key:
            k = ch.gen_key()
            fd = os.open(a.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(ch.key_to_pem(k))
            pub = ch.pub_bytes(k)
            print("created phone key %s" % a.key, file=sys.stderr)
        else:
            _die("no key at %s (--create-key makes one)" % a.key)
    elif a.pub:
        try:
            pub = bytes.fromhex(a.pub)
        except ValueError:
            _die("--pub must be hex (65-byte uncompressed P-256 point)")
    else:
        _die("give the phone's key: --key PEM or --pub HEX")
    home.store.add_phone(a.client_id, a.user, pub)
    print("phone %s of %s added (key %s...)" % (a.client_id, a.user, pub[1:9].hex()))
    if a.cert_out:
        _write_phone_cert(home, a.client_id, a.cert_out)


def _write_phone_cert(home, client_id, path):
    der = home.issue_phone_cert(client_id)
    with open(path, "wb") as f:
        f.write(der)
    print("certificate for %s (its DTLS client certificate for the token endpoint over CoAPS): %s" % (
        client_id, path))


@_run
def cmd_phone_cert(a):
    home = _home(a)
    _write_phone_cert(home, a.client_id, a.out)


@_run
def cmd_phone_list(a):
    home = _home(a)
    _table(["id", "client_id", "user", "key", "certificate", "enabled"],
           [[p["id"], p["client_id"], p["user"], bytes(p["public_key"])[1:9].hex() + "...",
             p["cert_serial"][:16] if p["cert_serial"] else None, "yes" if p["enabled"] else "no"]
            for p in home.store.phones()])


@_run
def cmd_lock_add(a):
    home = _home(a)
    exi = None if a.exi is None else a.exi == "on"
    if a.provision:
        if not a.device_id:
            _die("--provision needs the lock's device id")
        from ..provision import ProvisionError
        try:
            home.provision_lock(a.provision, a.device_id, exi=exi, coap_port=a.coap_port,
                                coaps_port=a.coaps_port, plain_coap=a.plain_coap, clock=a.clock,
                                as_uri=a.as_uri, bind=a.bind, force=a.force, uplink_host=a.uplink_host,
                                say=print)
        except ProvisionError as e:
            _die(str(e))
        device = a.device_id
        print("lock %s provisioned in %s; its certificate is issued and recorded by this AS; "
              "uplink %s" % (device, a.provision, home.uplink_uri(a.uplink_host)[0]))
    elif a.bundle:
        device = home.import_bundle(a.bundle, exi=exi)
        if a.device_id and a.device_id != device:
            _die("bundle %s is lock %r, not %r" % (a.bundle, device, a.device_id))
        print("lock %s registered from %s" % (device, a.bundle))
    else:
        _die("give --provision OUT (a new bundle) or --bundle DIR (one this AS issued)")
    lk = home.store.lock(device)
    print("tokens for it carry %s" % ("exi (it has no trusted clock)" if lk["exi"] else "exp"))


@_run
def cmd_lock_adopt(a):
    home = _home(a)
    device = home.adopt_lock(a.bundle)
    print("lock %s adopted from %s: its certificate (issued by its current AS) is recorded here, and "
          "that AS's CA is trusted for it on the uplink" % (device, a.bundle))
    if a.record:
        raw = home.rebind_record(a.uplink_host)
        with open(a.record, "wb") as f:
            f.write(raw)
        print("rebind record for it: %s (%d bytes): POST it to the lock's /rebind with an admin token of "
              "its current AS, or, that AS gone, put it in the bundle as rebind.cbor and boot the lock "
              "with the pairing button held (simulator: lockctl sim BUNDLE --presence)" % (a.record, len(raw)))


@_run
def cmd_lock_list(a):
    home = _home(a)
    rows = []
    for lk in home.store.locks():
        up = home.store.last_upload(lk["id"])
        rows.append([lk["id"], lk["device_id"], lk["cert_serial"][:16], "exi" if lk["exi"] else "exp",
                     home.store.exi_seq(lk["id"]), lk["log_epoch"],
                     format_instant(up["received_s"], "UTC") if up else "never", up["dropped"] if up else None])
    _table(["id", "device_id", "cert serial", "tokens", "exi seq", "log epoch", "last upload", "dropped"], rows)


def _policy_rows(rules):
    return [[r.id, r.user, r.lock, r.permission, format_weekdays(r.weekdays),
             format_hours(r.start_min, r.end_min), format_instant(r.valid_from_s, r.tz),
             format_instant(r.valid_until_s, r.tz), r.tz] for r in rules]


_POLICY_HEADERS = ["id", "user", "lock", "permission", "days", "hours", "from", "until", "tz"]


@_run
def cmd_policy_add(a):
    home = _home(a)
    timed = a.weekdays or a.hours or (a.valid_from and not a.valid_from.startswith(("now", "@"))) or (
        a.until and not a.until.startswith(("now", "@")))
    if timed and not a.tz:
        _die("--weekdays, --hours and local --from/--until need --tz (an IANA zone, e.g. Europe/Berlin "
             "or UTC): a policy's time zone is always explicit")
    tz = a.tz or "UTC"
    start, end = parse_hours(a.hours)
    frm = parse_instant(a.valid_from, tz) if a.valid_from else None
    until = parse_instant(a.until, tz) if a.until else None
    ids = []
    perms = [p for p in a.permission.replace(",", " ").split() if p]
    if not perms:
        _die("--permission: one or more permissions (unlock, lock, status, admin, trunk...)")
    for perm in perms:
        rule = Rule(perm, parse_weekdays(a.weekdays), start, end, frm, until, tz)
        ids.append(home.store.add_policy(a.user, a.lock, rule))
    _table(_POLICY_HEADERS, _policy_rows([r for r in home.store.rules(a.user, a.lock) if r.id in ids]))


@_run
def cmd_policy_list(a):
    home = _home(a)
    _table(_POLICY_HEADERS, _policy_rows(home.store.rules(a.user, a.lock)))


@_run
def cmd_policy_remove(a):
    home = _home(a)
    home.store.remove_policy(a.id)
    print("policy %d removed" % a.id)


@_run
def cmd_revoke(a):
    home = _home(a)
    lock = home.store.lock(a.lock)
    targets = []           # (token_id, cti)
    if a.token_id:
        targets.append((bytes.fromhex(a.token_id), None))
    if a.cti:
        targets.append((None, bytes.fromhex(a.cti)))
    if a.token:
        with open(a.token, "rb") as f:
            targets.append((ch.token_id(f.read()), None))
    if a.user or a.client_id:
        now = int(time.time())
        for t in home.store.tokens_of(a.user, a.lock, a.client_id):
            if t["exp_s"] is None or t["exp_s"] > now:
                targets.append((bytes(t["token_id"]), None))
    if not targets and not (a.user or a.client_id or a.exi_floor):
        _die("what to revoke? --token-id HEX, --cti HEX, --token FILE, --user NAME, --client-id ID "
             "or --exi-floor")
    new = 0
    if a.exi_floor:
        floor = home.store.exi_seq(lock["id"])
        pos = home.store.revoke(lock["id"], exi_floor=floor, reason=a.reason)
        if pos is not None:
            new += 1
            print("every exi token of %s up to sequence number %d revoked (trl position %d)" % (
                a.lock, floor, pos))
    for tid, cti in targets:
        pos = home.store.revoke(lock["id"], token_id=tid, cti=cti, reason=a.reason)
        if pos is not None:
            new += 1
            print("revoked %s %s on %s (trl position %d)" % ("token" if tid else "cti", (tid or cti).hex(),
                                                              a.lock, pos))
    print("%d new revocation(s); locks fetch them with GET /trl" % new)


@_run
def cmd_revocations(a):
    home = _home(a)
    _table(["pos", "lock", "token id / cti", "revoked", "reason"],
           [[r["pos"], r["device_id"], _what(r), format_instant(r["revoked_s"], "UTC"), r["reason"]]
            for r in home.store.revocations(a.lock)])


def _what(r):
    if r["token_id"] is not None:
        return "id " + bytes(r["token_id"]).hex()[:16] + "..."
    if r["cti"] is not None:
        return "cti " + bytes(r["cti"]).hex()
    return "exi <= %d" % r["exi_floor"]


@_run
def cmd_audit(a):
    from ..reasons import name as reason_name
    home = _home(a)
    rows = []
    for r in home.store.audit(a.lock, a.user, a.limit):
        rows.append([r["device_id"], r["seq"], format_instant(r["wall_s"], a.tz) if r["wall_s"] else "unsynced",
                     r["boot"], r["transport"], r["permission"], r["sub"],
                     {True: "grant", False: "deny", None: "-"}[r["granted"]],
                     reason_name(r["reason"]) if r["reason"] is not None else None,
                     bytes(r["token_id"]).hex()[:12] if r["token_id"] else None])
    _table(["lock", "seq", "time", "boot", "via", "permission", "sub", "decision", "reason", "token"], rows)


@_run
def cmd_seed(a):
    from . import seed
    home = _home(a)
    now = int(time.time())
    keys = seed.load(home.store, a.lock, now, a.tz)
    os.makedirs(a.keys, exist_ok=True)
    for user, key in keys.items():
        path = os.path.join(a.keys, "%s.pem" % user)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(ch.key_to_pem(key))
        print("phone key %s" % path)
        _write_phone_cert(home, user + "-phone", os.path.join(a.keys, "%s.crt" % user))
    _table(_POLICY_HEADERS, _policy_rows(home.store.rules(device_id=a.lock)))


@_run
def cmd_serve(a):
    from .server import Server
    home = _home(a)
    bind = a.bind or home.cfg["bind"]
    srv = Server(home, bind=bind, coap_port=a.coap_port, coaps_port=a.coaps_port,
                 say=lambda m: print(m, flush=True), plain=not a.no_plain)
    print("AS %s: token endpoint %scoaps://%s:%d/token (phones' certificates); uplink on the same port "
          "(locks' certificates: /audit /trl /introspect /time)" % (
              home.issuer, "coap://%s:%d/token (plain, bench) and " % (bind, srv.coap_port) if srv.coap_port
              else "", bind, srv.coaps_port), flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.close()


def cmd_request(a):
    from ..dtls import DtlsError
    from .clients import request_token, request_token_coaps
    if not os.path.exists(a.key):
        _die("no key at %s" % a.key)
    with open(a.key, "rb") as f:
        key = ch.key_from_pem(f.read())
    try:
        if a.cert:
            if not a.ca:
                _die("--cert needs --ca (the AS's as-cert.pem)")
            from cryptography import x509
            from cryptography.hazmat.primitives import serialization
            with open(a.cert, "rb") as f:
                cert = f.read()
            with open(a.ca, "rb") as f:
                ca = x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)
            port = a.port or 5784
            code, body = request_token_coaps(a.host, port, a.client_id, key, cert, ca, a.aud, a.scope,
                                             a.server_name or a.host)
        else:
            port = a.port or 5783
            code, body = asyncio.run(request_token(a.host, port, a.client_id, key, a.aud, a.scope))
    except DtlsError as e:
        _die(str(e))
    except (OSError, asyncio.TimeoutError) as e:
        _die("no answer from %s:%d (%s)" % (a.host, port, e))
    from . import tokens as T
    if code != "2.01":
        err = body.get(T.ERROR) if isinstance(body, dict) else None
        print("%s %s: %s" % (code, T.ERROR_NAMES.get(err, err), body.get(T.ERROR_DESCRIPTION)
                             if isinstance(body, dict) else body))
        sys.exit(1)
    tok = body[T.ACCESS_TOKEN]
    with open(a.out, "wb") as f:
        f.write(tok)
    print("token %s: %d bytes, token id %s, scope %r, expires in %d s" % (
        a.out, len(tok), ch.token_id(tok).hex(), body.get(T.SCOPE), body.get(T.EXPIRES_IN)))


# -- parser ---------------------------------------------------------------------
def add_parser(subparsers):
    """Add `as` and its commands to lockctl's subparsers."""
    p = subparsers.add_parser("as", help="the bench authorization server (policies, tokens, uplink)",
                              description=__doc__.splitlines()[0] + " Data in SQLite (or any SQLAlchemy "
                              "URL), policies per user, lock and permission.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="as_cmd", required=True, metavar="COMMAND")

    def cmd(name, fn, help_, parent=sub):
        s = parent.add_parser(name, help=help_, description=help_)
        s.add_argument("--dir", "-d", help="the AS directory (default $%s)" % ENV_DIR)
        s.set_defaults(fn=fn)
        return s

    s = sub.add_parser("init", help="create an AS: keys, CA certificate, database",
                       description="Create an AS directory: as-key.pem (signs tokens and certificates), "
                       "as-cert.pem (the CA locks and phones trust), the uplink's server key and "
                       "certificate, as.json, and the database.",
                       epilog="example: lockctl as init asdir --issuer https://as.example")
    s.add_argument("dir_pos", metavar="DIR")
    s.add_argument("--issuer", default="https://as.example", help="iss of the tokens")
    s.add_argument("--kid", default="as-key-1", help="kid of the AS key (text)")
    s.add_argument("--db", help="SQLAlchemy URL (default sqlite:///DIR/as.db), e.g. postgresql+psycopg://...")
    s.add_argument("--server-name", action="append", help="DNS name or IP of the uplink certificate "
                   "(repeatable; default localhost and 127.0.0.1)")
    s.add_argument("--coap-port", type=int, default=5783, help="token endpoint (plain CoAP)")
    s.add_argument("--coaps-port", type=int, default=5784, help="uplink for locks (CoAPS)")
    s.add_argument("--token-ttl", type=int, default=3600, help="longest token lifetime, seconds")
    s.add_argument("--force", action="store_true", help="replace an existing AS (new keys, empty database)")
    s.set_defaults(fn=cmd_init)

    u = sub.add_parser("user", help="add or list users").add_subparsers(dest="user_cmd", required=True)
    s = cmd("add", cmd_user_add, "add a user", u)
    s.add_argument("name")
    s.add_argument("--role", choices=("owner", "member", "guest"), default="member")
    cmd("list", cmd_user_list, "list users", u)

    ph = sub.add_parser("phone", help="add or list phones (clients and their PoP keys)").add_subparsers(
        dest="phone_cmd", required=True)
    s = cmd("add", cmd_phone_add, "register a phone: its client_id and public key", ph)
    s.add_argument("client_id")
    s.add_argument("--user", required=True)
    s.add_argument("--key", help="the phone's key (PEM; only the public part is stored)")
    s.add_argument("--create-key", action="store_true", help="create --key when missing")
    s.add_argument("--pub", help="or the public key, hex (65-byte uncompressed point)")
    s.add_argument("--cert-out", metavar="FILE", help="also issue the phone's DTLS client certificate (DER) "
                   "for the token endpoint over CoAPS")
    cmd("list", cmd_phone_list, "list phones", ph)
    s = cmd("cert", cmd_phone_cert, "issue a phone's DTLS client certificate (DER; the previous one is "
            "refused from then on)", ph)
    s.add_argument("client_id")
    s.add_argument("--out", required=True)

    lk = sub.add_parser("lock", help="add or list locks").add_subparsers(dest="lock_cmd", required=True)
    s = cmd("add", cmd_lock_add, "provision a lock under this AS (its certificate issued here), or "
            "register a bundle whose certificate this AS issued", lk)
    s.add_argument("device_id", nargs="?")
    s.add_argument("--provision", metavar="OUT", help="write a new bundle in OUT (lockctl provision)")
    s.add_argument("--bundle", help="register an existing bundle")
    s.add_argument("--exi", choices=("on", "off"), help="tokens with exi (default: on when the lock's "
                   "clock is unsynced)")
    s.add_argument("--clock", choices=("unsynced", "system", "ntp"), default="unsynced")
    s.add_argument("--coap-port", type=int, default=5683)
    s.add_argument("--coaps-port", type=int, default=5684)
    s.add_argument("--plain-coap", action="store_true")
    s.add_argument("--as-uri", help="AS URI given to phones in hints")
    s.add_argument("--bind", default="0.0.0.0", help="address the lock listens on")
    s.add_argument("--uplink-host", help="the AS's address as the lock reaches it (default: the AS's bind "
                   "address, or its first server name)")
    s.add_argument("--force", action="store_true")
    s = cmd("adopt", cmd_lock_adopt, "take over a lock another AS provisioned (rebinding, seed sec. 5.1): "
            "record its certificate, trust its CA for it, and write the rebind record that moves it here", lk)
    s.add_argument("--bundle", required=True, help="the lock's bundle (lock.json, its certificate, as-cert.pem)")
    s.add_argument("--record", metavar="OUT", help="write the rebind record (CBOR) here")
    s.add_argument("--uplink-host", help="the AS's address as the lock reaches it")
    cmd("list", cmd_lock_list, "list locks", lk)

    po = sub.add_parser("policy", help="add, list or remove policies").add_subparsers(
        dest="policy_cmd", required=True)
    s = cmd("add", cmd_policy_add, "allow a user permissions on a lock, at times", po)
    s.epilog = ("examples:\n  --permission unlock,status --weekdays mon-fri --hours 08:00-18:00 "
                "--tz Europe/Berlin\n  --permission trunk --from now --until now+2h\n"
                "  --permission unlock --from 2026-12-24T00:00 --until 2026-12-27T00:00 --tz Europe/Berlin")
    s.formatter_class = argparse.RawDescriptionHelpFormatter
    s.add_argument("--user", required=True)
    s.add_argument("--lock", required=True, help="device id")
    s.add_argument("--permission", required=True, help="one or more, comma-separated (one rule each)")
    s.add_argument("--weekdays", help="mon-fri, sat,sun, all (default all)")
    s.add_argument("--hours", help="HH:MM-HH:MM local time, [start, end); 22:00-06:00 spans midnight")
    s.add_argument("--from", dest="valid_from", help="ISO time (local to --tz unless it has an offset), "
                   "@UNIX or now[+2h]")
    s.add_argument("--until", help="same forms; exclusive")
    s.add_argument("--tz", help="IANA time zone of the rule (required with --weekdays/--hours/local times)")
    s = cmd("list", cmd_policy_list, "show policies as a table", po)
    s.add_argument("--user")
    s.add_argument("--lock")
    s = cmd("remove", cmd_policy_remove, "remove a policy by id", po)
    s.add_argument("id", type=int)

    s = cmd("revoke", cmd_revoke, "revoke tokens for a lock (the lock fetches GET /trl)")
    s.add_argument("--lock", required=True)
    s.add_argument("--token-id", help="hex, 32 bytes")
    s.add_argument("--cti", help="hex")
    s.add_argument("--token", help="a token file")
    s.add_argument("--user", help="every unexpired token of this user for the lock")
    s.add_argument("--client-id", help="every unexpired token of this phone for the lock")
    s.add_argument("--exi-floor", action="store_true", help="every exi token issued for the lock so far "
                   "(its exi floor; also what a lock whose state was damaged waits for)")
    s.add_argument("--reason")
    s = cmd("revocations", cmd_revocations, "list revocations with their trl positions")
    s.add_argument("--lock")

    s = cmd("audit", cmd_audit, "show decision records the locks uploaded")
    s.add_argument("--lock")
    s.add_argument("--user", help="records whose sub is this user")
    s.add_argument("--limit", type=int, default=50)
    s.add_argument("--tz", default="UTC", help="zone to show wall times in")

    s = cmd("seed", cmd_seed, "load the seeds' people for a lock: Alice (owner, any time), Bob "
            "(weekdays 08:00-18:00), Trudy (trunk only, the next two hours)")
    s.add_argument("--lock", required=True)
    s.add_argument("--keys", required=True, help="directory for the phones' keys (alice.pem, ...) and "
                   "certificates (alice.crt, ...)")
    s.add_argument("--tz", default="UTC", help="the office's time zone (IANA)")

    s = cmd("serve", cmd_serve, "serve the token endpoint and the locks' uplink (CoAPS, mutual "
            "certificates; plain CoAP for phones too unless --no-plain)")
    s.add_argument("--bind")
    s.add_argument("--coap-port", type=int)
    s.add_argument("--coaps-port", type=int)
    s.add_argument("--no-plain", action="store_true", help="phones over CoAPS only (their certificates)")

    s = sub.add_parser("request", help="act as a phone: ask the token endpoint for a token",
                       description="POST /token (RFC 9200 5.8) and save the token: over CoAPS with the "
                       "phone's certificate (--cert, --ca), else over plain CoAP.")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, help="default 5783 (coap), 5784 (coaps)")
    s.add_argument("--cert", help="the phone's certificate (DER, from `as phone add --cert-out`): CoAPS")
    s.add_argument("--ca", help="the AS's CA certificate (as-cert.pem) the AS must chain to")
    s.add_argument("--server-name", help="name the AS certificate must carry (default --host)")
    s.add_argument("--client-id", required=True)
    s.add_argument("--key", required=True, help="the phone's key (PEM)")
    s.add_argument("--aud", required=True, help="the lock's device id")
    s.add_argument("--scope", default="unlock status")
    s.add_argument("--out", default="phone.cwt")
    s.set_defaults(fn=cmd_request)
    return p
