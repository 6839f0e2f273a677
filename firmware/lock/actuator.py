"""Hardware layer interface: the fail-secure door actuator.

Boots locked, relocks by itself `relock_ms` after an unlock, refuses to
move while a fault is latched. Boards subclass it and implement `_drive`
(and optionally `_sense`); the simulator's SimActuator records what it did.
"""
from micropython import const

_HISTORY = const(16)


class ActuatorFault(Exception):
    pass


class Actuator:
    def __init__(self, now_ms, relock_ms=5000, on_event=None):
        self.now_ms = now_ms
        self.relock_ms = relock_ms
        self.on_event = on_event
        self.fault = None
        self.relock_at = None
        self.moves = 0
        self.locked = True
        self._drive(True)  # fail-secure: whatever the relay was, lock at boot
        self._event("locked", "boot")

    # Board hooks -------------------------------------------------------
    def _drive(self, locked):
        # A board that cannot drive its bolt has nothing to move: fail closed.
        raise ActuatorFault("this board defines no drive")

    def _sense(self):
        """The bolt as a sensor reports it: True locked, False unlocked,
        None when the board has no sensor."""
        return None

    def _pulse(self, channel, ms):
        raise ActuatorFault("no output channel %s" % channel)

    # -------------------------------------------------------------------
    def _event(self, what, why):
        # Told after the move; a report that fails (no heap for the line)
        # must not undo or stop what the door did.
        if self.on_event:
            try:
                self.on_event(what, why)
            except Exception:
                pass

    def set_fault(self, why):
        self.fault = why
        self._event("fault", why)

    def clear_fault(self):
        self.fault = None
        self._event("fault-cleared", "")

    def ready(self):
        """None when the actuator can move, else why not."""
        if self.fault:
            return self.fault
        s = self._sense()
        if s is not None and s != self.locked:
            self.set_fault("sensor disagrees with command")
            return self.fault
        return None

    def unlock(self):
        if self.ready():
            raise ActuatorFault(self.fault)
        self._drive(False)
        self.locked = False
        self.moves += 1
        self.relock_at = self.now_ms() + self.relock_ms
        self._event("unlocked", "command")

    def lock(self, why="command"):
        # Locking is always attempted, even with a fault latched: fail secure.
        self._drive(True)
        self.locked = True
        self.moves += 1
        self.relock_at = None
        self._event("locked", why)

    def pulse(self, channel, ms=500):
        if self.ready():
            raise ActuatorFault(self.fault)
        self._pulse(channel, ms)
        self.moves += 1
        self._event("pulse", channel)

    def poll(self):
        """Called periodically by the application: the automatic relock."""
        if self.relock_at is not None and self.now_ms() - self.relock_at >= 0:
            self.lock("auto-relock")

    def state(self):
        return "locked" if self.locked else "unlocked"


class SimActuator(Actuator):
    """The simulator's actuator: no hardware, a history the tests can read."""

    def __init__(self, now_ms, relock_ms=5000, on_event=None):
        self.history = []
        self.sensor = None
        Actuator.__init__(self, now_ms, relock_ms, on_event)

    def _drive(self, locked):
        self._note("lock" if locked else "unlock")

    def _note(self, what):
        # The last _HISTORY moves: a lock runs for months.
        self.history.append(what)
        if len(self.history) > _HISTORY:
            del self.history[0]

    def _sense(self):
        return self.sensor

    def _pulse(self, channel, ms):
        self._note("pulse:" + channel)
