"""Unix-port stand-in for the ESP32 `network` module (tests only): WLAN
with the documented station methods. SUCCEED_ON: the attempt (1-based)
whose connect() succeeds (None: never); every call is recorded in LOG with
its ticks_ms, so tests can read the retries and the waits between them."""
import time

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_NO_AP_FOUND = 201
STAT_GOT_IP = 1010
SUCCEED_ON = 1
LOG = []
_state = {"attempts": 0, "up": False, "active": False}


class WLAN:
    def __init__(self, interface_id=STA_IF):
        if interface_id != STA_IF:
            raise ValueError("stand-in: station only")

    def active(self, on=None):
        if on is None:
            return _state["active"]
        _state["active"] = bool(on)
        LOG.append(("active", bool(on), time.ticks_ms()))

    def connect(self, ssid=None, key=None):
        if not _state["active"]:
            raise OSError("Wifi Not Started")
        _state["attempts"] += 1
        _state["up"] = SUCCEED_ON is not None and _state["attempts"] >= SUCCEED_ON
        LOG.append(("connect", ssid, time.ticks_ms()))

    def disconnect(self):
        _state["up"] = False
        LOG.append(("disconnect", time.ticks_ms()))

    def isconnected(self):
        return _state["up"]

    def status(self, param=None):
        return STAT_GOT_IP if _state["up"] else STAT_NO_AP_FOUND

    def ifconfig(self):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")


def drop():
    """Test hook: the access point goes away."""
    _state["up"] = False
