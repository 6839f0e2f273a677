"""Simulated board entry point (`lockctl board`): the lock as the ESP32's
main.py starts it, from what `lockctl deploy --board unix` put on the
littlefs root: the bundle in /bundle, the lock's files in /data, the
firmware frozen in the interpreter or as .mpy in /lib. The host's network
stands in for Wi-Fi; the actuator is simulated and prints every move
("EVENT ..."). Prints READY once serving.
"""
import asyncio
import time

import machine

from lock import config
from lock.endpoints import coaps as endpoints_coaps
from lock.endpoints import open_all as endpoints_open
from lock.actuator import SimActuator
from lock.app import LockApp
from lock.clock import Clock

BUNDLE = "/bundle"
# Not /lock: the board runs main.py with '' (the root) first on sys.path,
# so a directory /lock would be imported as the package `lock` (a
# namespace package) in place of the firmware's, from the second boot on.
ROOT = "/data"


def main():
    cfg = config.load(BUNDLE + "/lock.json")
    clock = Clock()
    if cfg.clock == "system":
        clock.set_wall(int(time.time()))
    act = SimActuator(clock.uptime_ms, cfg.relock_ms, lambda what, why: print("EVENT %s %s" % (what, why)))
    endpoints = endpoints_open(cfg, print)
    app = LockApp(cfg, ROOT, act, clock, print, endpoints_coaps(endpoints, cfg, BUNDLE))
    import lock
    print("lock %s: boot %d, next seq %d, clock %s, door %s, firmware %s" % (
        cfg.device_id, app.log.boot, app.log.next_seq, "synced" if clock.synced() else "unsynced",
        act.state(), "frozen" if lock.__file__[0] != "/" else lock.__file__.rsplit("/", 2)[0]))
    import gc
    asyncio.gather, asyncio.sleep_ms  # load asyncio's lazily imported parts now
    gc.collect()
    print("heap: %d of %d bytes free" % (gc.mem_free(), gc.mem_free() + gc.mem_alloc()))
    print("READY")
    try:
        asyncio.run(app.run(endpoints))
    except KeyboardInterrupt:
        # Ctrl-C (mpremote, deploy's probe) stops the relock task with the
        # lock: drive the door locked before the REPL has the board.
        act.lock("stopped")
        raise


try:
    main()
except Exception as e:
    # As on the ESP32: the door stays locked through a reset; show why.
    import sys
    sys.print_exception(e)
    time.sleep(1)
    machine.reset()
