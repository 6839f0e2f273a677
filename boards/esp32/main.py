"""ESP32 entry point: Wi-Fi up, sockets opened here and handed to the lock.

The firmware modules are frozen or copied as .mpy by `lockctl deploy`;
the provisioning bundle lives in /bundle on the board's littlefs.
"""
import asyncio
import json
import time

import machine
import network

import board
from actuator_gpio import GpioActuator
from lock import config
from lock.endpoints import coaps as endpoints_coaps
from lock.endpoints import open_all as endpoints_open
from lock.app import LockApp
from lock.clock import Clock


def wifi(timeout_ms=20000):
    try:
        with open(board.WIFI) as f:
            w = json.load(f)
    except (OSError, ValueError):
        print("no %s: Wi-Fi stays off" % board.WIFI)
        return None
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    sta.connect(w["ssid"], w["password"])
    t0 = time.ticks_ms()
    while not sta.isconnected():
        if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
            print("Wi-Fi: no connection to %s" % w["ssid"])
            return None
        time.sleep_ms(100)
    print("Wi-Fi: %s" % (sta.ifconfig()[0],))
    return sta


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


def main():
    cfg = config.load(board.BUNDLE + "/lock.json")
    clock = Clock()  # unsynced until something trusted sets it
    act = GpioActuator(clock.uptime_ms, cfg.relock_ms, board.RELAY_PIN, board.RELAY_ACTIVE_HIGH,
                       board.BOLT_SENSOR_PIN, board.EXTRA_OUTPUTS,
                       lambda what, why: print("door:", what, why))
    endpoints = []
    up = wifi()
    if up and cfg.clock == "ntp":
        t = ntp_time()
        if t:
            clock.set_wall(t)
    if up:
        endpoints = endpoints_open(cfg, print)
    # The CoAPS server is built before the state is restored (LockApp).
    app = LockApp(cfg, board.ROOT, act, clock, print, endpoints_coaps(endpoints, cfg, board.BUNDLE))
    if cfg.ble_enabled:
        # PROFILE sec. 5: the GATT peripheral on the ESP32's NimBLE (it
        # starts once the loop runs; a radio that does not come up leaves
        # the lock on its other transports).
        from ble import peripheral
        asyncio.create_task(peripheral.run(app))
    asyncio.run(app.run(endpoints))


try:
    main()
except Exception as e:
    # Fail secure: the relay is released by the reset; log and restart.
    import sys
    sys.print_exception(e)
    time.sleep(5)
    machine.reset()
