"""Board entry: from a started board to a serving lock.

main.py (on the filesystem) calls `main()`; boot.py has already run
board.start(), which released the relay. The order matters:

1. the board's data (board.json) and the relay: boot.py, first of all;
2. the filesystem: the lock runs only on littlefs (Board.storage_refusal);
3. the pairing button: physical presence at boot (Board.presence_at_boot);
4. the bundle's configuration;
5. the watchdog (machine.WDT, board.json "wdt_timeout_ms"), fed from here
   on: during the Wi-Fi retries, then by a task of the main loop;
6. the actuator, Wi-Fi with retries and backoff, the endpoints, LockApp.

A refusal at 1, 2 or 4 (or a lock with no transport: BLE off and no
Wi-Fi credentials or no CoAP endpoint) prints why and returns to the REPL with the relay
released (locked) and no watchdog running, so the board can be repaired
over USB; it does not start the lock.
"""
import asyncio
import time

import board
import machine
from lock import config
from lock.app import LockApp
from lock.clock import Clock


def ntp_time():
    """Unix seconds from NTP, or None. Opt-in ("clock": "ntp"): NTP is not
    authenticated, so whoever controls the network can move the clock and
    replay expired tokens; the AS uplink is the trusted source."""
    try:
        import ntptime
        ntptime.settime()
    except Exception as e:
        print("NTP: %s" % e)
        return None
    # Some ports count from 2000-01-01, the unix port from 1970.
    return time.time() + (946684800 if time.gmtime(0)[0] == 2000 else 0)


async def feed_watchdog(wdt, period_ms):
    """Task: the loop is alive as long as this runs; a task that blocks
    the loop starves it and the watchdog resets the board (relay released
    by the reset: locked)."""
    while True:
        wdt.feed()
        await asyncio.sleep_ms(period_ms)


def refuse(why):
    print("REFUSED: %s; the lock stays locked and does not start" % why)


def start_board(path=None):
    """board.start() as boot.py ran it; None (said why) on a bad board.json."""
    try:
        return board.start(path)
    except board.BoardError as e:
        refuse("board: %s" % e)
        return None


def prepare(path=None):
    """Steps 1-4: (board, configuration), or None after a refusal."""
    b = start_board(path)
    if b is None:
        return None
    why = b.storage_refusal()
    if why:
        refuse(why)
        return None
    if b.presence_at_boot():
        # The lock takes a rebind.cbor in its bundle only with this (step 6).
        print("pairing button held %d ms at boot: physical presence" % b.hold_ms)
    try:
        cfg = config.load(b.bundle + "/lock.json")
    except (config.ConfigError, OSError) as e:
        refuse("configuration: %s" % (e,))
        return None
    return b, cfg


def main(path=None):
    ready = prepare(path)
    if ready is None:
        return
    b, cfg = ready
    creds = None
    try:
        import wlan
        creds = wlan.credentials(b.wifi)
    except (OSError, ValueError) as e:
        print("Wi-Fi off: %s: %s" % (b.wifi, e))
    coap_on = cfg.coaps_enabled or cfg.coap_enabled or cfg.coap_authz_info
    if not cfg.ble_enabled and not (creds and coap_on):
        refuse("no transport: BLE off and %s" % (
            "no CoAP endpoint in lock.json" if creds else "no Wi-Fi credentials in %s" % b.wifi))
        return
    wdt = b.watchdog()
    feed = wdt.feed
    clock = Clock()  # unsynced until something trusted sets it

    def event(what, why):
        b.set_led(what == "unlocked")
        print("door:", what, why)

    from actuator_gpio import GpioActuator
    act = GpioActuator(clock.uptime_ms, cfg.relock_ms, b, event)
    print("door %s, bolt %s" % ({None: "sensor absent", True: "closed", False: "open"}[b.door_closed()],
                                {None: "sensor absent", True: "thrown", False: "retracted"}[b.bolt_locked()]))
    sta = None
    up = False
    if creds:
        sta = wlan.station()
        up = wlan.connect(sta, creds[0], creds[1], b, print, feed)
    if not up and not cfg.ble_enabled:
        # Wi-Fi is the only transport and is down: start over after a wait
        # (fed), as after a power cut: relay released, locked.
        wait = b.wifi_backoff_max_ms
        print("no transport: Wi-Fi down and BLE off; restarting in %d ms" % wait)
        wlan.sleep(wait, feed)
        machine.reset()
    endpoints = []
    if up:
        if cfg.clock == "ntp":
            t = ntp_time()
            if t:
                clock.set_wall(t)
        from lock.endpoints import open_all
        endpoints = open_all(cfg, print)
    feed()
    from lock.endpoints import coaps
    # The CoAPS server is built before the state is restored (LockApp).
    # The uplink to the AS (PROFILE sec. 7) when Wi-Fi is up: LockApp calls
    # the factory with the AS it trusts (a rebinding's, when there is one).
    uplink = None
    if up:
        from coap import dtls_client
        bundle = b.bundle
        uplink = lambda c: dtls_client.from_config(c, bundle, print)  # noqa: E731
    app = LockApp(cfg, b.root, act, clock, print, coaps(endpoints, cfg, b.bundle), uplink)
    feed()
    # A lock whose AS is gone: the bundle's rebind.cbor, with physical presence.
    app.rebind_at_boot(b.bundle, b.presence_at_boot())
    feed()
    if cfg.ble_enabled:
        # PROFILE sec. 5: the GATT peripheral on the port's NimBLE.
        from ble import peripheral
        asyncio.create_task(peripheral.run(app))
    if sta is not None:
        # The sockets are opened only with a connection: a lock that came
        # up without one restarts when Wi-Fi returns, to open them.
        asyncio.create_task(wlan.keep(sta, creds[0], creds[1], b, print,
                                      None if endpoints else machine.reset))
    asyncio.create_task(feed_watchdog(wdt, b.wdt_timeout_ms // 4))
    print("lock %s on %s: boot %d, door %s" % (cfg.device_id, b.name, app.log.boot, act.state()))
    asyncio.run(app.run(endpoints))
