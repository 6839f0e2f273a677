"""BLE transport: the lock's GATT peripheral (PROFILE.md sec. 5) on
MicroPython's `bluetooth` module (NimBLE on the ESP32 and in the simulator).

Advertises `device_id` as the complete local name and the service UUID
(in the scan response when both do not fit) from a random static address, and
serves one phone at a time: while a phone is connected the lock does not
advertise, so a second phone waits until the first is done (a connection
that still slips in is refused: disconnected at once). A connection ends
after `idle_ms` without a write while no message is under way, or
`conn_ms` after it began; a message with no fragment for `stall_ms` is
discarded (Result invalid_request, "transfer_stalled"). The lock then
advertises again.

The IRQ handler only copies: a Request write goes into the reassembly
chunks (ble.frag: header check and copy, no parsing) and a flag wakes the
task; while a whole message (or a fault) waits for the task, further
writes are dropped, so the buffer never changes under it. Parsing and
crypto run in the task.

Written on `bluetooth` directly rather than micropython-lib's aioble:
aioble's write capture queue holds 10 writes and drops the oldest beyond
that, and NimBLE acknowledges writes before Python runs, so a request of
more than 10 fragments sent back to back (the 17 writes of a 230-byte
token at the default 20-byte payload) lost fragments in the simulator;
and importing aioble took 6.3 KB of the ESP32's 56 KiB heap, which the
ES256 verification needs.
"""
import asyncio
import gc
import time

import bluetooth
from micropython import const

from ble import frag
from trust import reasons

_UUID = "4ab6%04x-97f7-482e-ae57-52bc6afa1e5d"
SERVICE = bluetooth.UUID(_UUID % 1)
CHALLENGE = bluetooth.UUID(_UUID % 2)
REQUEST = bluetooth.UUID(_UUID % 3)
RESULT = bluetooth.UUID(_UUID % 4)

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
_F_READ = const(0x02)
_F_WRITE_NO_RESPONSE = const(0x04)
_F_WRITE = const(0x08)
_F_NOTIFY = const(0x10)

_ADDR_RANDOM_STATIC = const(1)   # BLE().config(addr_mode=1)
_MTU = const(247)                # the MTU the lock offers: 244-byte ATT payloads
_FRAGMENT_MAX = const(244)       # largest Request write taken (MTU - 3)
_DEFAULT_MTU = const(23)         # before an MTU exchange: 20-byte payloads
_ADV_INTERVAL_US = const(20000)
_ADV_MAX = const(31)             # legacy advertising data or scan response
_NAME_MAX = const(26)            # after the flags (3 bytes), the name's length and type
_OUT_MAX = const(63)             # chunk of a notification (Challenge and Result are shorter)
_READVERTISE_MS = const(30000)   # advertising is restarted this often while no phone comes
_DISCARDS_MAX = const(8)         # messages discarded in one connection before it is hung up
_RETRY_MAX_S = const(8)          # longest wait after a fault of the radio
_RESTART_MS = const(20000)       # faults lasting this long restart the radio
_BREATHE_MS = const(100)         # the lock's other tasks run between two waits for the radio


def _ad(kind, value):
    return bytes((len(value) + 1, kind)) + value


class Peripheral:
    """The GATT server. `access` is a ble.access.Access; `say` prints a
    line. Times in ms. `start()` raises OSError when the radio (the HCI
    controller) cannot be brought up."""

    def __init__(self, access, device_id, say=print, stall_ms=5000, idle_ms=10000, conn_ms=30000):
        self.access = access
        self.name = device_id.encode()
        self.say = say
        self.stall_ms = stall_ms
        self.idle_ms = idle_ms
        self.conn_ms = conn_ms
        self.reasm = frag.Reassembler(frag.MAX_MESSAGE, _FRAGMENT_MAX)
        self._out = memoryview(bytearray(_OUT_MAX + 1))  # a notification being built
        self.flag = asyncio.ThreadSafeFlag()
        self.connections = 0   # per boot: a connection's identity is its number
        self.conn = None       # the connection handle being served
        self.connects = 0      # connect events seen by the IRQ handler
        self.mtu = _DEFAULT_MTU
        self.pending = frag.MORE  # COMPLETE or a fault, waiting for the task
        self.last_ms = 0       # ticks of the last Request fragment
        self.adv_fault = False  # advertising failed and has not worked since

    def start(self):
        """Bring the radio up, register the service, prepare advertising."""
        b = self.ble = bluetooth.BLE()
        b.active(True)
        b.config(addr_mode=_ADDR_RANDOM_STATIC, mtu=_MTU)
        b.irq(self._irq)
        ((self.h_challenge, self.h_request, self.h_result),) = b.gatts_register_services((
            (SERVICE, ((CHALLENGE, _F_READ | _F_NOTIFY),
                       (REQUEST, _F_WRITE | _F_WRITE_NO_RESPONSE),
                       (RESULT, _F_READ | _F_NOTIFY))),))
        # One byte longer than the largest fragment: NimBLE cuts a longer
        # write to the buffer silently, so a full buffer means "maybe cut".
        b.gatts_set_buffer(self.h_request, _FRAGMENT_MAX + 1)
        # Legacy advertising has 31 bytes: flags and the name go first (a
        # phone finds the lock by name, and Bumble's virtual link delivers
        # only the advertising data), the 128-bit service UUID with them
        # when it fits (names of up to 8 bytes), else in the scan response.
        n = self.name
        adv = _ad(0x01, b"\x06")   # LE General Discoverable, BR/EDR off
        adv += _ad(0x09, n) if len(n) <= _NAME_MAX else _ad(0x08, n[:_NAME_MAX])
        uuid = _ad(0x07, bytes(SERVICE))
        if len(adv) + len(uuid) <= _ADV_MAX:
            self.adv, self.resp = adv + uuid, None
        else:
            self.adv, self.resp = adv, uuid
        self._say_address()

    def _say_address(self):
        addr = self.ble.config("mac")[1]
        self.say("BLE: advertising %s from %s (random static)" % (
            self.name.decode(), ":".join("%02x" % x for x in addr)))

    def _advertise(self):
        try:
            self.ble.gap_advertise(_ADV_INTERVAL_US, adv_data=self.adv, resp_data=self.resp)
            self.adv_fault = False  # (a restart may have ended the last fault)
            return
        except OSError as e:
            # NimBLE resets its host when the controller does not answer
            # an HCI command within 2 s (or reports a hardware error); the
            # reset clears the random address, which MicroPython sets only
            # at the first sync, so every advertising call fails from then
            # on (BLE_HS_ENOADDR) and no phone finds the lock until it
            # reboots. Set the address again (a new random static one, on
            # the ESP32 port as in the simulator: phones find the lock by
            # name) and advertise; a second failure is raised (serve backs
            # off). Said once per fault.
            if not self.adv_fault:
                self.say("BLE: advertising failed (%r): setting the address again" % (e,))
                self.adv_fault = True
        self.ble.config(addr_mode=_ADDR_RANDOM_STATIC)
        self.ble.gap_advertise(_ADV_INTERVAL_US, adv_data=self.adv, resp_data=self.resp)
        self.adv_fault = False
        self._say_address()

    def _irq(self, event, data):
        # Only copies and signals (runs in the scheduler, between bytecodes).
        if event == _IRQ_GATTS_WRITE:
            conn, attr = data
            if conn != self.conn or attr != self.h_request or self.pending != frag.MORE:
                return
            started = self.reasm.active
            r = self.reasm.feed(self.ble.gatts_read(attr))
            self.last_ms = time.ticks_ms()
            if r != frag.MORE:
                self.pending = r
                self.flag.set()
            elif not started:
                self.flag.set()  # a message began: the task's timer is now stall_ms
        elif event == _IRQ_CENTRAL_CONNECT:
            if self.conn is None:
                self.conn = data[0]
                self.connects += 1
                self.mtu = _DEFAULT_MTU
                self.flag.set()
            else:
                self.ble.gap_disconnect(data[0])  # one phone at a time
        elif event == _IRQ_CENTRAL_DISCONNECT:
            if data[0] == self.conn:
                self.conn = None
                self.flag.set()
        elif event == _IRQ_MTU_EXCHANGED:
            if data[0] == self.conn:
                self.mtu = data[1]

    async def serve(self):
        """Advertise, serve a phone, advertise again; forever. A fault of
        the radio or of a session is said and recovered from: the phone
        being served is hung up on (it sees the link end, never a session
        that went on under another peer identity), advertising resumes,
        after 1, 2, 4, 8 s while faults go on (each call into a controller
        that does not answer blocks for 2 s). The first fault of a fault
        period is said, the ones that follow it are not, and its end is
        said ("advertising again"). Faults that last `_RESTART_MS` restart
        the radio (`restart()`), and again each `_RESTART_MS` they go on; a
        restart that fails (no controller comes up) is tried again at each
        retry: whatever state the host stack is stuck in, the lock comes
        back without a reboot."""
        delay = 1
        fault_t0 = None  # ticks of the first fault of the period, None: no fault
        restarted = None  # ticks of the last restart of this period
        down = False  # a restart failed: the radio is off until one works
        while True:
            try:
                if down:
                    self.restart()
                    down = False
                seen = self.connects
                # No phone may read the last connection's Challenge (its
                # nonce belongs to another peer: nonce_unknown) or Result
                # before this connection's task has run: both read empty
                # until then, and a phone that reads an empty Challenge
                # waits for its notification.
                self.ble.gatts_write(self.h_challenge, b"")
                self.ble.gatts_write(self.h_result, b"")
                self._advertise()
                if fault_t0 is not None:
                    self.say("BLE: advertising again after %d s of faults"
                             % (time.ticks_diff(time.ticks_ms(), fault_t0) // 1000))
                    fault_t0 = None
                    delay = 1
                t0 = time.ticks_ms()
                while self.conn is None and self.connects == seen:
                    await self._wait(_READVERTISE_MS)
                    if self.conn is None and self.connects == seen \
                            and time.ticks_diff(time.ticks_ms(), t0) >= _READVERTISE_MS:
                        # A host reset while advertising (a controller
                        # error) stops it and nothing tells the lock: a
                        # lock no phone finds, until a reboot. Restart it.
                        self._advertise()
                        t0 = time.ticks_ms()
                if self.conn is None:
                    # A phone connected (which stopped advertising) and left
                    # before this task ran: the two events woke it once.
                    # Advertise again.
                    continue
                self.connections += 1
                # The peer identity (nonces, lockout, store): bytes, as the
                # CoAP transports' addresses are, so tables compare like with like.
                try:
                    await self._session(self.conn, ("ble:%d" % self.connections).encode())
                finally:
                    await self._hang_up()
                    self.reasm.restore()
                delay = 1
            except Exception as e:  # the radio failed: say so, try again
                now = time.ticks_ms()
                if fault_t0 is None:
                    fault_t0 = restarted = now
                    self.say("BLE: %r (trying again in %d s; while faults last they are not said again)"
                             % (e, delay))
                elif not down and time.ticks_diff(now, restarted) >= _RESTART_MS:
                    # (Down: this fault is a restart at the loop's top that
                    # failed; the next one is at the next retry, not now.)
                    restarted = now
                    self.say("BLE: faults for %d s: restarting the radio"
                             % (time.ticks_diff(now, fault_t0) // 1000))
                    # The fault may have just waited 2 s for the controller,
                    # and a restart whose controller does not come up waits
                    # 2 s for its sync: nothing else runs during either.
                    # The lock's other tasks (CoAP, the relock timer) run
                    # in between.
                    await asyncio.sleep_ms(_BREATHE_MS)
                    try:
                        self.restart()
                        delay = 1
                        continue
                    except Exception as e2:
                        # Tried again at each retry until it comes up.
                        self.say("BLE: the radio did not restart (%r)" % (e2,))
                        down = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    def restart(self):
        """Turn the radio off (when it is on) and bring it up (`start()`):
        the host stack and the controller begin from scratch, with the
        service registered anew; also the first start. A phone connected
        is gone. Raises OSError when the controller does not come up."""
        self.conn = None
        try:
            bluetooth.BLE().active(False)  # (the one radio: self.ble once started)
        except OSError:
            pass  # already down
        self.start()

    async def _hang_up(self):
        conn = self.conn
        if conn is not None:
            try:
                self.ble.gap_disconnect(conn)
            except OSError:
                pass  # already gone
            t0 = time.ticks_ms()
            while self.conn is not None and time.ticks_diff(time.ticks_ms(), t0) < 2000:
                await self._wait(100)
            self.conn = None

    async def _wait(self, ms):
        try:
            await asyncio.wait_for_ms(self.flag.wait(), ms)
        except asyncio.TimeoutError:
            pass

    async def _session(self, conn, peer):
        t0 = self.last_ms = time.ticks_ms()
        self.reasm.reset()
        self.pending = frag.MORE
        try:
            self._send(self.h_challenge, conn, self.access.challenge(peer))
        except OSError as e:
            self.say("BLE: cannot send the Challenge (%r), hanging up (%s)" % (e, peer.decode()))
            return
        discarded = 0
        while self.conn == conn:
            p = self.pending
            if p != frag.MORE:
                if p == frag.COMPLETE:
                    # The chunks the message does not use and the fragments'
                    # garbage go before the decision allocates: what it keeps
                    # fills the lowest holes first, and the verification's
                    # larger buffers find the chunks' room whole (ble.frag).
                    self.reasm.lend()
                    gc.collect()
                    try:
                        out, d = self.access.request(self.reasm, peer)
                    except MemoryError:
                        # Out of heap outside the authorizer's check (its
                        # log, the answer): the door did not move. Say so.
                        gc.collect()
                        out, d = self.access.result(False, reasons.NO_MEMORY), None
                        self.say("BLE: no heap to decide (%s)" % peer.decode())
                    if d is not None:
                        try:
                            self.say("BLE: %s %s (%s)%s" % (
                                d.permission, "granted" if d.granted else "denied " + reasons.name(d.reason),
                                peer.decode(), "" if d.seq is None else " seq %d" % d.seq))
                        except MemoryError:
                            pass  # the Result still goes out
                else:
                    out = self.access.invalid(frag.FAULTS[p])
                    self.say("BLE: message discarded: %s (%s)" % (frag.FAULTS[p], peer.decode()))
                    discarded += 1
                self.reasm.restore()  # writes wait for pending: no chunk is in use
                self.pending = frag.MORE
                sent = self._answer(conn, peer, out)
                if discarded >= _DISCARDS_MAX:
                    # A phone that keeps writing garbage keeps the lock
                    # (and the console) busy: it gets the Result, then the
                    # link ends.
                    self.say("BLE: %d messages discarded, hanging up (%s)" % (discarded, peer.decode()))
                    return
                if not sent:
                    return
                continue
            now = time.ticks_ms()
            left = self.conn_ms - time.ticks_diff(now, t0)
            quiet = time.ticks_diff(now, self.last_ms)
            if left <= 0:
                self.say("BLE: connection time limit, hanging up (%s)" % peer.decode())
                return
            if self.reasm.active:
                if quiet >= self.stall_ms:
                    self.reasm.reset()
                    self.say("BLE: message discarded: transfer_stalled (%s)" % peer.decode())
                    if not self._answer(conn, peer, self.access.invalid("transfer_stalled")):
                        return
                    continue
                wait = self.stall_ms - quiet
            else:
                if quiet >= self.idle_ms:
                    # Idle: make way for the next phone.
                    self.say("BLE: idle, hanging up (%s)" % peer.decode())
                    return
                wait = self.idle_ms - quiet
            await self._wait(min(wait, left))

    def _send(self, handle, conn, msg):
        # The value for reads (a long read gives it whole), and its
        # notifications.
        self.ble.gatts_write(handle, msg)
        self._notify(handle, conn, msg)

    def _notify(self, handle, conn, msg):
        # Notifications cut into PROFILE sec. 5 fragments of the ATT
        # payload, each built in the one preallocated buffer.
        mv = memoryview(msg)
        out = self._out
        step = min(self.mtu - 4, _OUT_MAX)
        seq = 0
        i = 0
        n = len(msg)
        while True:
            k = min(step, n - i)
            out[0] = seq | (frag.LAST if i + k >= n else 0)
            out[1:1 + k] = mv[i:i + k]
            self.ble.gatts_notify(conn, handle, out[:1 + k])
            i += k
            if i >= n:
                return
            seq = (seq + 1) & 0x7F

    def _answer(self, conn, peer, result):
        """Result, then a fresh Challenge (PROFILE sec. 5: after every
        attempt). False when they could not be sent: the session ends."""
        self.last_ms = time.ticks_ms()
        try:
            # The next nonce is the Challenge's value before the Result goes
            # out: a phone that reads the Challenge on its Result never gets
            # the spent one (on the ESP32 NimBLE answers reads from its own
            # task, at any moment).
            challenge = self.access.challenge(peer)
            self.ble.gatts_write(self.h_challenge, challenge)
            self._send(self.h_result, conn, result)
            self._notify(self.h_challenge, conn, challenge)
            return True
        except OSError as e:
            if self.conn == conn:
                # Still connected (NimBLE out of buffers, its host reset):
                # the phone would wait for a Result that never comes.
                # Hang up instead: it sees the link end and can try again.
                self.say("BLE: cannot answer (%r), hanging up (%s)" % (e, peer.decode()))
            return False  # (or the phone left between its write and the answer)


def _peripheral(app, say):
    from ble.access import Access
    cfg = app.cfg
    return Peripheral(Access(app.authz, app.actuator, cfg.resources, cfg.device_id), cfg.device_id, say,
                      cfg.ble_stall_ms, cfg.ble_idle_ms, cfg.ble_conn_ms)


async def run(app, say=print):
    """The board's hook, as a task created before asyncio.run: BLE starts
    once the lock's other transports have taken their long-lived blocks
    (LockApp.run opens them before its first await), so its own buffers
    do not split the heap under the DTLS contexts' large ones. A radio
    that does not come up (NimBLE waits 2 s for the controller's sync) is
    said and tried again after 1, 2, 4 ... up to 60 s, for as long as the
    lock runs: BLE is how phones reach it. No heap for it is said once
    and leaves the other transports on."""
    await asyncio.sleep_ms(0)
    p = None
    attempt = 0
    delay = 1
    while True:
        try:
            if p is None:
                p = _peripheral(app, say)
            p.restart()  # (off first: an attempt that failed may have left it half up)
            break
        except OSError as e:
            say("BLE: off for now (the HCI controller did not come up: %s); trying again in %d s"
                % (e, delay))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60)
        except MemoryError:
            gc.collect()  # once more on a collected heap, then give up
            if attempt:
                say("BLE: off (no heap for it)")
                return
            attempt = 1
    gc.collect()
    say("BLE: heap %d bytes free" % gc.mem_free())
    await p.serve()
