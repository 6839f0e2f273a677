"""Unix-port stand-in for the ESP32 `machine` module (tests only): Pin with
the documented constructor, constants and value() semantics, WDT(timeout=)
with feed(), reset(); every pin write and every WDT call is recorded in
LOG so tests can read what the board would have done, in order."""
import time

LOG = []
_LEVELS = {}
_SCRIPTS = {}


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1

    def __init__(self, id, mode=-1, pull=-1, *, value=None):
        if not isinstance(id, int) or not 0 <= id <= 39:
            raise ValueError("invalid pin")
        if mode == Pin.OUT and 34 <= id <= 39:
            raise ValueError("pin can only be input")
        self.id = id
        self.mode = mode
        self.pull = pull
        if value is not None:
            self.value(value)
        elif id not in _LEVELS:
            _LEVELS[id] = 1 if pull == Pin.PULL_UP else 0

    def value(self, v=None):
        if v is None:
            s = _SCRIPTS.get(self.id)
            if s:
                _LEVELS[self.id] = s.pop(0)
            return _LEVELS.get(self.id, 0)
        v = 1 if v else 0
        _LEVELS[self.id] = v
        LOG.append((self.id, v))
        return None

    def __call__(self, v=None):
        return self.value(v)


class WDT:
    """`feeds` holds the ticks_ms of every feed; STOP_AFTER_MS (tests): the
    first feed that long after the WDT started raises SystemExit, which
    ends asyncio.run (it is not an Exception)."""
    STOP_AFTER_MS = None
    instances = []

    def __init__(self, id=0, timeout=5000):
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        self.timeout = timeout
        self.t0 = time.ticks_ms()
        self.feeds = []
        WDT.instances.append(self)
        LOG.append(("WDT", timeout))

    def feed(self):
        now = time.ticks_ms()
        self.feeds.append(now)
        if WDT.STOP_AFTER_MS is not None and time.ticks_diff(now, self.t0) >= WDT.STOP_AFTER_MS:
            raise SystemExit("stand-in WDT: stop")


def set_input(pin_id, level):
    """Test hook: what an external switch does to an input pin."""
    _LEVELS[pin_id] = level


def script_input(pin_id, levels):
    """Test hook: the levels the next reads of an input return, in order
    (then the last one stays)."""
    _SCRIPTS[pin_id] = list(levels)


def reset():
    LOG.append(("reset",))
    raise SystemExit("machine.reset()")
