"""Numbers as the ESP32 has them: a 2**30 ms tick period, ticks_diff good
only below 2**29 ms, single-precision floats. The nonce table and the clock
are driven through days of uptime by a tick counter the test controls (the
board's own ticks_add/ticks_diff on MicroPython, the same arithmetic under
CPython). PROFILE sec. 3 (nonces expire after 30 s at any uptime) and sec. 6
(wall time in integers)."""
from mpunit import raises
from lock.clock import Clock
from trust import pop, reasons

_PERIOD = 1 << 30  # MICROPY_PY_TIME_TICKS_PERIOD on the ESP32 (and here)
_DAY_MS = 86400000

try:
    from time import ticks_add, ticks_diff
except ImportError:  # CPython: the board's arithmetic, spelled out
    def ticks_add(t, d):
        return (t + d) % _PERIOD

    def ticks_diff(a, b):
        return ((a - b + _PERIOD // 2) % _PERIOD) - _PERIOD // 2


class _Ticks:
    """A tick counter that starts near the wrap and is moved by hand."""

    def __init__(self, start=_PERIOD - 5000):
        self.t = start
        self.reader = None  # what the lock's housekeeping task reads

    def __call__(self):
        return self.t

    def advance(self, ms, step_ms=3600000):
        # The lock reads its clock every 100 ms (LockApp's relock task); an
        # hour between readings is far inside ticks_diff's range and keeps
        # the test short.
        while ms > 0:
            d = min(ms, step_ms)
            self.t = ticks_add(self.t, d)
            ms -= d
            if self.reader:
                self.reader()


def _clock():
    ticks = _Ticks()
    clock = Clock(ticks, ticks_diff)
    ticks.reader = clock.uptime_ms
    return ticks, clock


def test_tick_arithmetic_is_the_boards():
    assert ticks_diff(ticks_add(0, -1), 0) == -1
    assert ticks_add(_PERIOD - 1, 1) == 0
    # The trap: readings 2**29 ms or more apart look close (or reversed).
    # (ticks_add itself takes deltas below 2**29 only.)
    far = ticks_add(ticks_add(0, 1 << 28), (1 << 28) + 10)
    assert ticks_diff(far, 0) < 0


def test_uptime_accumulates_across_wraps():
    ticks, clock = _clock()
    total = 0
    for days in (1, 5, 6, 7, 12, 13, 30):
        ticks.advance(days * _DAY_MS)
        total += days * _DAY_MS
        assert clock.uptime_ms() == total, (days, clock.uptime_ms(), total)


def test_nonce_expires_at_every_age_of_the_tick_counter():
    # Ages spanning the 2**29..2**30 ms range where ticks_diff wraps
    # (6.2 to 12.4 days), and beyond.
    ages = [30001, 60000, _DAY_MS, (1 << 29) - 1, 1 << 29, (1 << 29) + 1,
            (1 << 29) + 12345678, 8 * _DAY_MS, 10 * _DAY_MS, (1 << 30) - 1,
            1 << 30, (1 << 30) + 30000, 40 * _DAY_MS]
    for age in ages:
        ticks, clock = _clock()
        clock.uptime_ms()
        table = pop.NonceTable(clock.uptime_ms)
        n = table.issue()
        ticks.advance(age)
        clock.uptime_ms()
        e = raises(reasons.Refused, table.consume, n)
        assert e.reason == reasons.NONCE_EXPIRED, (age, e.reason)


def test_nonce_fresh_within_ttl_after_weeks_of_uptime():
    ticks, clock = _clock()
    ticks.advance(20 * _DAY_MS)
    table = pop.NonceTable(clock.uptime_ms)
    n = table.issue()
    ticks.advance(29999)
    table.consume(n)  # still fresh: accepted


def test_wall_clock_exact_over_days_of_uptime():
    ticks, clock = _clock()
    ticks.advance(3 * _DAY_MS + 777)
    base = 1787063769  # a 2026 Unix time: not representable in float32
    clock.set_wall(base)
    assert clock.wall() == base
    for days in (1, 2, 7, 13, 40):
        ticks.advance(days * _DAY_MS)
        base += days * 86400
        assert clock.wall() == base, (days, clock.wall(), base)
    ticks.advance(999)
    assert clock.wall() == base
    ticks.advance(1)
    assert clock.wall() == base + 1


def test_wall_clock_refuses_a_float():
    _, clock = _clock()
    raises(TypeError, clock.set_wall, 1787063769.0)
    assert not clock.synced() and clock.wall() is None


def test_uptime_never_goes_back():
    ticks, clock = _clock()
    ticks.advance(1000)
    up = clock.uptime_ms()
    ticks.t = ticks_add(ticks.t, -5)  # a counter read out of order
    assert clock.uptime_ms() == up
