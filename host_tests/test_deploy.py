"""The deploy path for real, against a board stand-in: `lockctl board`
(tools/lockctl/boardsim.py: the simulator's interpreter as a board, its
REPL on a pseudo-terminal, its root the lock's littlefs image) and
`lockctl deploy` driving the pinned, unmodified mpremote against that port
as against /dev/ttyUSB0: copy, verify by SHA-256 on the board, reset; the
lock comes up from what was deployed and opens over CoAPS."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from lockctl import deploy as dp
from lockctl.boardsim import BoardSim
from simlock import free_udp_port
from lockctl.provision import provision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tools"))
MPREMOTE = dp.mpremote_exe()
UNIX = json.load(open(os.path.join(ROOT, "boards", "unix", "board.json")))




def run(*args, timeout=120):
    return subprocess.run([sys.executable] + list(args), capture_output=True, text=True, env=ENV,
                          timeout=timeout, cwd=ROOT)


def make_bundle(path):
    coap, coaps = free_udp_port(), free_udp_port()
    provision(str(path), "deploy-lock", coap_port=coap, coaps_port=coaps, bind="127.0.0.1",
              clock="system", say=lambda *a: None)
    return str(path), coap, coaps


def board_exec(board, code, timeout=30):
    """Run code on the board with mpremote (resume: no soft reset); stdout."""
    r = subprocess.run([MPREMOTE, "connect", board.port, "resume", "exec", code], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r.stdout


WALK = ("import os,hashlib\n"
        "b=bytearray(256)\n"
        "def w(d):\n"
        " for e in os.ilistdir(d):\n"
        "  p=(d.rstrip('/')+'/'+e[0])\n"
        "  if e[1]&0x4000:\n"
        "   w(p)\n"
        "  else:\n"
        "   h=hashlib.sha256()\n"
        "   f=open(p,'rb')\n"
        "   while True:\n"
        "    n=f.readinto(b)\n"
        "    if not n:break\n"
        "    h.update(b[:n])\n"
        "   f.close()\n"
        "   print('F',p,h.digest().hex())\n"
        "w('/')\n")


def board_files(board):
    """{path: sha256 hex} of every file on the board's filesystem."""
    out = board_exec(board, WALK)
    return {l.split()[1]: l.split()[2] for l in out.splitlines() if l.startswith("F ")}


def unlock(bundle, coap, coaps, tmp_path):
    tok, key = str(tmp_path / "phone.cwt"), str(tmp_path / "phone.pem")
    r = run("-m", "lockctl.cli", "token", "--bundle", bundle, "--scope", "unlock status", "--key", key,
            "--out", tok)
    assert r.returncode == 0, r.stderr
    return run("-m", "lockctl.cli", "coap", "--bundle", bundle, "--host", "127.0.0.1", "--port", str(coaps),
               "--coap-port", str(coap), "--token", tok, "--key", key, "unlock")


@pytest.fixture(scope="module")
def lib_board(tmp_path_factory):
    """A stock board (the lock's modules not frozen: they must be in /lib),
    with the heap board.json gives it for that."""
    d = tmp_path_factory.mktemp("libboard")
    b = BoardSim(str(d / "board"), firmware="lib", heapsize=UNIX["heap_lib"]).start()
    b.bundle, b.coap, b.coaps = make_bundle(d / "bundle")
    b.deployed = False
    b.wait_for(">>> ", 20)
    yield b
    b.stop()


def deployed(b):
    """The lib board with the lock deployed and started (pytest-xdist may
    run any of these tests first on its worker)."""
    if not b.deployed:
        start = len(b.lines)
        dp.deploy(b.port, b.bundle, board="unix", say=lambda *a: None)
        b.wait_for("READY", 30, start)
        b.deployed = True
    return b


def last_boot(b):
    boots = [int(m.group(1)) for m in (re.search(r"lock deploy-lock: boot (\d+)", l) for l in b.lines) if m]
    return boots[-1] if boots else 0


def test_deploy_copies_verifies_resets_and_the_lock_opens_over_coaps(lib_board, tmp_path):
    b = lib_board
    start = len(b.lines)
    t0 = time.monotonic()
    r = run("-m", "lockctl.cli", "deploy", "--port", b.port, "--bundle", b.bundle, "--board", "unix")
    took = time.monotonic() - t0
    assert r.returncode == 0, (r.stdout, r.stderr, "\n".join(b.lines[-30:]))
    out = r.stdout
    assert "compiled" in out and "(x86)" in out, out
    n = int(re.search(r"verified: (\d+) files match", out).group(1))
    # Every .mpy, the three bundle files, boot.py and main.py, with progress.
    assert n == len(dp.compile_firmware("unix", UNIX, str(tmp_path / "mpy"))) + 3 + 2, out
    assert "[1/%d] copying /lib/" % n in out and "[%d/%d] copying" % (n, n) in out, out
    assert "firmware lib" in out, out
    b.wait_for("READY", 30, start)
    assert b.hard_resets() == 1
    assert "firmware /lib" in b.wait_for("lock deploy-lock: boot 1", 1, start)
    print("\ndeploy of %d files: %.1f s" % (n, took))
    b.deployed = True
    r = unlock(b.bundle, b.coap, b.coaps, tmp_path)
    assert r.returncode == 0 and "unlock: 2.04" in r.stdout, (r.stdout, r.stderr, "\n".join(b.lines[-30:]))
    b.wait_for("EVENT unlocked", 10, start)
    # mpremote interrupts the running lock (as deploy's probe does) before
    # the auto-relock: the door is driven locked, not left open with its
    # relock task dead (attack pass).
    mark = len(b.lines)
    r = subprocess.run([dp.mpremote_exe(), "connect", b.port, "exec", "pass"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, (r.stdout, r.stderr)
    b.wait_for("EVENT locked stopped", 10, mark)
    subprocess.run([dp.mpremote_exe(), "connect", b.port, "reset"], capture_output=True, timeout=60)
    b.wait_for("READY", 30, mark)


def test_the_as_private_key_is_never_copied(lib_board, tmp_path):
    b = deployed(lib_board)
    with open(os.path.join(b.bundle, dp.AS_KEY_FILE), "rb") as f:
        as_key = f.read()
    import hashlib
    files = board_files(b)
    assert "/bundle/lock.json" in files and "/lib/lock/app.mpy" in files, files
    assert not any("as-key" in p for p in files), files
    assert hashlib.sha256(as_key).hexdigest() not in files.values()
    # Nor in a dry run's plan.
    r = run("-m", "lockctl.cli", "deploy", "--port", "/nonexistent", "--bundle", b.bundle, "--board", "unix",
            "--dry-run")
    assert r.returncode == 0 and "fs cp" in r.stdout and "as-key" not in r.stdout, (r.stdout, r.stderr)
    # A bundle file that carries the AS key (pasted into lock.json) is refused.
    bad = tmp_path / "bad"
    bundle, _, _ = make_bundle(bad)
    with open(os.path.join(bundle, "lock.json")) as f:
        cfg = json.load(f)
    from cryptography.hazmat.primitives import serialization
    with open(os.path.join(bundle, dp.AS_KEY_FILE), "rb") as f:
        k = serialization.load_pem_private_key(f.read(), None)
    cfg["note"] = k.private_numbers().private_value.to_bytes(32, "big").hex()
    with open(os.path.join(bundle, "lock.json"), "w") as f:
        json.dump(cfg, f)
    with pytest.raises(dp.DeployError, match="holds the AS private key"):
        dp.deploy(b.port, bundle, board="unix", dry_run=True, say=lambda *a: None)
    # Other forms the attack pass got past: the PEM as a JSON string, the
    # scalar in decimal and base64url, a SEC1 PEM appended to the certificate.
    import base64
    d = k.private_numbers().private_value
    sec1 = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                           serialization.NoEncryption())
    with open(os.path.join(bundle, dp.AS_KEY_FILE), "rb") as f:
        pem = f.read().decode()
    for note in (pem, str(d), base64.urlsafe_b64encode(d.to_bytes(32, "big")).rstrip(b"=").decode()):
        cfg["note"] = note
        with open(os.path.join(bundle, "lock.json"), "w") as f:
            json.dump(cfg, f)
        with pytest.raises(dp.DeployError, match="private key"):
            dp.deploy(b.port, bundle, board="unix", dry_run=True, say=lambda *a: None)
    cfg.pop("note")
    with open(os.path.join(bundle, "lock.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(bundle, cfg["lock_cert"]), "ab") as f:
        f.write(sec1)
    with pytest.raises(dp.DeployError, match="private key"):
        dp.deploy(b.port, bundle, board="unix", dry_run=True, say=lambda *a: None)


def test_a_hash_mismatch_stops_before_the_reset_and_a_redeploy_repairs_it(lib_board):
    b = deployed(lib_board)
    resets = b.hard_resets()

    def corrupt():
        board_exec(b, "f=open('/lib/trust/cose.mpy','r+b')\nf.seek(100)\nf.write(b'\\x00\\xff')\nf.close()")
    with pytest.raises(dp.DeployError) as e:
        dp.deploy(b.port, b.bundle, board="unix", say=lambda *a: None, before_verify=corrupt)
    assert "hash mismatch on 1 file(s), board not reset: /lib/trust/cose.mpy" in str(e.value)
    time.sleep(0.5)
    assert b.hard_resets() == resets
    start = len(b.lines)
    r = dp.deploy(b.port, b.bundle, board="unix", say=lambda *a: None)
    assert r["copied"] == 1 and r["verified"] == len(r["files"]), r
    b.wait_for("READY", 30, start)


def test_redeploy_is_idempotent(lib_board, tmp_path):
    b = deployed(lib_board)
    before = board_files(b)
    boot = last_boot(b)
    start = len(b.lines)
    d = dp.deploy(b.port, b.bundle, board="unix", say=lambda *a: None)
    assert d["copied"] == 0 and d["unchanged"] == d["verified"] == len(d["files"]), d
    b.wait_for("READY", 30, start)
    # The lock's own files (log, state) survive a deploy: this is its next boot.
    assert last_boot(b) == boot + 1, b.lines[start:]
    r = unlock(b.bundle, b.coap, b.coaps, tmp_path)
    assert r.returncode == 0 and "unlock: 2.04" in r.stdout, (r.stdout, r.stderr)
    # Last: mpremote interrupts the lock, as on a board.
    after = board_files(b)
    ours = {dst for _, dst in d["files"]}
    assert {p: h for p, h in before.items() if p in ours} == {p: h for p, h in after.items() if p in ours}


def test_a_frozen_firmware_board_gets_the_bundle_only_and_opens(tmp_path):
    bundle, coap, coaps = make_bundle(tmp_path / "bundle")
    with BoardSim(str(tmp_path / "board"), firmware="frozen", heapsize=UNIX["heap"]) as b:
        b.wait_for(">>> ", 20)
        lines = []
        r = dp.deploy(b.port, bundle, board="unix", say=lines.append)
        assert r["firmware"] == "frozen" and len(r["files"]) == 5, r
        assert any("firmware: frozen" in l for l in lines), lines
        line = b.wait_for("lock deploy-lock: boot 1", 30)
        assert "firmware frozen" in line
        b.wait_for("READY", 10)
        r = unlock(bundle, coap, coaps, tmp_path)
        assert r.returncode == 0 and "unlock: 2.04" in r.stdout, (r.stdout, r.stderr, "\n".join(b.lines[-30:]))
        files = board_files(b)
        assert not any(p.startswith("/lib/") for p in files), files
        # A board whose architecture is not the profile's is refused.
        with pytest.raises(dp.DeployError, match="runs native code for x86, board profile 'esp32' compiles "
                                                 "for xtensawin"):
            dp.deploy(b.port, bundle, board="esp32", say=lambda *a: None)


def test_clear_errors_for_a_missing_port_and_a_board_that_does_not_answer(tmp_path):
    bundle, _, _ = make_bundle(tmp_path / "bundle")
    r = run("-m", "lockctl.cli", "deploy", "--port", str(tmp_path / "ttyNONE"), "--bundle", bundle,
            "--board", "unix")
    assert r.returncode == 2 and "does not exist" in r.stderr, (r.stdout, r.stderr)
    # A serial port with nothing behind it (a pty nobody answers on).
    master, slave = os.openpty()
    try:
        port = str(tmp_path / "ttyDEAD")
        os.symlink(os.ttyname(slave), port)
        with pytest.raises(dp.DeployError, match="not answering"):
            dp.deploy(port, bundle, board="unix", say=lambda *a: None)
    finally:
        os.close(master)
        os.close(slave)


def test_a_data_root_that_hides_a_firmware_package_is_refused(tmp_path):
    """The board runs main.py with '' (the root) first on sys.path and
    MicroPython imports a directory without __init__ as a package: a lock
    directory /lock would be imported as `lock` from the second boot on."""
    made = dp.compile_firmware("unix", UNIX, str(tmp_path))
    assert dp.shadowed({"files": {"root": "/lock", "bundle": "/bundle"}}, made) == [
        "root /lock hides the firmware's `lock`"]
    assert dp.shadowed({"files": {"root": "/data", "bundle": "/bundle"}}, made) == []
    assert dp.shadowed({"files": {"root": "/data/lock"}}, made) == []
    assert dp.shadowed(UNIX, made) == []


def test_lockctl_board_serves_mpremote_and_powers_off_on_ctrl_c(tmp_path):
    import signal
    d = str(tmp_path / "b")
    p = subprocess.Popen([sys.executable, "-m", "lockctl.boardsim", "board", "--dir", d], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT)
    try:
        line = p.stdout.readline()
        while line and "board: port" not in line:
            line = p.stdout.readline()
        assert "board: port %s/ttyBOARD (firmware frozen" % d in line, line
        r = subprocess.run([MPREMOTE, "connect", d + "/ttyBOARD", "exec", "import sys; print(sys.path)"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "['', '.frozen', '/lib']" in r.stdout, (r.stdout, r.stderr)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(10)
    assert not os.path.exists(d + "/ttyBOARD")
    # The board's interpreter went with it.
    time.sleep(0.5)
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if (d + "/flash.img").encode() in f.read():
                    left.append(pid)
        except OSError:
            pass
    assert not left, left


def test_a_second_board_on_a_directory_in_use_is_refused(tmp_path):
    """Two `lockctl board` on one directory would share its flash image and
    the second would take the first's port (attack pass): refused while
    the first runs; a stale port link (a board killed outright) is taken."""
    from lockctl.boardsim import BoardError
    with BoardSim(str(tmp_path / "board"), firmware="frozen", heapsize=UNIX["heap"]) as b:
        with pytest.raises(BoardError, match="in use"):
            BoardSim(str(tmp_path / "board"), firmware="frozen", heapsize=UNIX["heap"]).start()
        assert os.path.exists(b.port)
    assert not os.path.lexists(os.path.join(str(tmp_path / "board"), "ttyBOARD"))
    os.symlink("/dev/pts/999999", os.path.join(str(tmp_path / "board"), "ttyBOARD"))
    with BoardSim(str(tmp_path / "board"), firmware="frozen", heapsize=UNIX["heap"]) as b:
        assert os.path.exists(b.port)
