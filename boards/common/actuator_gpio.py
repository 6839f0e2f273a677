"""Board actuator: the relay on a GPIO, an optional bolt-position switch and
the extra output channels, as board.json describes them (boards/common/board.py).

Fail-secure wiring: the relay de-energised keeps the bolt thrown, so a
reset, a brown-out or a crash leaves the door locked. The bolt switch is
read back after each move; disagreement latches a fault.
"""
import time

from lock.actuator import Actuator


class GpioActuator(Actuator):
    def __init__(self, now_ms, relock_ms, board, on_event=None):
        # board.relay was driven de-energised by board.start(), before
        # anything else ran; Actuator.__init__ drives it locked once more.
        self._board = board
        self._relay = board.relay
        self._on = board.relay_spec.on
        self._outputs = {}
        for name, spec in board.outputs.items():
            self._outputs[name] = (spec.output(False), spec.on)
        Actuator.__init__(self, now_ms, relock_ms, on_event)

    def _drive(self, locked):
        self._relay.value(1 - self._on if locked else self._on)

    def _sense(self):
        return self._board.bolt_locked()

    def _pulse(self, channel, ms):
        out = self._outputs.get(channel)
        if out is None:
            raise ValueError("no output for channel %s" % channel)
        pin, on = out
        pin.value(on)
        try:
            time.sleep_ms(ms)
        finally:
            pin.value(1 - on)
