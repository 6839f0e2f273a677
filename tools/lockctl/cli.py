"""lockctl: provision locks, mint tokens (the AS), act as the phone, read a
lock's decision log, run the simulator. `lockctl COMMAND --help` shows each
command's options and examples."""
import argparse
import asyncio
import os
import shlex
import sys
import time

from . import __version__
from . import cose_host as ch
from . import interp
from . import reasons
from .provision import ProvisionError, load_bundle, provision

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BUNDLE = os.path.join(ROOT, "boards", "unix", "default_bundle")

MAIN_EPILOG = """\
a first lock on the simulator (run `lockctl sim` in a terminal of its own):
  lockctl provision --out mylock --device-id front-door --plain-coap --bind 127.0.0.1
  lockctl sim mylock
  lockctl token --bundle mylock --scope 'unlock status' --key phone.pem --out phone.cwt
  lockctl coap --bundle mylock --token phone.cwt --key phone.pem unlock
  lockctl coap --bundle mylock --token phone.cwt --key phone.pem status
  lockctl token --bundle mylock --scope admin --key admin.pem --out admin.cwt
  lockctl logs --bundle mylock --token admin.cwt --key admin.pem

exit status: 0 done (a grant), 1 the lock refused, 2 a usage error or no lock
reached.
"""


def _die(msg):
    print("lockctl: error: %s" % msg, file=sys.stderr)
    sys.exit(2)


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        _die("cannot read %s %s: %s" % (what, path, e.strerror))


def _say(msg=""):
    print(msg, file=sys.stderr, flush=True)


# provision ------------------------------------------------------------------

CLOCK_NOTE = """\
clock: "unsynced" (as an ESP32 until the AS uplink gives it trusted time):
  the lock refuses tokens that rely on exp or nbf (reason clock_unsynced) and
  accepts exi tokens; `lockctl token --bundle %(b)s` mints exi tokens for it.
  On the simulator, `lockctl sim %(b)s --clock system` trusts the host clock
  instead (the bundle keeps "unsynced": a board stays fail-closed)."""


def cmd_provision(a):
    try:
        provision(a.out, a.device_id, issuer=a.issuer, kid=a.kid, coap_port=a.coap_port,
                  coaps_port=a.coaps_port, plain_coap=a.plain_coap, allow_bearer=a.allow_bearer,
                  as_uri=a.as_uri, bind=a.bind, clock=a.clock, relock_ms=a.relock_ms, force=a.force)
    except ProvisionError as e:
        _die(str(e))
    print("bundle ready in %s (keep as-key.pem secret: it mints tokens for this lock)" % a.out)
    if a.clock != "system":
        print(CLOCK_NOTE % {"b": a.out} if a.clock == "unsynced" else
              'clock: "ntp" (unauthenticated NTP on the board; the simulator has no NTP and runs '
              "unsynced): `lockctl token` mints exi tokens for it, which work either way.")
    print("next: lockctl sim %s" % a.out)


# token ----------------------------------------------------------------------

def _load_key(path, create):
    if os.path.exists(path):
        try:
            return ch.key_from_pem(_read(path, "key"))
        except ValueError:
            _die("%s is not a PEM private key" % path)
    if not create:
        _die("no key at %s" % path)
    k = ch.gen_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(ch.key_to_pem(k))
    _say("created client key %s" % path)
    return k


def next_exi_seq(bundle):
    """The next exi sequence number of this (AS, lock) pair: the counter in
    BUNDLE/exi-seq, raised and written (atomically) before it is used, so a
    number is never issued twice."""
    path = os.path.join(bundle, "exi-seq")
    try:
        with open(path) as f:
            n = int(f.read().strip() or "0")
    except FileNotFoundError:
        n = 0
    except ValueError:
        _die("%s: not a number; the exi sequence cannot go on safely" % path)
    n += 1
    with open(path + ".tmp", "w") as f:
        f.write("%d\n" % n)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    return n


DEFAULT_LIFETIME_S = 3600


def cmd_token(a):
    try:
        cfg, as_key = load_bundle(a.bundle)
    except ProvisionError as e:
        _die(str(e))
    if as_key is None:
        _die("bundle %s has no as-key.pem (the AS key stays with whoever mints tokens)" % a.bundle)
    ask = cfg["as_keys"][0]
    now = int(time.time())
    clock = cfg.get("clock", "unsynced")
    exi = a.exi
    if clock != "system" and exi is None and a.exp_in is None and not a.no_exp:
        # RFC 9200 5.10.3: for a lock without a trusted clock the AS gives
        # a lifetime counted from first receipt. exp stays in too, so the
        # token also works on a lock whose clock is set.
        exi = DEFAULT_LIFETIME_S
        _say('the lock of %s has no trusted clock ("clock": "%s"): minting an exi token '
             "(valid %d s from the lock's first receipt; exp too, for when its clock is set). "
             "After the lock restarts it refuses exi tokens it saw before: mint a new one."
             % (a.bundle, clock, exi))
    elif clock != "system" and exi is None:
        _say("WARNING: the lock of %s has no trusted clock (\"clock\": \"%s\"): it refuses this token "
             "(%s). Leave out --exp-in/--no-exp (or give --exi N) for a token it accepts."
             % (a.bundle, clock, "clock_unsynced" if not a.no_exp else "no_expiry"))
    claims = {1: a.iss or ask["issuer"], 3: a.aud or cfg["device_id"], 6: now, 9: a.scope}
    if a.sub:
        claims[2] = a.sub
    if not a.no_exp:
        claims[4] = now + (a.exp_in if a.exp_in is not None else DEFAULT_LIFETIME_S)
    if a.nbf_in is not None:
        claims[5] = now + a.nbf_in
    if exi is not None:
        claims[40] = exi
    if a.cti:
        claims[7] = _hex(a.cti, "--cti")
    elif exi is not None:
        # RFC 9200 5.10.3 / PROFILE sec. 2: an exi token's cti is the AS's
        # next sequence number for this lock, kept beside the AS key.
        claims[7] = ch.seq_cti(next_exi_seq(a.bundle))
    else:
        claims[7] = os.urandom(8)
    if a.psk:
        secret = os.urandom(16)
        psk_id = os.urandom(8)
        claims[8] = {2: ch.encrypt0_key(bytes.fromhex(cfg["as_lock_key"]), psk_id, secret)}
        # The phone needs both for its DTLS handshake; they are the token's
        # own (a new pair per token), never the bundle's keys.
        _say("psk identity %s key %s" % (psk_id.hex(), secret.hex()))
    elif not a.bearer:
        client = _load_key(a.key, True)
        claims[8] = {1: ch.cose_key_ec2(client)}
    tok = ch.make_sign1(claims, as_key, kid=bytes.fromhex(ask["kid"]) if ask.get("kid") else None,
                        tag=61 if a.cwt_tag else 18)
    with open(a.out, "wb") as f:
        f.write(tok)
    life = []
    if 4 in claims:
        life.append("exp in %d s" % (claims[4] - now))
    if 40 in claims:
        life.append("exi %d s, sequence %d" % (claims[40], int.from_bytes(claims[7], "big")))
    print("token %s: %d bytes, token id %s, scope %r, %s, %s" % (
        a.out, len(tok), ch.token_id(tok).hex(), a.scope,
        "bearer" if a.bearer else ("psk" if a.psk else "pop key " + a.key),
        ", ".join(life) or "no expiry"))


def _hex(value, name):
    try:
        return bytes.fromhex(value)
    except ValueError:
        _die("%s must be hex, got %r" % (name, value))


# coap -----------------------------------------------------------------------

def explain_refusal(out, target, token=None, permission=None, bundle=None, say=_say, log_hint=True):
    """Say in words why the lock refused (`out`: a client.Outcome): what
    the code and Error option mean, the likely reason from the phone's own
    check of the token against the bundle, and where the exact reason is
    (the lock's decision log: CoAP carries only the code and Error option)."""
    say("  refused: %s" % reasons.outcome_words(out.code, out.error))
    if out.code == "4.29":
        say("  %s" % reasons.words("locked_out"))
        say("    what to do: %s" % reasons.hint("locked_out"))
        return
    likely = []
    if token is not None and target.cfg:
        try:
            likely = reasons.diagnose(token, target.cfg, permission)
        except Exception:
            likely = []
    if out.error is not None:
        # Only what fits the lock's answer (a scope refusal is not a clock one).
        likely = [r for r in likely if reasons.ERRORS.get(r, 1) == out.error]
    if likely:
        say("  likely, checking the token against %s:" % (bundle or "the bundle"))
    for r in likely:
        say("    %s" % reasons.words(r))
        h = reasons.hint(r, shlex.quote(bundle) if bundle else None)
        if r == "scope_insufficient" and permission:
            h = "mint a token whose --scope includes %r" % permission
        if h:
            say("      what to do: %s" % h)
    if log_hint and (out.code.startswith("4.") or out.code.startswith("5.")):
        b = " --bundle %s" % shlex.quote(bundle) if bundle else ""
        say("  the exact reason is in the lock's decision log: lockctl logs%s --token admin.cwt "
            "--key admin.pem" % b)
        if not os.path.exists("admin.cwt"):
            say("    (admin.cwt: lockctl token%s --scope admin --key admin.pem --out admin.cwt)" % b)


def _coap_cache_path(a):
    if a.no_cache or not a.token:
        return None
    return a.cache or a.token + ".coap-cache.json"


def cmd_coap(a):
    from .cache import TokenCache
    from .client import ACTIONS, Target, TargetError
    token = key = None
    if a.token:
        token = _read(a.token, "token")
    if a.key and os.path.exists(a.key):
        key = _load_key(a.key, False)
    try:
        t = Target(a)
    except TargetError as e:
        _die(str(e))
    if a.action == "upload" and not token:
        _die("upload needs --token")
    body = _read(a.payload, "payload") if a.payload else b""
    if a.action in ("revoke", "rebind") and not body:
        _die("%s needs --payload FILE (its CBOR body)" % a.action)
    if token is not None and key is not None and not t.device_id:
        _die("--bundle or --device-id names the lock (a proof of possession signs its device id)")
    psk_mode = t.psk_mode
    permission = ACTIONS[a.action][2] if a.action in ACTIONS else None
    # The phone keeps the token the lock holds and sends its id after the
    # first grant (lockctl.cache, as `lockctl ble` does). PSK mode needs
    # none: the session is bound to the stored token.
    cache = None
    if token is not None and key is not None and not psk_mode and not a.inline and a.action in ACTIONS:
        try:
            cache = TokenCache(_coap_cache_path(a), t.device_id, token)
        except Exception:
            cache = None  # not a COSE_Sign1: the lock will say so

    def refused(out, perm):
        explain_refusal(out, t, token, perm, a.bundle)

    async def upload_plain():
        # PSK mode (RFC 9202 sec. 3.3.1): the lock learns the PSK from the
        # token, so the token goes to /authz-info over plain CoAP first; the
        # DTLS session keyed by it is then bound to it (no PoP inside CoAP).
        async with t.plain_phone(token) as p:
            up = await p.upload()
            print("authz-info (coap:%d): %s" % (t.coap_port, up.describe()))
            if not up.ok:
                refused(up, "authz-info")
            return up.ok

    async def go():
        if psk_mode and token and not a.inline and a.action != "discover":
            ok = await upload_plain()
            if not ok or a.action == "upload":
                return ok
        async with t.phone(token if not psk_mode or a.inline else None, None if psk_mode else key) as p:
            if t.scheme == "coaps":
                _say("coaps: %s mode, %s, handshake %.1f ms" % (
                    p.channel.mode, p.cipher, p.handshake_s * 1000))
            if a.action == "discover":
                out = await p.discover()
                print(out.code)
                print(out.payload.decode(errors="replace"))
                return out.ok
            inline = a.inline
            if cache is not None and cache.holds():
                out = await p.act(a.action, by_id=True, payload=body)
                print("%s: %s (token id only%s)" % (a.action, out.describe(),
                                                     ", after challenge" if out.tries > 1 else ""))
                if out.ok:
                    return True
                if not (out.code == "4.01" and out.error == 1):
                    refused(out, permission)
                    return False
                # invalid_token for a token id: most likely the lock no longer
                # holds the token (token_unknown); the full token says more.
                _say("the lock did not take the token id (it may no longer hold the token): "
                     "sending the full token")
                cache.forget()
            if not psk_mode and (a.action == "upload" or (token and not inline and a.action in ACTIONS)):
                up = await p.upload()
                print("authz-info: %s" % up.describe())
                if up.code == "5.03" and a.action != "upload":
                    # The lock's token store has no room for it now
                    # (store_full): send the token inline instead.
                    print("token store full: sending the token inline")
                    inline = True
                elif not up.ok:
                    refused(up, "authz-info")
                    return False
                elif a.action == "upload":
                    return True
            out = await p.act(a.action, inline=inline, payload=body)
            print("%s: %s%s" % (a.action, out.describe(),
                                " (after challenge)" if out.tries > 1 else ""))
            if out.ok:
                if cache is not None and not inline:
                    cache.remember()
                return True
            if out.code == "4.04" and t.scheme == "coap":
                _say("(a lock's plain CoAP serves only /authz-info unless its bundle enables it for "
                     "development: use coaps, the default scheme)")
            else:
                refused(out, permission)
            return False

    try:
        ok = asyncio.run(go())
    except t.network_errors() as e:
        msg = str(e) or e.__class__.__name__
        if psk_mode and t.errors and isinstance(e, t.errors):
            msg += ("\n  the lock's decision log names the refusal (psk_mismatch, token_unknown, "
                    "dtls_failed): lockctl logs --bundle BUNDLE --token admin.cwt --key admin.pem")
        if isinstance(e, t.errors):
            if "timed out" in msg and not psk_mode:
                msg += ("\n  if the lock is running, its console says why it did not answer (on the "
                        "simulator's 56 KiB heap: `ERROR MemoryError`; restart it)")
            _die(msg)
        _die("no answer from %s (%s)" % (t.describe(), msg))
    sys.exit(0 if ok else 1)


# sim ------------------------------------------------------------------------

BLE_HEAP_BYTES = 64 * 1024


def sim_command(bundle, flash, extra=(), heapsize=None):
    """The command line that runs the simulated lock: boards/unix/main.py on
    the project's interpreter (build/mp/micropython, firmware frozen) with
    the ESP32's heap unless `heapsize` says otherwise."""
    cmd = interp.micropython_cmd(heapsize or interp.ESP32_HEAP_BYTES)
    return cmd + [os.path.join(ROOT, "boards", "unix", "main.py"), "--bundle", bundle,
                  "--flash", flash] + list(extra)


def sim_env():
    return interp.mp_env()


def _sim_bundle(bundle, state, clock):
    """The bundle directory the simulator runs: `bundle` itself, or, when
    `clock` overrides its clock policy, a copy in the state directory of
    what the lock reads (lock.json with that clock, its key and
    certificate; never the AS key). The bundle itself is left as it is."""
    import json
    import shutil
    cfg = load_bundle(bundle)[0]
    if clock in (None, "bundle") or cfg.get("clock", "unsynced") == clock:
        return bundle, cfg
    run = os.path.join(state, "bundle-clock-" + clock)
    os.makedirs(run, exist_ok=True)
    cfg["clock"] = clock
    from .provision import lock_files
    for name in lock_files(bundle)[1:]:
        src = os.path.join(bundle, name)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(run, name))
            os.chmod(os.path.join(run, name), 0o600)
    with open(os.path.join(run, "lock.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return run, cfg


def _sim_banner(bundle, cfg, clock_override, port):
    rel = os.path.relpath(bundle)
    clock = cfg.get("clock", "unsynced")
    coap = cfg.get("coap", {})
    coaps = cfg.get("coaps", {})
    coap_port = port or coap.get("port", 5683)
    print("=" * 72)
    print("Simulated lock %r from the bundle %s." % (cfg.get("device_id"), rel))
    if clock != "system":
        print("")
        print("CLOCK: %s: the lock has NO TRUSTED CLOCK" % (
            '"unsynced" in lock.json' if clock == "unsynced" else
            '"ntp" in lock.json, and the simulator has no NTP'))
        print("(as an ESP32 until the AS uplink sets it). It REFUSES every token that")
        print("relies on exp or nbf (4.01 invalid_token, reason clock_unsynced) and")
        print("accepts exi tokens, which `lockctl token --bundle %s` mints for it." % rel)
        print("An exi token first seen before a restart is refused after it (no clock")
        print("measured the gap): mint new tokens after restarting the simulator.")
        print("To trust the host clock instead (the simulator standing in for a trusted")
        print("time source; the bundle keeps its policy, a board stays fail-closed):")
        print("  lockctl sim %s --clock system" % rel)
    elif clock_override == "system":
        print("CLOCK: trusting the host clock for this run (--clock system); the bundle says %r."
              % load_bundle(bundle)[0].get("clock", "unsynced"))
    print("")
    print("Open the door from a second terminal:")
    if not os.path.exists(os.path.join(bundle, "as-key.pem")):
        # A bundle its AS made (lockctl as lock add --provision): tokens come from that AS.
        print("  lockctl as request --client-id PHONE --key PHONE.pem --aud %s --scope 'unlock status' "
              "--out phone.cwt   (its AS mints the tokens)" % cfg.get("device_id"))
    else:
        print("  lockctl token --bundle %s --scope 'unlock status' --key phone.pem --out phone.cwt" % rel)
    if coaps.get("enabled", True):
        print("  lockctl coap --bundle %s --token phone.cwt --key phone.pem unlock" % rel)
    if coap.get("enabled"):
        print("  lockctl coap --bundle %s --scheme coap%s --token phone.cwt --key phone.pem unlock"
              % (rel, " --port %d" % coap_port if coap_port != coap.get("port", 5683) else ""))
    print("Its decision log: lockctl logs --bundle %s --token admin.cwt --key admin.pem" % rel)
    print("(admin.cwt: lockctl token --bundle %s --scope admin --key admin.pem --out admin.cwt)" % rel)
    print("=" * 72, flush=True)


def _state_dir(bundle):
    """var/sim/NAME for the default bundle, var/sim/NAME-HASH (8 hex digits
    of its absolute path) for any other."""
    import hashlib
    path = os.path.abspath(bundle)
    name = os.path.basename(path)
    if path == os.path.abspath(DEFAULT_BUNDLE):
        return os.path.join(ROOT, "var", "sim", name)
    return os.path.join(ROOT, "var", "sim", "%s-%s" % (name, hashlib.sha256(path.encode()).hexdigest()[:8]))


def _claim_state(state, cfg, bundle):
    """A state directory serves one lock: a flash image of another device
    id is refused, not booted as if it were this lock's."""
    mark = os.path.join(state, "device_id")
    want = str(cfg.get("device_id"))
    try:
        with open(mark) as f:
            have = f.read().strip()
    except OSError:
        have = None
    if have is not None and have != want:
        _die("%s holds the flash of lock %r, and %s is lock %r: give --state DIR, or delete %s"
             % (state, have, bundle, want, state))
    if have is None:
        with open(mark, "w") as f:
            f.write(want + "\n")


def cmd_sim(a):
    bundle = a.bundle
    if a.default or not bundle:
        bundle = DEFAULT_BUNDLE
        print("=" * 72)
        print("Simulated lock on the EMBEDDED DEFAULT bundle (%s)." % bundle)
        print("Its keys are public demo keys: never use them on a real lock.")
        print("Open the door from a second terminal:")
        print("  .venv/bin/lockctl token --bundle %s --scope 'unlock status' --key phone.pem --out phone.cwt"
              % os.path.relpath(bundle))
        print("  .venv/bin/lockctl coap --bundle %s --token phone.cwt --key phone.pem unlock"
              % os.path.relpath(bundle))
        print("=" * 72, flush=True)
    # One flash image per bundle directory: two locks never share a log or
    # a state (bundles of one name in two places used to).
    state = a.state or _state_dir(bundle)
    os.makedirs(state, exist_ok=True)
    flash = os.path.join(state, "flash.img")
    try:
        run, cfg = _sim_bundle(bundle, state, a.clock)
    except ProvisionError as e:
        _die(str(e))
    _claim_state(state, cfg, bundle)
    if bundle != DEFAULT_BUNDLE or a.clock not in (None, "bundle"):
        _sim_banner(bundle, cfg, a.clock, a.port)
    extra = []
    if a.port:
        extra += ["--port", str(a.port)]
    if a.presence:
        extra += ["--presence"]
    heapsize = None
    if a.ble:
        # With BLE (5.6 KB) and CoAPS both serving, the lock needs about
        # 63 KiB (bench_ble.py): more than the ESP32's initial 56 KiB area
        # (the board grows its heap from ESP-IDF's; README, limits).
        heapsize = BLE_HEAP_BYTES
        print("BLE on: the simulated lock gets a %d KiB heap (BLE and CoAPS together do not fit "
              "the ESP32's initial 56 KiB; see README, limits)" % (heapsize // 1024), flush=True)
    try:
        interp.ensure_built()
        cmd = sim_command(run, flash, extra, heapsize)
    except RuntimeError as e:
        _die(str(e))
    env = sim_env()
    if a.ble:
        # The controllers live in a child that ends with the lock (execve
        # keeps this pid): the lock's HCI UART is their pty.
        from .ble import DEFAULT_PORT, BleError, start_link
        try:
            _, pty_path, ble_port = start_link(os.path.join(state, "hci"), a.ble_port or DEFAULT_PORT,
                                               parent=os.getpid())
        except BleError as e:
            _die(str(e))
        env["MICROPYBTUART"] = pty_path
        print("BLE: virtual controllers up; phones: lockctl ble%s" % (
            "" if ble_port == DEFAULT_PORT else " --transport tcp-client:127.0.0.1:%d" % ble_port), flush=True)
    try:
        os.execve(cmd[0], cmd, env)
    except OSError as e:
        _die("cannot start %s: %s" % (cmd[0], e))


BLE_EPILOG = """\
examples:
  lockctl sim --default --ble          # first: a simulated lock with BLE
  lockctl ble unlock --bundle boards/unix/default_bundle --token phone.cwt --key phone.pem
  lockctl ble status --bundle mylock --token phone.cwt --key phone.pem --mtu 247
  lockctl ble unlock --device-id front-door --token phone.cwt --transport usb:0

After a grant with the full token, later requests send only its id
(TOKEN.ble-cache.json). A refusal names the lock's reason (Result).
"""

DEPLOY_EPILOG = """\
examples:
  lockctl deploy --port /dev/ttyUSB0 --bundle mylock --wifi wifi.json
  lockctl deploy --port /dev/ttyUSB0 --bundle mylock --dry-run   # print the mpremote commands

wifi.json: {"ssid": "myssid", "password": "..."}. The AS private key
(as-key.pem) is never copied.
"""
EXTERNAL_EPILOGS = {"ble": BLE_EPILOG, "deploy": DEPLOY_EPILOG}
# (`lockctl as` brings its own examples.)


# the command line -------------------------------------------------------------

def command(sub, name, help, epilog):
    """A subcommand whose --help ends with its examples (kept as written)."""
    return sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".",
                          epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_external_parsers(sub):
    """Subcommands that live in modules of their own, each adding itself
    with add_parser(sub). The one place to wire another one in."""
    from .ble import add_parser as add_ble_parser
    add_ble_parser(sub)
    from .deploy import add_parser as add_deploy_parser
    add_deploy_parser(sub)
    from .boardsim import add_parser as add_board_parser
    add_board_parser(sub)
    from .rebind import add_parser as add_rebind_parser
    add_rebind_parser(sub)
    # The bench AS (tools/lockctl/authserver, `lockctl as`); it needs
    # SQLAlchemy, without which the rest of lockctl still works.
    try:
        from .authserver import add_parser as add_as_parser
        add_as_parser(sub)
    except ImportError as e:
        missing = str(e)
        s = sub.add_parser("as", help="the bench authorization server (needs SQLAlchemy: not installed)")
        s.set_defaults(fn=lambda a: _die("lockctl as needs the packages of requirements.txt "
                                         "(pip install -r requirements.txt): %s" % missing))


def build_parser():
    p = argparse.ArgumentParser(prog="lockctl", description=__doc__, epilog=MAIN_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version="lockctl " + __version__)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = command(sub, "provision", "write a provisioning bundle for one lock", """\
examples:
  lockctl provision --out mylock --device-id front-door
  lockctl provision --out mylock --device-id front-door --plain-coap --bind 127.0.0.1 \\
      --coap-port 5685 --coaps-port 5686          # a second simulated lock, development only

The bundle holds lock.json, the lock's key and certificate, and the AS key
(as-key.pem: keep it secret, it mints tokens for this lock; `lockctl deploy`
never copies it). --clock unsynced (the default, an ESP32 until the AS uplink
sets its time) accepts exi tokens only; `lockctl token` mints those for it.
""")
    s.add_argument("--out", required=True, help="bundle directory")
    s.add_argument("--device-id", required=True, help="the lock's audience value")
    s.add_argument("--coap-port", type=int, default=5683)
    s.add_argument("--coaps-port", type=int, default=5684)
    s.add_argument("--plain-coap", action="store_true", help="enable plain CoAP (development only)")
    s.add_argument("--allow-bearer", action="store_true", help="accept tokens without cnf (over DTLS only)")
    s.add_argument("--issuer", default="https://as.example")
    s.add_argument("--kid", default="as-key-1")
    s.add_argument("--as-uri", default=None, help="AS URI given to clients in hints")
    s.add_argument("--bind", default="0.0.0.0", help="address the lock listens on (default 0.0.0.0)")
    s.add_argument("--clock", choices=("unsynced", "system", "ntp"), default="unsynced",
                   help="'unsynced' (default): no trusted clock, exi tokens only; 'system': trust the "
                        "host clock (simulator only); 'ntp': set it from NTP on the board "
                        "(unauthenticated: a network attacker can move it)")
    s.add_argument("--relock-ms", type=int, default=5000)
    s.add_argument("--force", action="store_true", help="replace a bundle already in --out")
    s.set_defaults(fn=cmd_provision)

    s = command(sub, "token", "mint an access token as the AS", """\
examples:
  lockctl token --bundle mylock --scope 'unlock status' --key phone.pem --out phone.cwt
  lockctl token --bundle mylock --scope admin --key admin.pem --out admin.cwt
  lockctl token --bundle mylock --psk --scope 'unlock status' --out psk.cwt   # DTLS PSK mode
  lockctl token --bundle mylock --exi 600 --no-exp --out phone.cwt             # exi only

Lifetime: exp in 3600 s (--exp-in). For a bundle whose lock has no trusted
clock ("clock": "unsynced" or "ntp") the default is an exi token (RFC 9200
5.10.3: valid 3600 s from the lock's first receipt, its cti the bundle's next
exi sequence number) that carries exp as well. --key is created if missing.
""")
    s.add_argument("--bundle", required=True)
    s.add_argument("--scope", default="unlock status", help="space-separated permissions (default "
                                                            "'unlock status'; 'admin' reads the log)")
    s.add_argument("--out", required=True)
    s.add_argument("--key", default="phone.pem", help="client PoP key (PEM, created if missing)")
    kind = s.add_mutually_exclusive_group()
    kind.add_argument("--bearer", action="store_true", help="no cnf: a bearer token")
    kind.add_argument("--psk", action="store_true", help="cnf with an encrypted symmetric key (DTLS PSK mode)")
    s.add_argument("--exp-in", type=int, default=None, help="seconds until exp (default 3600)")
    s.add_argument("--no-exp", action="store_true")
    s.add_argument("--nbf-in", type=int, default=None)
    s.add_argument("--exi", type=int, default=None,
                   help="seconds of life from first receipt (RFC 9200 5.10.3); the cti is then the next "
                        "sequence number from BUNDLE/exi-seq")
    s.add_argument("--cti", default=None, help="hex (for an exi token: its sequence number, 1-8 bytes)")
    s.add_argument("--aud", default=None)
    s.add_argument("--iss", default=None)
    s.add_argument("--sub", default=None)
    s.add_argument("--cwt-tag", action="store_true", help="wrap in CWT tag 61")
    s.set_defaults(fn=cmd_token)

    from .client import add_target_args
    s = command(sub, "coap", "act as the phone over CoAP (CoAPS by default)", """\
examples:
  lockctl coap --bundle mylock --token phone.cwt --key phone.pem unlock
  lockctl coap --bundle mylock --token phone.cwt --key phone.pem status   # sends the token id only
  lockctl coap --bundle mylock --scheme coap --token phone.cwt --key phone.pem unlock
  lockctl coap --bundle mylock --token psk.cwt --psk-identity 1f2e... --psk 9a8b... unlock
  lockctl coap --bundle mylock discover

The first grant stores the token on the lock; lockctl then remembers it
(TOKEN.coap-cache.json) and later requests send only its 32-byte id with a
fresh proof, or the full token again if the lock no longer holds it. A
refusal is explained in words; the exact reason is in the lock's decision
log (lockctl logs). Exit status 0 on 2.xx, 1 on a refusal, 2 no answer.
""")
    s.add_argument("action", choices=("discover", "upload", "status", "unlock", "lock", "log", "revoke", "rebind"))
    s.add_argument("--payload", metavar="FILE", help="the request's body (CBOR) for revoke ({\"ids\": [token id]}) "
                   "or rebind (a record from lockctl rebind-record or lockctl as lock adopt)")
    s.add_argument("--token", help="the access token (CWT file from lockctl token)")
    s.add_argument("--key", default="phone.pem", help="the PoP key the token is bound to (default phone.pem)")
    s.add_argument("--inline", action="store_true", help="send the token in the Bearer option")
    s.add_argument("--cache", help="token cache file (default TOKEN.coap-cache.json)")
    s.add_argument("--no-cache", action="store_true", help="always upload the full token")
    add_target_args(s)
    s.set_defaults(fn=cmd_coap)

    from .logs import add_parser as add_logs_parser
    add_logs_parser(sub)

    s = command(sub, "sim", "run the simulated lock (MicroPython unix port)", """\
examples:
  lockctl sim --default                 # the embedded demo bundle (public keys)
  lockctl sim mylock                    # a bundle of yours; its flash in var/sim/mylock-HASH
  lockctl sim mylock --clock system     # trust the host clock for this run
  lockctl sim mylock --state /tmp/lock2 # another flash image
  lockctl sim --default --ble           # with BLE (virtual controllers; phones: lockctl ble)

A bundle whose clock is "unsynced" (lockctl provision's default) runs as
an ESP32 without trusted time: tokens relying on exp are refused
(clock_unsynced), exi tokens accepted; the banner says so.
""")
    s.add_argument("bundle", nargs="?")
    s.add_argument("--default", action="store_true", help="use the embedded default bundle")
    s.add_argument("--state", help="directory for the flash image (default var/sim/BUNDLE_NAME-HASH of its path)")
    s.add_argument("--port", type=int, help="plain CoAP port (default: the bundle's)")
    s.add_argument("--clock", choices=("bundle", "system", "unsynced"), default="bundle",
                   help="the lock's clock for this run: 'bundle' (default: lock.json's), 'system' "
                        "(trust the host clock), 'unsynced'; the bundle is not changed")
    s.add_argument("--ble", action="store_true",
                   help="start the virtual BLE controller pair (lockctl.blelink) and give the lock its "
                        "pty; phones use `lockctl ble` (its default --transport)")
    s.add_argument("--ble-port", type=int, default=None, help="TCP port of the phones' side (default 5695)")
    s.add_argument("--presence", action="store_true",
                   help="the pairing button held at boot (physical presence): the lock takes the bundle's "
                        "rebind.cbor (lockctl rebind-record), moving it to another AS")
    s.set_defaults(fn=cmd_sim)

    add_external_parsers(sub)
    for name, sp in sub.choices.items():
        # Subcommands added elsewhere keep their own help; those without
        # examples get these, and every one keeps its examples' layout.
        if not sp.epilog and name in EXTERNAL_EPILOGS:
            sp.epilog = EXTERNAL_EPILOGS[name]
        if sp.formatter_class is argparse.HelpFormatter:
            sp.formatter_class = argparse.RawDescriptionHelpFormatter
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    try:
        a.fn(a)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
