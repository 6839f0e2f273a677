"""Unix-port stand-in for the ESP32 `machine` module (tests only): Pin with
the documented constructor, constants and value() semantics; every write
is recorded so tests can read what the board would have driven."""
LOG = []
_LEVELS = {}


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
            return _LEVELS.get(self.id, 0)
        v = 1 if v else 0
        _LEVELS[self.id] = v
        LOG.append((self.id, v))
        return None

    def __call__(self, v=None):
        return self.value(v)


def set_input(pin_id, level):
    """Test hook: what an external switch does to an input pin."""
    _LEVELS[pin_id] = level


def reset():
    raise SystemExit("machine.reset()")
