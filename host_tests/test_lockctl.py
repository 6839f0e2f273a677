"""lockctl as a user runs it: --help (with examples), provision, token, deploy --dry-run."""
import json
import os
import subprocess
import sys

import cbor2

LOCKCTL = [sys.executable, "-m", "lockctl.cli"]
ENV = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))


def run(*args, cwd=None):
    return subprocess.run(LOCKCTL + list(args), capture_output=True, text=True, env=ENV, cwd=cwd, timeout=120)


def test_help_for_every_command():
    for cmd in ((), ("provision",), ("token",), ("coap",), ("logs",), ("sim",), ("ble",), ("deploy",)):
        r = run(*cmd, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout
        assert "examples:" in r.stdout or not cmd, cmd


def test_provision_token_and_errors(tmp_path):
    b = tmp_path / "b"
    r = run("provision", "--out", str(b), "--device-id", "door-7", "--plain-coap")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((b / "lock.json").read_text())
    assert cfg["device_id"] == "door-7" and cfg["coap"]["enabled"] and not cfg["allow_bearer"]
    assert oct((b / "as-key.pem").stat().st_mode)[-3:] == "600"
    assert "PRIVATE KEY" not in r.stdout + r.stderr
    assert 'clock: "unsynced"' in r.stdout and "exi" in r.stdout, r.stdout
    r = run("provision", "--out", str(b), "--device-id", "door-7")
    assert r.returncode == 2 and "already holds a bundle" in r.stderr
    r = run("token", "--bundle", str(b), "--scope", "unlock", "--key", str(tmp_path / "k.pem"),
            "--out", str(tmp_path / "t.cwt"), "--exi", "60", "--no-exp")
    assert r.returncode == 0, r.stderr
    tok = cbor2.loads((tmp_path / "t.cwt").read_bytes())
    claims = cbor2.loads(tok.value[2])
    assert claims[3] == "door-7" and claims[9] == "unlock" and claims[40] == 60 and 4 not in claims
    assert 1 in claims[8]
    # exi tokens: cti = the next sequence number of this (AS, lock) pair.
    assert claims[7] == b"\x01"
    r = run("token", "--bundle", str(b), "--scope", "unlock", "--key", str(tmp_path / "k.pem"),
            "--out", str(tmp_path / "t2.cwt"), "--exi", "60", "--no-exp")
    assert r.returncode == 0, r.stderr
    assert cbor2.loads(cbor2.loads((tmp_path / "t2.cwt").read_bytes()).value[2])[7] == b"\x02"
    assert (b / "exi-seq").read_text().strip() == "2"
    r = run("token", "--bundle", str(tmp_path / "nope"), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "cannot read" in r.stderr
    # The bundle's lock has no trusted clock ("unsynced", the default): the
    # AS mints an exi token (with exp too) unless told otherwise, and says so.
    r = run("token", "--bundle", str(b), "--key", str(tmp_path / "k.pem"), "--out", str(tmp_path / "t3.cwt"))
    assert r.returncode == 0 and "no trusted clock" in r.stderr, r.stderr
    claims = cbor2.loads(cbor2.loads((tmp_path / "t3.cwt").read_bytes()).value[2])
    assert claims[40] == 3600 and claims[7] == b"\x03" and claims[4] - claims[6] == 3600
    r = run("token", "--bundle", str(b), "--key", str(tmp_path / "k.pem"), "--out", str(tmp_path / "t4.cwt"),
            "--exp-in", "60")
    assert r.returncode == 0 and "WARNING" in r.stderr and "clock_unsynced" in r.stderr, r.stderr
    assert 40 not in cbor2.loads(cbor2.loads((tmp_path / "t4.cwt").read_bytes()).value[2])
    assert "PRIVATE KEY" not in r.stdout + r.stderr


def test_deploy_dry_run_never_copies_the_as_key(tmp_path):
    b = tmp_path / "b"
    assert run("provision", "--out", str(b), "--device-id", "d1").returncode == 0
    r = run("deploy", "--port", "/dev/ttyUSB9", "--bundle", str(b), "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "compiled" in out and ":lib/trust/p256.mpy" in out and ":bundle/lock.json" in out
    assert ":main.py" in out and "as-key.pem" not in out
