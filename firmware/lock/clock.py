"""Hardware layer: the lock's clocks.

Uptime in ms from the board's tick counter (wrap-safe, accumulated), a boot
counter from the log, and a wall clock that is None until something trusted
sets it (the AS uplink, NTP, or, in the simulator, the host's clock).
"""
import time

try:
    _ticks = time.ticks_ms
    _diff = time.ticks_diff
except AttributeError:  # CPython, for the host tests
    def _ticks():
        return int(time.monotonic() * 1000)

    def _diff(a, b):
        return a - b


class Clock:
    def __init__(self):
        self._last = _ticks()
        self._uptime = 0
        self._wall_base = None  # wall seconds at uptime 0, when synced

    def uptime_ms(self):
        # ticks_ms wraps (2**30 ms on MicroPython); accumulate differences.
        t = _ticks()
        self._uptime += _diff(t, self._last)
        self._last = t
        return self._uptime

    def uptime_s(self):
        return self.uptime_ms() // 1000

    def set_wall(self, unix_s):
        self._wall_base = unix_s - self.uptime_ms() / 1000

    def wall(self):
        if self._wall_base is None:
            return None
        return int(self._wall_base + self.uptime_ms() / 1000)

    def synced(self):
        return self._wall_base is not None
