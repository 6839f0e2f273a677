"""lockctl: provision locks, mint tokens (the AS), act as the phone, run
the simulator. `lockctl COMMAND --help` for each command."""
import argparse
import asyncio
import os
import sys
import time

from . import __version__
from . import cose_host as ch
from . import interp
from .provision import ProvisionError, load_bundle, provision

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BUNDLE = os.path.join(ROOT, "boards", "unix", "default_bundle")


def _die(msg):
    print("lockctl: error: %s" % msg, file=sys.stderr)
    sys.exit(2)


def cmd_provision(a):
    try:
        provision(a.out, a.device_id, issuer=a.issuer, kid=a.kid, coap_port=a.coap_port,
                  coaps_port=a.coaps_port, plain_coap=a.plain_coap, allow_bearer=a.allow_bearer,
                  as_uri=a.as_uri, bind=a.bind, clock=a.clock, relock_ms=a.relock_ms, force=a.force)
    except ProvisionError as e:
        _die(str(e))
    print("bundle ready in %s (keep as-key.pem secret: it mints tokens for this lock)" % a.out)


def _load_key(path, create):
    if os.path.exists(path):
        with open(path, "rb") as f:
            return ch.key_from_pem(f.read())
    if not create:
        _die("no key at %s" % path)
    k = ch.gen_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(ch.key_to_pem(k))
    print("created client key %s" % path, file=sys.stderr)
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


def cmd_token(a):
    try:
        cfg, as_key = load_bundle(a.bundle)
    except ProvisionError as e:
        _die(str(e))
    if as_key is None:
        _die("bundle %s has no as-key.pem" % a.bundle)
    ask = cfg["as_keys"][0]
    now = int(time.time())
    claims = {1: a.iss or ask["issuer"], 3: a.aud or cfg["device_id"], 6: now, 9: a.scope}
    if a.sub:
        claims[2] = a.sub
    if not a.no_exp:
        claims[4] = now + a.exp_in
    if a.nbf_in is not None:
        claims[5] = now + a.nbf_in
    if a.exi is not None:
        claims[40] = a.exi
    if a.cti:
        claims[7] = bytes.fromhex(a.cti)
    elif a.exi is not None:
        # RFC 9200 5.10.3 / PROFILE sec. 2: an exi token's cti is the AS's
        # next sequence number for this lock, kept beside the AS key.
        claims[7] = ch.seq_cti(next_exi_seq(a.bundle))
    else:
        claims[7] = os.urandom(8)
    if a.psk:
        secret = os.urandom(16)
        psk_id = os.urandom(8)
        claims[8] = {2: ch.encrypt0_key(bytes.fromhex(cfg["as_lock_key"]), psk_id, secret)}
        print("psk identity %s key %s" % (psk_id.hex(), secret.hex()), file=sys.stderr)
    elif not a.bearer:
        client = _load_key(a.key, True)
        claims[8] = {1: ch.cose_key_ec2(client)}
    tok = ch.make_sign1(claims, as_key, kid=bytes.fromhex(ask["kid"]) if ask.get("kid") else None,
                        tag=61 if a.cwt_tag else 18)
    with open(a.out, "wb") as f:
        f.write(tok)
    print("token %s: %d bytes, token id %s, scope %r, %s" % (
        a.out, len(tok), ch.token_id(tok).hex(), a.scope,
        "bearer" if a.bearer else ("psk" if a.psk else "pop key " + a.key)))


def _hex_arg(name, value):
    try:
        return bytes.fromhex(value)
    except ValueError:
        _die("%s must be hex, got %r" % (name, value))


def cmd_coap(a):
    from .client import ACTIONS, Phone
    token = key = None
    if a.token:
        with open(a.token, "rb") as f:
            token = f.read()
    if a.key and os.path.exists(a.key):
        key = _load_key(a.key, False)
    device_id = a.device_id
    if device_id is None and a.bundle:
        device_id = load_bundle(a.bundle)[0]["device_id"]
    port = a.port if a.port is not None else (5684 if a.scheme == "coaps" else 5683)
    if a.scheme == "coap":
        if a.psk_identity or a.psk:
            _die("--psk-identity/--psk need --scheme coaps")

        def make_phone():
            return Phone(a.host, port, device_id, token, key)
        dtls_errors = ()
    else:
        from .dtls import DtlsError, DtlsPhone, bundle_certs
        dtls_errors = (DtlsError,)
        if bool(a.psk_identity) != bool(a.psk):
            _die("PSK mode needs both --psk-identity and --psk (lockctl token --psk prints them)")
        if a.psk:
            dtls = dict(psk=(_hex_arg("--psk-identity", a.psk_identity), _hex_arg("--psk", a.psk)))
        else:
            if not a.bundle:
                _die("certificate mode (coaps without --psk) needs --bundle: the lock's "
                     "certificate is checked against the bundle's")
            try:
                lock_cert, ca_cert = bundle_certs(a.bundle)
            except DtlsError as e:
                _die(str(e))
            dtls = dict(lock_cert=lock_cert, ca_cert=ca_cert)

        def make_phone():
            # PSK mode: the session is the authorization (the token was
            # uploaded over plain CoAP, or is sent inline with --inline).
            if a.psk:
                return DtlsPhone(a.host, port, device_id, token if a.inline else None, None,
                                 handshake_timeout=a.handshake_timeout, **dtls)
            return DtlsPhone(a.host, port, device_id, token, key,
                             handshake_timeout=a.handshake_timeout, **dtls)

    psk_mode = a.scheme == "coaps" and bool(a.psk)
    if a.action == "upload" and not token:
        _die("upload needs --token")

    async def upload_plain():
        # PSK mode (RFC 9202 sec. 3.3.1): the lock learns the PSK from the
        # token, so the token goes to /authz-info over plain CoAP first; the
        # DTLS session keyed by it is then bound to it (no PoP inside CoAP).
        async with Phone(a.host, a.coap_port, device_id, token, None) as p:
            up = await p.upload()
            print("authz-info (coap:%d): %s" % (a.coap_port, up.describe()))
            return up.ok

    async def go():
        if psk_mode and token and not a.inline and a.action != "discover":
            ok = await upload_plain()
            if not ok or a.action == "upload":
                return ok
        async with make_phone() as p:
            if a.scheme == "coaps":
                print("coaps: %s mode, %s, handshake %.1f ms" % (
                    p.channel.mode, p.cipher, p.handshake_s * 1000), file=sys.stderr)
            if a.action == "discover":
                out = await p.discover()
                print(out.code)
                print(out.payload.decode(errors="replace"))
                return out.ok
            inline = a.inline
            if (not psk_mode and (a.action in ("upload",) or (token and not inline and a.action in ACTIONS))):
                up = await p.upload()
                print("authz-info: %s" % up.describe())
                if up.code == "5.03" and a.action != "upload":
                    # The lock's token store has no room for it now
                    # (store_full): send the token inline instead.
                    print("token store full: sending the token inline")
                    inline = True
                elif not up.ok or a.action == "upload":
                    return up.ok
            out = await p.act(a.action, inline=inline)
            print("%s: %s%s" % (a.action, out.describe(),
                                " (after challenge)" if out.tries > 1 else ""))
            if out.code == "4.04" and a.scheme == "coap":
                print("(a lock's plain CoAP serves only /authz-info unless its bundle enables it for "
                      "development: use coaps, the default scheme)", file=sys.stderr)
            return out.ok

    import aiocoap.error
    try:
        ok = asyncio.run(go())
    except dtls_errors as e:
        _die(str(e))
    except (OSError, asyncio.TimeoutError, aiocoap.error.NetworkError, aiocoap.error.ConRetransmitsExceeded) as e:
        _die("no answer from %s:%d (%s)" % (a.host, port, e))
    sys.exit(0 if ok else 1)


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
    # One flash image per bundle: two locks never share a log or a state.
    state = a.state or os.path.join(ROOT, "var", "sim", os.path.basename(os.path.abspath(bundle)))
    os.makedirs(state, exist_ok=True)
    flash = os.path.join(state, "flash.img")
    extra = []
    if a.port:
        extra += ["--port", str(a.port)]
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
        cmd = sim_command(bundle, flash, extra, heapsize)
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


def cmd_deploy(a):
    from .deploy import DeployError, deploy
    try:
        deploy(a.port, a.bundle, a.wifi, a.dry_run)
    except DeployError as e:
        _die(str(e))


def main(argv=None):
    p = argparse.ArgumentParser(prog="lockctl", description=__doc__)
    p.add_argument("--version", action="version", version="lockctl " + __version__)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("provision", help="write a provisioning bundle for one lock")
    s.add_argument("--out", required=True, help="bundle directory")
    s.add_argument("--device-id", required=True, help="the lock's audience value")
    s.add_argument("--coap-port", type=int, default=5683)
    s.add_argument("--coaps-port", type=int, default=5684)
    s.add_argument("--plain-coap", action="store_true", help="enable plain CoAP (development only)")
    s.add_argument("--allow-bearer", action="store_true", help="accept tokens without cnf (over DTLS only)")
    s.add_argument("--issuer", default="https://as.example")
    s.add_argument("--kid", default="as-key-1")
    s.add_argument("--as-uri", default=None, help="AS URI given to clients in hints")
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--clock", choices=("unsynced", "system", "ntp"), default="unsynced",
                   help="'system': trust the host clock (simulator only); 'ntp': set it from NTP on the board "
                        "(unauthenticated: a network attacker can move it)")
    s.add_argument("--relock-ms", type=int, default=5000)
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_provision)

    s = sub.add_parser("token", help="mint an access token as the AS")
    s.add_argument("--bundle", required=True)
    s.add_argument("--scope", default="unlock status", help="space-separated permissions")
    s.add_argument("--out", required=True)
    s.add_argument("--key", default="phone.pem", help="client PoP key (PEM, created if missing)")
    kind = s.add_mutually_exclusive_group()
    kind.add_argument("--bearer", action="store_true", help="no cnf: a bearer token")
    kind.add_argument("--psk", action="store_true", help="cnf with an encrypted symmetric key (DTLS PSK mode)")
    s.add_argument("--exp-in", type=int, default=3600, help="seconds until exp")
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

    s = sub.add_parser("coap", help="act as the phone over CoAP")
    s.add_argument("action", choices=("discover", "upload", "status", "unlock", "lock", "log"))
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=None, help="default 5683 (coap), 5684 (coaps)")
    s.add_argument("--scheme", choices=("coap", "coaps"), default="coaps",
                   help="coaps: DTLS 1.2, PSK mode with --psk-identity/--psk, else certificate "
                        "mode (the lock's certificate must be the one in --bundle)")
    s.add_argument("--psk-identity", help="hex: the psk identity (the kid of a --psk token)")
    s.add_argument("--psk", help="hex: the PSK (printed by lockctl token --psk)")
    s.add_argument("--handshake-timeout", type=float, default=10.0, help="seconds (coaps)")
    s.add_argument("--coap-port", type=int, default=5683,
                   help="coaps PSK mode: the token goes to /authz-info over plain CoAP on this port first")
    s.add_argument("--token")
    s.add_argument("--key", default="phone.pem")
    s.add_argument("--bundle", help="read the device id from this bundle")
    s.add_argument("--device-id")
    s.add_argument("--inline", action="store_true", help="send the token in the Bearer option")
    s.set_defaults(fn=cmd_coap)

    s = sub.add_parser("sim", help="run the simulated lock (MicroPython unix port)")
    s.add_argument("bundle", nargs="?")
    s.add_argument("--default", action="store_true", help="use the embedded default bundle")
    s.add_argument("--state", help="directory for the flash image (default var/sim/BUNDLE_NAME)")
    s.add_argument("--port", type=int)
    s.add_argument("--ble", action="store_true",
                   help="start the virtual BLE controller pair (lockctl.blelink) and give the lock its "
                        "pty; phones use `lockctl ble` (its default --transport)")
    s.add_argument("--ble-port", type=int, default=None, help="TCP port of the phones' side (default 5695)")
    s.set_defaults(fn=cmd_sim)

    from .ble import add_parser as add_ble_parser
    add_ble_parser(sub)

    s = sub.add_parser("deploy", help="copy firmware (.mpy for xtensawin) and a bundle to an ESP32 with mpremote")
    s.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    s.add_argument("--bundle", required=True)
    s.add_argument("--wifi", help='JSON file {"ssid": ..., "password": ...} to copy as /wifi.json')
    s.add_argument("--dry-run", action="store_true", help="print the mpremote commands only")
    s.set_defaults(fn=cmd_deploy)

    a = p.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
