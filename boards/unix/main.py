"""The simulator: the lock on the MicroPython unix port.

usage: micropython boards/unix/main.py --bundle DIR [--flash IMAGE] [--port N] [--presence]

`--presence` stands for the board's pairing button held at boot (physical
presence): with it the lock takes the bundle's rebind.cbor, if there is one
(lock.rebind: moving a lock whose AS is gone to another AS).

Files live where the board keeps them: in littlefs (VfsLfs2) on a
file-backed block device mounted at /flash. The actuator is simulated and
prints every move ("EVENT ..."), so a person or a test can watch the door.
"""
import asyncio
import sys
import time

import blockdev
from lock import config
from lock.endpoints import coaps as endpoints_coaps
from lock.endpoints import open_all as endpoints_open
from lock.actuator import SimActuator
from lock.app import LockApp
from lock.clock import Clock


def _args(argv):
    a = {"bundle": None, "flash": None, "port": None, "presence": False}
    i = 1
    while i < len(argv):
        k = argv[i]
        if k in ("--bundle", "--flash", "--port") and i + 1 < len(argv):
            a[k[2:]] = argv[i + 1]
            i += 2
        elif k == "--presence":
            a["presence"] = True
            i += 1
        else:
            print("usage: main.py --bundle DIR [--flash IMAGE] [--port N] [--presence]")
            sys.exit(2)
    if not a["bundle"]:
        print("main.py: --bundle DIR is required")
        sys.exit(2)
    return a


def say(*args):
    print(*args)


def ble_up(app):
    """The BLE transport (PROFILE sec. 5) on NimBLE over the HCI UART that
    MICROPYBTUART names (the virtual controller of `lockctl sim --ble`);
    without one the lock runs without BLE and says so. True if BLE starts
    (in a task, once the loop runs)."""
    import os
    if not os.getenv("MICROPYBTUART"):
        say("BLE: off (no MICROPYBTUART: no HCI controller; `lockctl sim --ble` starts one)")
        return False
    from ble import peripheral
    asyncio.create_task(peripheral.run(app, say))
    return True


def main():
    a = _args(sys.argv)
    try:
        cfg = config.load(a["bundle"] + "/lock.json")
    except config.ConfigError as e:
        print("FATAL configuration: %s" % e)
        sys.exit(3)
    flash = a["flash"] or a["bundle"] + "/flash.img"
    blockdev.mount(flash, "/flash")
    clock = Clock()
    if cfg.clock == "system":
        clock.set_wall(int(time.time()))
    act = SimActuator(clock.uptime_ms, cfg.relock_ms,
                      lambda what, why: say("EVENT %s %s" % (what, why)))
    try:
        endpoints = endpoints_open(cfg, say, int(a["port"]) if a["port"] else None)
        coaps = endpoints_coaps(endpoints, cfg, a["bundle"])
    except config.ConfigError as e:
        print("FATAL configuration: %s" % e)
        sys.exit(3)
    # The uplink to the AS (PROFILE sec. 7): the factory of its connector,
    # whose DTLS context is made for a session only (coap/dtls_client.py);
    # LockApp calls it with the AS the lock trusts (a rebinding's).
    from coap import dtls_client
    bundle = a["bundle"]
    app = LockApp(cfg, "/flash/lock", act, clock, say, coaps, lambda c: dtls_client.from_config(c, bundle, say))
    coaps = None
    app.rebind_at_boot(a["bundle"], a["presence"])
    ble = cfg.ble_enabled and ble_up(app)
    if not endpoints and not ble:
        print("FATAL: no transport enabled")
        sys.exit(3)
    say("lock %s: boot %d, next seq %d, clock %s, door %s" % (
        cfg.device_id, app.log.boot, app.log.next_seq,
        "synced" if clock.synced() else "unsynced", act.state()))
    # The firmware is frozen (boards/unix/variant), so the heap holds what a
    # board's would: report what is left for serving.
    import gc
    import os
    asyncio.gather, asyncio.sleep_ms  # load asyncio's lazily imported parts now
    gc.collect()
    # With the ESP32's heap growth modelled, gc.mem_free() counts what the
    # system heap can still add (as on the board), and a growth is said by
    # the simulator ("SIM heap: area ... added").
    if int(os.getenv("MICROPY_SIM_HEAP_GROW") or 0):
        say("heap: %d bytes in use, %d free counting what it can still grow into" % (
            gc.mem_alloc(), gc.mem_free()))
    else:
        say("heap: %d of %d bytes free" % (gc.mem_free(), gc.mem_free() + gc.mem_alloc()))
    say("READY")
    asyncio.run(app.run(endpoints))


main()
