"""`lockctl ble`: the phone over Bluetooth LE (PROFILE.md sec. 5), on Bumble.

Scans for the lock by its name (`device_id`, in the scan response) and
service UUID, connects, optionally exchanges the MTU, reads the Challenge
(CBOR [device_id, nonce]), signs the PoP challenge (PROFILE sec. 3), writes
the Request CBOR [token_or_hash, permission, nonce, signature] in fragments
(1 header byte: bit 7 last, bits 0-6 sequence number; with response, so
the lock's stack paces them), and waits for the Result notification(s)
(the same fragments) CBOR [granted, error, reason].

Token caching: after a grant with the full token the lock keeps it, so
the phone records the token id in a cache file and sends only the 32-byte
id next time; if the lock no longer knows it (token_unknown) the phone
sends the full token on a new attempt.

The transport is any Bumble transport string: the default is the
simulator's virtual controller (`lockctl sim --ble`), `usb:0`,
`hci-socket:0` or `serial:/dev/ttyUSB0,1000000` drive a real adapter.
"""
import argparse
import asyncio
import os
import time

import cbor2

from . import cose_host as ch
from .reasons import ERROR_NAMES

SERVICE = "4ab60001-97f7-482e-ae57-52bc6afa1e5d"
CHALLENGE = "4ab60002-97f7-482e-ae57-52bc6afa1e5d"
REQUEST = "4ab60003-97f7-482e-ae57-52bc6afa1e5d"
RESULT = "4ab60004-97f7-482e-ae57-52bc6afa1e5d"
DEFAULT_PORT = 5695  # the virtual controllers' TCP port for phones (lockctl.blelink)
DEFAULT_TRANSPORT = "tcp-client:127.0.0.1:%d" % DEFAULT_PORT
LAST = 0x80
CHALLENGE_WAIT_S = 5.0  # an empty Challenge read: how long its notification may take


class BleError(Exception):
    """The phone could not reach the lock or the lock's answer was unusable."""


def fragments(msg, payload):
    """PROFILE sec. 5 fragments of `msg` for an ATT payload of `payload`
    bytes: 1 header byte (bit 7 last, bits 0-6 sequence number mod 128)
    and up to payload - 1 bytes of the message each."""
    step = payload - 1
    n = max(1, -(-len(msg) // step))
    return [bytes([(i & 0x7F) | (LAST if i == n - 1 else 0)]) + msg[i * step:(i + 1) * step] for i in range(n)]


class Reassembly:
    """Notifications of framed messages (Result, Challenge) -> whole
    messages, in order: `await get()`."""

    def __init__(self):
        self.parts = []
        self.seq = 0
        self.messages = asyncio.Queue()

    def on_value(self, value):
        if not value:
            return
        h = value[0]
        if (h & 0x7F) != self.seq:
            self.parts = []
            self.seq = 0
            self.messages.put_nowait(BleError("notification fragment %d, expected %d" % (h & 0x7F, self.seq)))
            return
        self.parts.append(bytes(value[1:]))
        self.seq = (self.seq + 1) & 0x7F
        if h & LAST:
            self.messages.put_nowait(b"".join(self.parts))
            self.parts = []
            self.seq = 0

    async def get(self):
        m = await self.messages.get()
        if isinstance(m, Exception):
            raise m
        return m


class Result:
    def __init__(self, raw, writes, connect_s, result_s, mtu, id_only):
        r = cbor2.loads(raw)
        if not (isinstance(r, list) and len(r) == 3 and isinstance(r[0], bool)):
            raise BleError("Result is not [granted, error, reason]: %r" % (r,))
        self.granted, self.error, self.reason = r
        self.writes = writes        # ATT writes of the Request
        self.connect_s = connect_s  # connection complete, from the connect call
        self.result_s = result_s    # from connection complete to the whole Result
        self.mtu = mtu
        self.id_only = id_only

    def describe(self):
        s = "granted" if self.granted else "denied"
        if self.error is not None:
            s += " error=%s" % ERROR_NAMES.get(self.error, self.error)
        return s + " reason=%s" % self.reason


def random_static_address():
    from bumble.hci import Address
    b = bytearray(os.urandom(6))
    b[5] |= 0xC0  # random static: the two top bits of the address set
    return Address(bytes(b), Address.RANDOM_DEVICE_ADDRESS)


class BlePhone:
    """One phone on a Bumble transport. Use `async with BlePhone(...) as p:`
    then `await p.attempt(...)` (one connection, one Request, its Result)."""

    def __init__(self, transport=DEFAULT_TRANSPORT, scan_timeout=10.0, timeout=10.0):
        self.transport_spec = transport
        self.scan_timeout = scan_timeout
        self.timeout = timeout
        self.device = None
        self._transport = None
        self.address = None

    async def __aenter__(self):
        from bumble.device import Device
        from bumble.transport import open_transport
        try:
            self._transport = await open_transport(self.transport_spec)
        except Exception as e:
            raise BleError("cannot open BLE transport %s: %s (is `lockctl sim --ble` running?)"
                           % (self.transport_spec, e))
        self.device = Device.with_hci("lockctl-phone", random_static_address(),
                                      self._transport.source, self._transport.sink)
        await self.device.power_on()
        return self

    async def __aexit__(self, *exc):
        try:
            await asyncio.wait_for(self._transport.close(), 2)
        except Exception:
            pass

    async def find(self, name):
        """Scan (active, for the scan response) until a connectable
        advertiser named `name` shows up; its address."""
        from bumble.core import AdvertisingData
        loop = asyncio.get_running_loop()
        found = loop.create_future()

        def on_adv(adv):
            # By name (the service UUID may be in a scan response, which
            # Bumble's virtual link does not deliver); a shortened name
            # (a device id over 26 bytes) must be a prefix of it.
            full = adv.data.get(AdvertisingData.COMPLETE_LOCAL_NAME)
            short = adv.data.get(AdvertisingData.SHORTENED_LOCAL_NAME)
            if isinstance(full, bytes):
                full = full.decode(errors="replace")
            if isinstance(short, bytes):
                short = short.decode(errors="replace")
            if (full == name or (short and name.startswith(short))) and adv.is_connectable \
                    and not found.done():
                found.set_result(adv.address)

        self.device.on("advertisement", on_adv)
        await self.device.start_scanning(active=True, filter_duplicates=False)
        try:
            return await asyncio.wait_for(found, self.scan_timeout)
        except asyncio.TimeoutError:
            raise BleError("no lock named %r advertising within %.0f s" % (name, self.scan_timeout))
        finally:
            self.device.remove_listener("advertisement", on_adv)
            await self.device.stop_scanning()

    async def attempt(self, device_id, permission, token=None, key=None, id_only=False, mtu=None,
                      message=None, fault=None):
        """Connect, read the Challenge, send the Request, wait for Result.

        `token`: the CWT (bytes); `id_only`: send its 32-byte id instead;
        `key`: the PoP key (cryptography EC private key); `mtu`: exchange
        this MTU first (None: the default 23, 20-byte payloads).
        `message(nonce)`: build the Request bytes instead (tests);
        `fault`: a coroutine fault(peer, request characteristic, fragments,
        results) that sends the fragments itself (tests of transport
        faults); `await results.get()` is the next Result's bytes; what it
        returns replaces the Result (None: wait for the Result).
        Returns a Result; raises BleError."""
        from bumble.device import Peer
        for tries in range(3):
            addr = await self.find(device_id)
            t0 = time.perf_counter()
            try:
                conn = await asyncio.wait_for(self.device.connect(addr), self.timeout)
            except (asyncio.TimeoutError, Exception) as e:
                raise BleError("cannot connect to %s: %s" % (addr, e))
            t1 = time.perf_counter()
            gone = asyncio.get_running_loop().create_future()
            conn.on("disconnection", lambda reason: gone.done() or gone.set_result(reason))
            if self.device.connections.get(conn.handle) is not conn:
                # It ended before the handler was on (another phone won the
                # same advertising event: HCI 0x3E): try again.
                gone.set_result(0x3E)
            self.sent = 0
            work = asyncio.ensure_future(asyncio.wait_for(
                self._exchange(Peer(conn), device_id, permission, token, key, id_only, mtu, message, fault,
                               t0, t1), self.timeout))
            try:
                await asyncio.wait([work, gone], return_when=asyncio.FIRST_COMPLETED)
                if not work.done():
                    # (a fault of ours may have hung up itself: its answer comes next)
                    await asyncio.wait([work], timeout=0.5)
                # (Bumble cancels a GATT request whose link ended: the
                # exchange is then cancelled, and the hang-up is the answer.)
                if work.done() and not (gone.done() and work.cancelled()):
                    try:
                        return work.result()
                    except asyncio.TimeoutError:
                        raise BleError("no Result from the lock within %.0f s" % self.timeout)
                work.cancel()
                if self.sent:
                    raise BleError("the lock ended the connection (HCI reason 0x%02x)" % gone.result())
                # Hung up before we wrote anything: the lock serves one phone
                # at a time and this one came second; try again.
            finally:
                if not gone.done():
                    try:
                        await asyncio.wait_for(conn.disconnect(), 2)
                    except Exception:
                        pass
        raise BleError("the lock kept hanging up (busy with other phones?)")

    async def _exchange(self, peer, device_id, permission, token, key, id_only, mtu, message, fault, t0, t1):
        if mtu:
            mtu = await peer.request_mtu(mtu)
        payload = (mtu or 23) - 3
        await peer.discover_service(SERVICE)
        svcs = peer.get_services_by_uuid(_uuid(SERVICE))
        if not svcs:
            raise BleError("the lock has no service %s" % SERVICE)
        await peer.discover_characteristics(service=svcs[0])
        chars = {}
        for u in (CHALLENGE, REQUEST, RESULT):
            c = peer.get_characteristics_by_uuid(_uuid(u), svcs[0])
            if not c:
                raise BleError("the lock has no characteristic %s" % u)
            chars[u] = c[0]
        result = Reassembly()
        await peer.subscribe(chars[RESULT], result.on_value)
        self.challenges = Reassembly()  # the fresh Challenge after each attempt
        await peer.subscribe(chars[CHALLENGE], self.challenges.on_value)
        raw = await peer.read_value(chars[CHALLENGE])
        if not raw:
            # The lock has not made this connection's nonce yet (it clears
            # the Challenge between phones): it notifies it when it has.
            try:
                raw = await asyncio.wait_for(self.challenges.get(), CHALLENGE_WAIT_S)
            except asyncio.TimeoutError:
                raise BleError("the lock sent no Challenge within %.0f s" % CHALLENGE_WAIT_S)
        try:
            challenge = cbor2.loads(raw)
        except Exception:
            raise BleError("the Challenge is not CBOR: %s" % bytes(raw).hex())
        if not (isinstance(challenge, list) and len(challenge) == 2 and challenge[0] == device_id
                and isinstance(challenge[1], bytes)):
            raise BleError("unexpected Challenge %r" % (challenge,))
        nonce = challenge[1]
        if message is not None:
            msg = message(nonce)
        else:
            tid = ch.token_id(token)
            proof = cbor2.loads(ch.pop_proof(key, device_id, nonce, permission, tid))
            msg = cbor2.dumps([tid if id_only else token, permission, proof[0], proof[1]])
        frags = fragments(msg, payload)
        self.sent = 1
        if fault is not None:
            out = await fault(peer, chars[REQUEST], frags, result)
            if out is not None:
                return out
        else:
            for f in frags:
                await peer.write_value(chars[REQUEST], f, with_response=True)
        raw = await result.get()
        return Result(raw, len(frags), t1 - t0, time.perf_counter() - t1, mtu or 23, id_only)


def _uuid(s):
    from bumble.core import UUID
    return UUID(s)


# Token cache: the ids of tokens the lock has stored (per lock, per token);
# shared with `lockctl coap` (lockctl.cache).
from .cache import TokenCache  # noqa: E402


async def unlock(transport, device_id, token, key, permission="unlock", cache_path=None, mtu=None,
                 say=print):
    """The whole phone flow with the token cache: the id alone when the
    cache says the lock holds the token, else (or if the lock forgot it)
    the full token. Returns the last Result."""
    cache = TokenCache(cache_path, device_id, token)
    async with BlePhone(transport) as p:
        id_only = cache.holds()
        r = await p.attempt(device_id, permission, token, key, id_only, mtu)
        say("%s: %s (%s, %d ATT write(s) at MTU %d, %.1f ms from connect to Result)" % (
            permission, r.describe(), "token id only" if id_only else "full token", r.writes, r.mtu,
            (r.connect_s + r.result_s) * 1000))
        if id_only and not r.granted and r.reason == "token_unknown":
            say("the lock no longer holds the token: sending it in full")
            cache.forget()
            r = await p.attempt(device_id, permission, token, key, False, mtu)
            say("%s: %s (full token, %d ATT write(s))" % (permission, r.describe(), r.writes))
            id_only = False
        if r.granted and not id_only:
            cache.remember()
        return r


def _att_mtu(text):
    """argparse type of --mtu: an ATT MTU, 23 (the default) to 517 (Core spec
    vol. 3 part F 3.2.8, 3.4.7.1)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text)
    if not 23 <= v <= 517:
        raise argparse.ArgumentTypeError("an ATT MTU is 23 to 517, got %d" % v)
    return v


def cmd_ble(a):
    """`lockctl ble ACTION`: exit status 0 on a grant, 1 on a refusal, 2 when
    the lock could not be reached."""
    import logging
    # Bumble warns about the lock's Challenge notifications that arrive
    # before the phone subscribed (harmless, and not the user's business).
    logging.getLogger("bumble").setLevel(logging.ERROR)
    import sys
    from .provision import load_bundle

    def die(msg):
        print("lockctl: error: %s" % msg, file=sys.stderr)
        sys.exit(2)

    device_id = a.device_id
    if device_id is None:
        if not a.bundle:
            die("--bundle or --device-id names the lock")
        device_id = load_bundle(a.bundle)[0]["device_id"]
    try:
        with open(a.token, "rb") as f:
            token = f.read()
        with open(a.key, "rb") as f:
            key = ch.key_from_pem(f.read())
    except OSError as e:
        die(str(e))
    cache = a.cache if a.cache else a.token + ".ble-cache.json"
    try:
        r = asyncio.run(unlock(a.transport, device_id, token, key, a.action, None if a.no_cache else cache,
                               a.mtu))
    except BleError as e:
        die(str(e))
    sys.exit(0 if r.granted else 1)


def add_parser(sub):
    """The `ble` subcommand of lockctl."""
    s = sub.add_parser("ble", help="act as the phone over Bluetooth LE (Bumble)")
    s.add_argument("action", choices=("unlock", "lock", "status"), help="the permission to use")
    s.add_argument("--transport", default=DEFAULT_TRANSPORT,
                   help="Bumble transport: the simulator's virtual controller (`lockctl sim --ble`, "
                        "default %s), or a real adapter: usb:0, hci-socket:0, "
                        "serial:/dev/ttyUSB0,1000000" % DEFAULT_TRANSPORT)
    s.add_argument("--token", required=True, help="the access token (CWT file)")
    s.add_argument("--key", default="phone.pem", help="the PoP key the token is bound to (PEM; default phone.pem)")
    s.add_argument("--bundle", help="read the lock's device id (its advertised name) from this bundle")
    s.add_argument("--device-id", help="the lock's device id (its advertised name), without --bundle")
    s.add_argument("--mtu", type=_att_mtu, default=None,
                   help="exchange this ATT MTU first (e.g. 247: 244-byte writes); default 23 (20-byte writes)")
    s.add_argument("--cache", help="token cache file (default TOKEN.ble-cache.json): after a grant "
                                   "with the full token, later requests send only its id")
    s.add_argument("--no-cache", action="store_true", help="always send the full token")
    s.set_defaults(fn=cmd_ble)
    return s


def start_link(pty_path, port=DEFAULT_PORT, parent=None, timeout=20):
    """Start the virtual controllers (lockctl.blelink) in a child process;
    returns (process, pty path, port) once it is serving. `parent`: the
    pid whose end also ends the link."""
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "lockctl.blelink", "--pty", pty_path, "--port", str(port)]
    if parent:
        cmd += ["--parent", str(parent)]
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    t0 = time.time()
    line = proc.stdout.readline()
    if not line.startswith("BLELINK"):
        proc.kill()
        raise BleError("virtual controller did not start: %s%s" % (line, proc.stdout.read()[-2000:]))
    fields = dict(kv.split("=", 1) for kv in line.split()[1:])
    if time.time() - t0 > timeout:
        raise BleError("virtual controller too slow to start")
    # Keep reading what it says (Bumble's warnings, tracebacks of its
    # callbacks): an unread pipe fills and then blocks the whole link.
    # The last lines are kept for diagnosis (proc.tail).
    import collections
    import threading
    proc.tail = collections.deque(maxlen=200)
    threading.Thread(target=lambda: proc.tail.extend(proc.stdout), daemon=True).start()
    return proc, fields["pty"], int(fields["port"])
