"""ESP32 actuator: a relay on a GPIO and an optional bolt-position switch.

Fail-secure wiring: the relay de-energized keeps the bolt thrown, so a
reset, a brown-out or a crash leaves the door locked. The bolt switch is
read back after each move; disagreement latches a fault.
"""
import machine

from lock.actuator import Actuator


class GpioActuator(Actuator):
    def __init__(self, now_ms, relock_ms, relay_pin, active_high=True, bolt_pin=None,
                 outputs=None, on_event=None):
        self._on = 1 if active_high else 0
        self._relay = machine.Pin(relay_pin, machine.Pin.OUT, value=1 - self._on)
        self._bolt = machine.Pin(bolt_pin, machine.Pin.IN, machine.Pin.PULL_UP) if bolt_pin is not None else None
        self._outputs = {}
        for name, pin in (outputs or {}).items():
            self._outputs[name] = machine.Pin(pin, machine.Pin.OUT, value=0)
        Actuator.__init__(self, now_ms, relock_ms, on_event)

    def _drive(self, locked):
        self._relay.value(1 - self._on if locked else self._on)

    def _sense(self):
        if self._bolt is None:
            return None
        # Switch closes to GND when the bolt is thrown: 0 means locked.
        return self._bolt.value() == 0

    def _pulse(self, channel, ms):
        import time
        pin = self._outputs.get(channel)
        if pin is None:
            raise ValueError("no output for channel %s" % channel)
        pin.value(1)
        time.sleep_ms(ms)
        pin.value(0)
