"""Hardware layer: the lock's clocks.

Uptime in ms from the board's tick counter, a boot counter from the log, and
a wall clock that is None until something trusted sets it (the AS uplink,
NTP, or, in the simulator, the host's clock).

Numbers as on the ESP32 (PROFILE sec. 6): `ticks_ms` wraps with a period of
2**30 ms (12.4 days), and `ticks_diff` is only meaningful for two readings
less than 2**29 ms (6.2 days) apart, so the uptime is accumulated from
differences and must be read at least that often (the app's relock task
reads it every 100 ms). Uptime and wall time are integers
(milliseconds; small ints turn into exact big ints past 2**30), never floats:
a single-precision float cannot hold a Unix time to the second (its step at
1.8e9 is 128 s).
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
    """`ticks_ms`/`ticks_diff` default to the board's (time module); tests
    hand in a tick counter they drive."""

    def __init__(self, ticks_ms=None, ticks_diff=None):
        self._ticks = ticks_ms or _ticks
        self._diff = ticks_diff or _diff
        self._last = self._ticks()
        self._uptime = 0
        self._wall_base_ms = None  # Unix ms at uptime 0, once synced

    def uptime_ms(self):
        """Milliseconds since boot (int, never wraps, never goes back)."""
        t = self._ticks()
        d = self._diff(t, self._last)
        if d > 0:
            self._uptime += d
        self._last = t
        return self._uptime

    def uptime_s(self):
        return self.uptime_ms() // 1000

    def set_wall(self, unix_s):
        """Set the wall clock to `unix_s` (int seconds since 1970)."""
        if not isinstance(unix_s, int):
            raise TypeError("unix_s must be int seconds")
        self._wall_base_ms = unix_s * 1000 - self.uptime_ms()

    def wall(self):
        """Unix seconds (int), or None while unsynced."""
        if self._wall_base_ms is None:
            return None
        return (self._wall_base_ms + self.uptime_ms()) // 1000

    def synced(self):
        return self._wall_base_ms is not None
