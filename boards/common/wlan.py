"""Board Wi-Fi: the station interface with retries and exponential backoff.

`connect` runs at boot, before the loop, feeding the watchdog while it
waits; `keep` is a task that reconnects with the same backoff when the
access point goes away. Figures come from board.json ("wifi"); the
credentials from the board's Wi-Fi file ({"ssid": ..., "password": ...}).
Written against the documented `network.WLAN` API (active, connect,
isconnected, status, disconnect, ifconfig).
"""
import json
import time

import network
from micropython import const

_POLL_MS = const(100)
_SLICE_MS = const(500)      # sleeps are cut so the watchdog is fed in between


def credentials(path):
    """(ssid, password), or None with the reason printed by the caller."""
    with open(path) as f:
        w = json.load(f)
    if not isinstance(w, dict) or not isinstance(w.get("ssid"), str) or not w["ssid"]:
        raise ValueError("needs {\"ssid\": ..., \"password\": ...}")
    pw = w.get("password", "")
    if not isinstance(pw, str):
        raise ValueError("password: a string")
    return w["ssid"], pw


def backoff(board):
    """The waits between attempts: backoff_ms, doubling, capped at backoff_max_ms."""
    d = board.wifi_backoff_ms
    while True:
        yield d
        d = min(d * 2, board.wifi_backoff_max_ms)


def sleep(ms, feed):
    """time.sleep_ms(ms), feeding the watchdog every 500 ms."""
    while ms > 0:
        feed()
        n = min(ms, _SLICE_MS)
        time.sleep_ms(n)
        ms -= n
    feed()


def _connect(sta, ssid, pw):
    # The port raises OSError when the radio is busy or not started: that
    # is a failed attempt, not a reason to stop retrying.
    try:
        sta.connect(ssid, pw)
        return True
    except OSError as e:
        print("Wi-Fi: connect(%s): %s" % (ssid, e))
        return False


def _attempt(sta, ssid, pw, timeout_ms, feed):
    if not _connect(sta, ssid, pw):
        return False
    t0 = time.ticks_ms()
    while not sta.isconnected():
        if time.ticks_diff(time.ticks_ms(), t0) >= timeout_ms:
            return False
        sleep(min(_POLL_MS, timeout_ms), feed)
    return True


def _give_up(sta):
    try:
        sta.disconnect()
    except OSError:
        pass


def station():
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    return sta


def connect(sta, ssid, pw, board, say, feed=lambda: None):
    """Up to wifi.attempts attempts of connect_timeout_ms each, waiting
    backoff_ms, 2x, 4x... (capped) in between. True when connected."""
    waits = backoff(board)
    for i in range(board.wifi_attempts):
        if _attempt(sta, ssid, pw, board.wifi_timeout_ms, feed):
            say("Wi-Fi: %s (attempt %d)" % (sta.ifconfig()[0], i + 1))
            return True
        _give_up(sta)
        if i + 1 < board.wifi_attempts:
            wait = next(waits)
            say("Wi-Fi: no connection to %s (attempt %d of %d, status %s); next in %d ms" % (
                ssid, i + 1, board.wifi_attempts, sta.status(), wait))
            sleep(wait, feed)
    say("Wi-Fi: no connection to %s after %d attempts" % (ssid, board.wifi_attempts))
    return False


async def keep(sta, ssid, pw, board, say, on_up=None):
    """Task: every wifi.check_ms, reconnect a dropped station, with the
    same backoff between failed attempts (reset once it connects).
    `on_up()` is called after each reconnection."""
    import asyncio
    waits = None
    while True:
        await asyncio.sleep_ms(board.wifi_check_ms)
        if sta.isconnected():
            waits = None
            continue
        _connect(sta, ssid, pw)
        t0 = time.ticks_ms()
        while not sta.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < board.wifi_timeout_ms:
            await asyncio.sleep_ms(min(_POLL_MS, board.wifi_timeout_ms))
        if sta.isconnected():
            waits = None
            say("Wi-Fi: reconnected, %s" % (sta.ifconfig()[0],))
            if on_up:
                on_up()
            continue
        _give_up(sta)
        waits = waits or backoff(board)
        wait = next(waits)
        say("Wi-Fi: reconnection to %s failed (status %s); next in %d ms" % (ssid, sta.status(), wait))
        await asyncio.sleep_ms(wait)
