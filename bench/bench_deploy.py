"""The deploy path: what goes on a board and how long it takes.

usage: .venv/bin/python bench/bench_deploy.py

Prints (figures only, nothing asserted):
  - the deployable size per board (every boards/<board>/board.json): the
    .mpy `lockctl deploy` copies to /lib when the firmware is not frozen
    (mpy-cross -march=<board.json march>), and the files copied as they
    are (boot.py, main.py, board.json);
  - deploy time against the simulated board (`lockctl board`, the pinned
    mpremote on its pseudo-terminal): a stock board (everything copied),
    the same again (every file unchanged: hashed, not copied), and a board
    with the firmware frozen (bundle, boot.py, main.py); each includes the
    probe, the SHA-256 verification on the board and the reset;
  - cold start to READY: power on of the simulated board (interpreter
    start, littlefs mount, boot.py, main.py) until the lock prints READY,
    firmware frozen and from /lib, and `lockctl sim` (boards/unix/main.py)
    for comparison; median of 3;
  - the heap the lock holds at READY in each case (firmware frozen: its
    bytecode stays in flash; from /lib: loaded into the heap), and whether
    the /lib firmware comes up at all on the ESP32's heap.
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from benchutil import ROOT

sys.path[:0] = [os.path.join(ROOT, "firmware"), os.path.join(ROOT, "host_tests", "shims", "cpython")]

from simlock import free_udp_port  # noqa: E402
from lockctl import deploy as dp  # noqa: E402 (tools/, on the path through benchutil)
from lockctl.boardsim import BoardSim, board_profile  # noqa: E402
from lockctl.cli import sim_command, sim_env  # noqa: E402
from lockctl.interp import ensure_built  # noqa: E402
from lockctl.provision import provision  # noqa: E402




def sizes():
    print("deployable size per board (.mpy to /lib unless frozen; files copied as they are):")
    for board in sorted(os.listdir(os.path.join(ROOT, "boards"))):
        if not os.path.exists(os.path.join(ROOT, "boards", board, "board.json")):
            continue
        profile, _ = dp.board_profile(board)
        with tempfile.TemporaryDirectory() as out:
            made = dp.compile_firmware(board, profile, out)
        files = dp.device_files(board, profile)
        raw = sum(os.path.getsize(s) for s, _ in files if os.path.exists(s))
        print("  %-8s %-9s %7d bytes of .mpy (%d modules) + %5d bytes as is (%s)" % (
            board, profile["march"], sum(s for _, s in made), len(made), raw,
            ", ".join(d for _, d in files)))


def bundle(d):
    b = os.path.join(d, "bundle")
    coap, coaps = free_udp_port(), free_udp_port()
    provision(b, "bench-lock", coap_port=coap, coaps_port=coaps, bind="127.0.0.1", clock="system",
              say=lambda *a: None)
    return b


def heap_line(board, start):
    line = board.wait_for("heap:", 30, start)
    m = re.search(r"heap: (\d+) of (\d+)", line)
    return int(m.group(2)) - int(m.group(1)), int(m.group(2))


def cold_start(d, firmware, heap, runs=3):
    """Power the board on over the deployed image `runs` times: seconds to READY."""
    out = []
    for _ in range(runs):
        t0 = time.monotonic()
        with BoardSim(os.path.join(d, "board"), firmware=firmware, heapsize=heap) as b:
            b.wait_for("READY", 60)
            out.append(time.monotonic() - t0)
    return out


def deploys():
    unix = board_profile("unix")
    figures = {}
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as d:
        bun = bundle(d)
        with BoardSim(os.path.join(d, "board"), firmware="lib", heapsize=unix["heap_lib"]) as b:
            b.wait_for(">>> ", 30)
            r = dp.deploy(b.port, bun, board="unix", say=lambda *a: None)
            figures["lib"] = heap_line(b, 0)
            print("deploy to the simulated board (lockctl board, mpremote %s):" % _mpremote_version())
            print("  stock board, everything copied:  %5.1f s (%d files, %d bytes of .mpy)" % (
                r["seconds"], r["copied"], r["mpy_bytes"]))
            start = len(b.lines)
            r = dp.deploy(b.port, bun, board="unix", say=lambda *a: None)
            b.wait_for("READY", 30, start)
            print("  the same again, all unchanged:   %5.1f s (%d files hashed on the board, %d copied)" % (
                r["seconds"], r["unchanged"], r["copied"]))
        lib_starts = cold_start(d, "lib", unix["heap_lib"])
        # The same /lib firmware on the ESP32's heap (the initial 56 KiB
        # area, growing once by 56 KiB, as lockctl.interp models it).
        with BoardSim(os.path.join(d, "board"), firmware="lib", heapsize=unix["heap"]) as b:
            end = time.monotonic() + 20
            while time.monotonic() < end and not any("READY" in l or "MemoryError" in l for l in b.lines):
                time.sleep(0.05)
            esp32_lib = next((l.strip() for l in b.lines if "READY" in l or "MemoryError" in l), "no answer")
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as d:
        bun = bundle(d)
        with BoardSim(os.path.join(d, "board"), firmware="frozen", heapsize=unix["heap"]) as b:
            b.wait_for(">>> ", 30)
            r = dp.deploy(b.port, bun, board="unix", say=lambda *a: None)
            figures["frozen"] = heap_line(b, 0)
            print("  firmware frozen, bundle only:    %5.1f s (%d files)" % (r["seconds"], r["copied"]))
        frozen_starts = cold_start(d, "frozen", unix["heap"])
        sim_starts = sim_cold_start(d, bun)
    print("cold start to READY (median of 3; power on -> READY):")
    print("  simulated board, firmware frozen:  %6.1f ms" % (1000 * statistics.median(frozen_starts)))
    print("  simulated board, firmware in /lib: %6.1f ms (the .mpy loaded from littlefs)" % (
        1000 * statistics.median(lib_starts)))
    print("  lockctl sim (boards/unix/main.py): %6.1f ms" % (1000 * statistics.median(sim_starts)))
    print("heap held by the lock at READY:")
    print("  firmware frozen:  %6d bytes (of %d)" % figures["frozen"])
    print("  firmware in /lib: %6d bytes (of %d): the bytecode is in the heap" % figures["lib"])
    print("  (totals include the room the heap may still grow into)")
    print("firmware in /lib on the ESP32's heap (%d bytes, one growth): %s" % (unix["heap"], esp32_lib))


def sim_cold_start(d, bun, runs=3):
    out = []
    for i in range(runs):
        cmd = sim_command(bun, os.path.join(d, "sim-flash.img"))
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=sim_env(), text=True)
        try:
            for line in p.stdout:
                if "READY" in line:
                    out.append(time.monotonic() - t0)
                    break
        finally:
            p.kill()
            p.wait(10)
    return out


def _mpremote_version():
    r = subprocess.run([dp.mpremote_exe(), "--version"], capture_output=True, text=True)
    return r.stdout.strip().split()[-1] if r.returncode == 0 else "?"


def main():
    ensure_built()
    sizes()
    deploys()


if __name__ == "__main__":
    sys.exit(main())
