"""Board layer: the pins and options of one board, from data.

Every board runs this same code; what differs between boards is
`/board.json` on the board's filesystem (copied from boards/<board>/board.json
by `lockctl deploy`). `start()` is the first thing boot.py does: it reads
the relay's entry and releases the relay (de-energised = bolt thrown,
locked) before it validates the rest or touches anything else, so a reset,
a bad main.py or a bad board.json leaves the door locked.

Written against the documented MicroPython APIs: machine.Pin(id, mode,
pull, value=), machine.WDT(timeout=), vfs.mount() (the mount table) and
os.statvfs().

board.json (every key required unless said; checked here, fail closed):

  "board": name; "march": the mpy-cross architecture of the .mpy and the
      frozen image (xtensawin, rv32imc; read by tools/build_mpy.py and
      `lockctl deploy`); "idf_board": the port's BOARD for a frozen build;
      "manifest": the frozen manifest, relative to the board's directory;
      "description" (optional, free text)
  "gpio": {"count": GPIOs 0..count-1, "input_only": [GPIOs with no output]}
  "pins": {"relay", and optionally "bolt", "door", "led", "button", each
      {"pin": n, "active": "high"|"low", "pull": "up"|"down"|null (inputs)},
      and "outputs": {channel: entry} for the `pulse` resources}; "active"
      is the level that means relay energised (bolt retracted), bolt
      thrown, door closed, LED lit, button pressed; no GPIO twice
  "presence_hold_ms": how long the pairing button must be held at boot
      (presence_at_boot), 100..30000
  "wdt_timeout_ms": machine.WDT timeout, 8000..120000 (fed every quarter)
  "wifi": {"attempts", "connect_timeout_ms" (each attempt), "backoff_ms"
      (first wait, doubling), "backoff_max_ms" (cap), "check_ms" (how often
      the running lock checks its link)}
  "files": {"root" (the lock's directory, on littlefs), "bundle" (lock.json
      and its keys), "wifi" ({"ssid", "password"})}: absolute paths
"""
import json
import time

import machine
from micropython import const

PATH = "/board.json"
_POLL_MS = const(10)        # presence_at_boot sampling period
_WDT_MIN_MS = const(8000)   # the ESP32 counts whole seconds; main.py sleeps 5 s before a reset
_WDT_MAX_MS = const(120000)
_HOLD_MAX_MS = const(30000)

current = None              # the started Board


# The firmware's packages (firmware/): no data directory may take their names.
_PACKAGES = ("lock", "trust", "coap", "ble")


class BoardError(Exception):
    """board.json is missing or invalid: the lock does not start."""


def _int(v, lo, hi, what):
    if type(v) is not int or not lo <= v <= hi:
        raise BoardError("%s: an integer in %d..%d" % (what, lo, hi))
    return v


def _level(spec, what):
    a = spec.get("active")
    if a not in ("high", "low"):
        raise BoardError("%s.active: \"high\" or \"low\"" % what)
    return 1 if a == "high" else 0


class _Spec:
    """One pin entry: {"pin": n, "active": "high"|"low", "pull": "up"|"down"|null}.
    `on` is the level at which the signal is asserted (relay energised, bolt
    thrown, door closed, LED lit, button pressed)."""

    def __init__(self, gpio, spec, what, output):
        if not isinstance(spec, dict):
            raise BoardError("%s: {\"pin\": n, \"active\": \"high\"|\"low\"}" % what)
        count, input_only = gpio
        self.pin = _int(spec.get("pin"), 0, count - 1, what + ".pin")
        if output and self.pin in input_only:
            raise BoardError("%s: GPIO %d is input-only" % (what, self.pin))
        self.on = _level(spec, what)
        pull = spec.get("pull")
        if pull not in (None, "up", "down"):
            raise BoardError("%s.pull: \"up\", \"down\" or null" % what)
        if output and pull is not None:
            raise BoardError("%s: an output takes no pull" % what)
        self.pull = pull
        self.what = what

    def output(self, on=False):
        # value= sets the level before the pin becomes an output: no glitch.
        return machine.Pin(self.pin, machine.Pin.OUT, value=self.on if on else 1 - self.on)

    def input(self):
        pull = {"up": machine.Pin.PULL_UP, "down": machine.Pin.PULL_DOWN}.get(self.pull)
        if pull is None:
            return machine.Pin(self.pin, machine.Pin.IN)
        return machine.Pin(self.pin, machine.Pin.IN, pull)


def _gpio(d):
    g = d.get("gpio")
    if not isinstance(g, dict):
        raise BoardError("gpio: {\"count\": n, \"input_only\": [...]}")
    count = _int(g.get("count"), 1, 64, "gpio.count")
    io = g.get("input_only", [])
    if not isinstance(io, list):
        raise BoardError("gpio.input_only: a list of GPIO numbers")
    return count, [_int(p, 0, count - 1, "gpio.input_only") for p in io]


def _relay(d):
    pins = d.get("pins")
    if not isinstance(pins, dict):
        raise BoardError("pins: an object")
    return _Spec(_gpio(d), pins.get("relay"), "pins.relay", True)


class Board:
    """The validated board.json; `relay` is the already-released relay Pin."""

    def __init__(self, d, relay_spec, relay):
        self.relay_spec = relay_spec
        self.relay = relay
        name = d.get("board")
        if not isinstance(name, str) or not name:
            raise BoardError("board: a name")
        self.name = name
        gpio = _gpio(d)
        pins = d["pins"]
        used = {relay_spec.pin: "pins.relay"}

        def spec(entry, what, output):
            if entry is None:
                return None
            s = _Spec(gpio, entry, what, output)
            if s.pin in used:
                raise BoardError("%s: GPIO %d is also %s" % (what, s.pin, used[s.pin]))
            used[s.pin] = what
            return s

        for k in pins:
            if k not in ("relay", "bolt", "door", "led", "button", "outputs"):
                raise BoardError("pins.%s: unknown" % k)
        self.bolt = spec(pins.get("bolt"), "pins.bolt", False)
        self.door = spec(pins.get("door"), "pins.door", False)
        self.led = spec(pins.get("led"), "pins.led", True)
        self.button = spec(pins.get("button"), "pins.button", False)
        outs = pins.get("outputs", {})
        if not isinstance(outs, dict):
            raise BoardError("pins.outputs: {channel: pin entry}")
        self.outputs = {}
        for ch in outs:
            if outs[ch] is None:
                raise BoardError("pins.outputs.%s: a pin entry" % ch)
            self.outputs[ch] = spec(outs[ch], "pins.outputs." + ch, True)
        self.hold_ms = _int(d.get("presence_hold_ms"), 100, _HOLD_MAX_MS, "presence_hold_ms")
        self.wdt_timeout_ms = _int(d.get("wdt_timeout_ms"), _WDT_MIN_MS, _WDT_MAX_MS, "wdt_timeout_ms")
        w = d.get("wifi")
        if not isinstance(w, dict):
            raise BoardError("wifi: retry figures")
        self.wifi_attempts = _int(w.get("attempts"), 1, 100, "wifi.attempts")
        self.wifi_timeout_ms = _int(w.get("connect_timeout_ms"), 10, 120000, "wifi.connect_timeout_ms")
        self.wifi_backoff_ms = _int(w.get("backoff_ms"), 10, 600000, "wifi.backoff_ms")
        self.wifi_backoff_max_ms = _int(w.get("backoff_max_ms"), self.wifi_backoff_ms, 3600000,
                                        "wifi.backoff_max_ms")
        self.wifi_check_ms = _int(w.get("check_ms"), 10, 3600000, "wifi.check_ms")
        f = d.get("files")
        if not isinstance(f, dict):
            raise BoardError("files: {\"root\", \"bundle\", \"wifi\"}")
        for k in ("root", "bundle", "wifi"):
            v = f.get(k)
            if not isinstance(v, str) or not v.startswith("/") or len(v) < 2:
                raise BoardError("files.%s: an absolute path" % k)
        # sys.path starts with '' (the root) on the board, and a directory
        # imports as a package: a data directory named like a firmware
        # package at the root would hide it from the next boot on.
        for k in ("root", "bundle"):
            top = f[k].split("/")[1]
            if top in _PACKAGES:
                raise BoardError("files.%s: /%s would hide the firmware's package %r" % (k, top, top))
        self.root, self.bundle, self.wifi = f["root"], f["bundle"], f["wifi"]
        self._bolt = self.bolt.input() if self.bolt else None
        self._door = self.door.input() if self.door else None
        self._led = self.led.output(False) if self.led else None
        self._button = self.button.input() if self.button else None
        self._presence = None

    # Inputs and outputs -----------------------------------------------
    def bolt_locked(self):
        """True when the bolt switch reports the bolt thrown, False when
        retracted, None without a switch."""
        return None if self._bolt is None else self._bolt.value() == self.bolt.on

    def door_closed(self):
        """True closed, False open, None without a door sensor."""
        return None if self._door is None else self._door.value() == self.door.on

    def set_led(self, lit):
        if self._led is not None:
            self._led.value(self.led.on if lit else 1 - self.led.on)

    def presence_at_boot(self):
        """Physical presence for a rebinding provisioning (issue 10): True
        when the pairing button reads pressed on every sample for
        `presence_hold_ms` from the first call, False at once when it is not
        pressed (or the board has none). The answer is taken once, at boot,
        and kept: releasing or pressing the button later changes nothing."""
        if self._presence is None:
            self._presence = self._held()
        return self._presence

    def _held(self):
        if self._button is None:
            return False
        t0 = time.ticks_ms()
        while True:
            if self._button.value() != self.button.on:
                return False
            if time.ticks_diff(time.ticks_ms(), t0) >= self.hold_ms:
                return True
            time.sleep_ms(_POLL_MS)

    # Storage and watchdog ---------------------------------------------
    def storage_refusal(self):
        """None when the lock's root is on littlefs, else why the lock must
        not run there: the decision log and the state files rely on
        littlefs's copy-on-write commits to survive a power cut (FAT can
        lose or tear a file when power fails mid-write)."""
        try:
            import os
            import vfs
            mounts = vfs.mount()
        except Exception as e:
            return "cannot list the mounted filesystems (%s)" % (e,)
        best = None
        for fs, point in mounts:
            inside = point == "/" or self.root == point or self.root.startswith(point + "/")
            if inside and (best is None or len(point) > len(best[1])):
                best = (fs, point)
        if best is None:
            return "no filesystem is mounted at %s" % self.root
        fs, point = best
        lfs = getattr(vfs, "VfsLfs2", None)
        if lfs is None or type(fs) is not lfs:
            return "%s is on %s at %s, not littlefs (VfsLfs2): the decision log needs power-cut-safe writes" % (
                self.root, type(fs).__name__, point)
        try:
            st = os.statvfs(point)
        except OSError as e:
            return "statvfs(%s) failed (%s)" % (point, e)
        if st[0] <= 0 or st[2] <= 0:
            return "%s reports no blocks" % point
        return None

    def watchdog(self):
        """machine.WDT with the board's timeout: once started it cannot be
        stopped, so it is started only once the lock is about to serve (a
        refusal leaves the board in the REPL, locked, for repair)."""
        return machine.WDT(timeout=self.wdt_timeout_ms)


def _read(path):
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError as e:
        raise BoardError("%s: cannot read (%s)" % (path, e))
    except ValueError as e:
        raise BoardError("%s: not JSON (%s)" % (path, e))
    if not isinstance(d, dict):
        raise BoardError("%s: a JSON object" % path)
    return d


def start(path=None):
    """Read board.json, release the relay, then validate the rest; returns
    the Board (also `board.current`). Raises BoardError: if the relay's own
    entry is bad, no pin was driven (the GPIOs are still inputs, as after
    reset, so the relay must be wired to drop out when undriven)."""
    global current
    if current is not None:
        return current
    d = _read(path or PATH)
    spec = _relay(d)
    relay = spec.output(False)  # fail-secure: de-energised, bolt thrown
    current = Board(d, spec, relay)
    return current


def presence_at_boot():
    """See Board.presence_at_boot; False when the board did not start."""
    return current is not None and current.presence_at_boot()
