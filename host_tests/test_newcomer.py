"""What a new user meets (issue 11): a freshly provisioned bundle run with
`lockctl sim`, tokens from `lockctl token`, the phone `lockctl coap`, and
`lockctl logs`, all as commands in subprocesses, as the README walks
through them.

- the bundle's clock is "unsynced" (an ESP32 without trusted time): the
  simulator honours it and says so loudly, and `lockctl token` mints exi
  tokens for it, so the walkthrough's unlock works;
- a refusal is explained in words (the reason's name and meaning) and
  points at the decision log, which `lockctl logs` shows as a table;
- `status` after an unlock names the stored token by its id: the log shows
  one upload only.
"""
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from simlock import free_udp_port

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
LOCKCTL = [sys.executable, "-m", "lockctl.cli"]
ENV = dict(os.environ, PYTHONPATH=TOOLS)


def lockctl(*args, cwd=None, timeout=120):
    return subprocess.run(LOCKCTL + list(args), capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=timeout)


class Sim:
    """`lockctl sim BUNDLE` as a user starts it (our own process: killed by pid)."""

    def __init__(self, cwd, bundle, state, *extra):
        self.lines = []
        self.proc = subprocess.Popen(LOCKCTL + ["sim", bundle, "--state", state] + list(extra), cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                                     bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text, timeout=60, start=0):
        end = time.time() + timeout
        while time.time() < end:
            if any(text in line for line in self.lines[start:]):
                return
            if self.proc.poll() is not None:
                time.sleep(0.2)
                break
            time.sleep(0.05)
        raise AssertionError("no %r from lockctl sim:\n%s" % (text, "\n".join(self.lines[-40:])))

    def text(self):
        return "\n".join(self.lines)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A bundle made as the README says (plus free ports), and its simulator."""
    d = tmp_path_factory.mktemp("newcomer")
    coap, coaps = free_udp_port(), free_udp_port()
    r = lockctl("provision", "--out", "mylock", "--device-id", "front-door", "--plain-coap", "--bind",
                "127.0.0.1", "--coap-port", str(coap), "--coaps-port", str(coaps), cwd=d)
    assert r.returncode == 0, r.stderr
    sim = Sim(d, "mylock", str(d / "state"))
    try:
        sim.wait_for("READY")
    except AssertionError:
        sim.stop()
        raise
    sim.dir, sim.provision_out = d, r.stdout
    yield sim
    sim.stop()


def _logs(d, *extra):
    # CoAPS, lockctl logs' default (the lock grows its heap as an ESP32's
    # does: a log page on the 56 KiB initial heap alone ran it out).
    return lockctl("logs", "--bundle", "mylock", "--token", "admin.cwt", "--key", "admin.pem", *extra, cwd=d)


def _rows(out):
    """Table rows of `lockctl logs` as lists of cells."""
    rows = []
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0].isdigit() and len(cells) >= 8:
            rows.append(cells)
    return rows


def test_unsynced_clock_is_said_loudly(fresh):
    assert 'clock: "unsynced"' in fresh.provision_out and "--clock system" in fresh.provision_out
    out = fresh.text()
    assert "NO TRUSTED CLOCK" in out and "clock_unsynced" in out, out
    assert "lockctl sim mylock --clock system" in out, out
    assert "clock unsynced" in out  # the lock's own READY line


def _walkthrough_unlock_then_status_sends_the_token_id(fresh):
    d = fresh.dir
    r = lockctl("token", "--bundle", "mylock", "--scope", "unlock status", "--key", "phone.pem",
                "--out", "phone.cwt", cwd=d)
    assert r.returncode == 0, r.stderr
    assert "exi token" in r.stderr and "exi 3600 s, sequence 1" in r.stdout, (r.stdout, r.stderr)
    tid = re.search(r"token id ([0-9a-f]{8})", r.stdout).group(1)
    n = len(fresh.lines)
    r = lockctl("coap", "--bundle", "mylock", "--token", "phone.cwt", "--key", "phone.pem", "unlock", cwd=d)
    assert r.returncode == 0, (r.stdout, r.stderr, fresh.text()[-2000:])
    assert "authz-info: 2.01" in r.stdout and "unlock: 2.04" in r.stdout, r.stdout
    fresh.wait_for("EVENT unlocked command", 10, n)
    r = lockctl("coap", "--bundle", "mylock", "--token", "phone.cwt", "--key", "phone.pem", "status", cwd=d)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "authz-info" not in r.stdout and re.search(r"status: 2\.05 .*\(token id only", r.stdout), r.stdout
    assert (d / "phone.cwt.coap-cache.json").exists()
    fresh.phone_tid = tid


def _refusal_is_said_in_words(fresh):
    d = fresh.dir
    r = lockctl("token", "--bundle", "mylock", "--scope", "unlock status", "--key", "phone.pem",
                "--out", "exp.cwt", "--exp-in", "600", cwd=d)
    assert r.returncode == 0 and "WARNING" in r.stderr and "clock_unsynced" in r.stderr, r.stderr
    r = lockctl("coap", "--bundle", "mylock", "--token", "exp.cwt", "--key", "phone.pem", "unlock", cwd=d)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "authz-info: 4.01 error=invalid_token" in r.stdout, r.stdout
    assert "clock_unsynced: the lock has no trusted clock" in r.stderr, r.stderr
    assert "--clock system" in r.stderr and "lockctl logs --bundle mylock" in r.stderr, r.stderr


def _logs_table_has_the_reasons_by_name(fresh):
    d, tid = fresh.dir, fresh.phone_tid
    r = lockctl("token", "--bundle", "mylock", "--scope", "admin", "--key", "admin.pem", "--out", "admin.cwt",
                cwd=d)
    assert r.returncode == 0, r.stderr
    r = _logs(d)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert re.search(r"seq +time +transport +permission +sub +token +granted +reason", r.stdout), r.stdout
    rows = _rows(r.stdout)
    # The phone's token uploaded once, then unlock and status granted with
    # it (cells from the right: transport, permission, sub, token, granted,
    # reason).
    mine = [tuple(c[-6:]) for c in rows if c[-3] == tid]
    assert mine == [("coaps", "authz-info", "-", tid, "yes", "ok"), ("coaps", "unlock", "-", tid, "yes", "ok"),
                    ("coaps", "status", "-", tid, "yes", "ok")], r.stdout
    assert any(c[-6:-4] == ["coaps", "authz-info"] and c[-2:] == ["no", "clock_unsynced"] for c in rows), \
        r.stdout
    assert "reasons:" in r.stdout and "clock_unsynced: the lock has no trusted clock" in r.stdout, r.stdout
    assert "read(s) of the log by this command not shown" in r.stdout


def _logs_follow_shows_new_records(fresh):
    d = fresh.dir
    p = subprocess.Popen(LOCKCTL + ["logs", "--bundle", "mylock", "--token", "admin.cwt",
                                    "--key", "admin.pem", "--tail", "1", "--follow", "--interval", "0.5"],
                         cwd=d, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(3)
        r = lockctl("coap", "--bundle", "mylock", "--scheme", "coap", "--token", "phone.cwt", "--key",
                    "phone.pem", "lock", cwd=d)
        assert r.returncode == 1 and "insufficient_scope" in r.stdout, (r.stdout, r.stderr)
        assert "scope_insufficient: the token does not grant this permission" in r.stderr, r.stderr
        time.sleep(3)
    finally:
        p.kill()
        out = p.communicate(timeout=10)[0]
    rows = _rows(out)
    assert any(c[-5] == "lock" and c[-1] == "scope_insufficient" for c in rows), out
    assert "scope_insufficient: the token does not grant" in out, out


def test_newcomer_walkthrough(fresh):
    """The steps in the order a newcomer takes them (one test: each step
    needs the lock's state the one before left)."""
    _walkthrough_unlock_then_status_sends_the_token_id(fresh)
    _refusal_is_said_in_words(fresh)
    _logs_table_has_the_reasons_by_name(fresh)
    _logs_follow_shows_new_records(fresh)
    # Every CoAPS session and log page above ran on the ESP32 model's heap.
    assert "MemoryError" not in fresh.text(), fresh.text()[-3000:]


def test_help_of_every_command_has_examples():
    for cmd in ("provision", "token", "coap", "logs", "sim", "ble", "deploy", "as"):
        r = lockctl(cmd, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout, (cmd, r.stderr)
        assert "examples:" in r.stdout and "\n  lockctl %s " % cmd in r.stdout, (cmd, r.stdout)
    r = lockctl("--help")
    assert "lockctl logs" in r.stdout and "lockctl provision --out mylock" in r.stdout


def test_every_lock_reason_has_words():
    from lockctl import reasons
    names = reasons.names()
    assert len(names) >= 48 and names[20] == "clock_unsynced" and names[0] == "ok"
    assert not [n for n in names if n not in reasons.WORDS]
    assert reasons.words(20).startswith("clock_unsynced: ")


def test_sim_clock_override_leaves_the_bundle_alone(tmp_path):
    from lockctl import cli
    from lockctl.provision import load_bundle, provision
    b = str(tmp_path / "b")
    provision(b, "d1", say=lambda *a: None)
    run, cfg = cli._sim_bundle(b, str(tmp_path / "state"), "system")
    assert run != b and cfg["clock"] == "system"
    assert sorted(os.listdir(run)) == ["lock-cert.der", "lock-key.der", "lock.json"]  # no AS key
    assert load_bundle(run)[0]["clock"] == "system" and load_bundle(b)[0]["clock"] == "unsynced"
    assert cli._sim_bundle(b, str(tmp_path / "state"), "bundle")[0] == b


def test_build_mp_shows_progress(tmp_path, capsys):
    import build_mp
    p = build_mp.Progress(False, 3, str(tmp_path / "progress.json"))
    p.begin("mpy-cross")
    log = str(tmp_path / "log")
    script = "for i in 1 2 3; do echo CC f$i.c; sleep 0.3; done; echo LINK x"
    assert build_mp._make(["sh", "-c", script], log, p, "mpy-cross", report_s=0.2) == 4
    out = capsys.readouterr().out
    assert "build_mp: [1/3] mpy-cross" in out and "4 file(s) compiled" in out, out
    assert "CC f1.c" in open(log).read()       # the compiler's lines go to the log only
    p = build_mp.Progress(False, 3, str(tmp_path / "progress.json"))
    p.step = 2
    build_mp._make(["sh", "-c", "echo CC a"], log, p, "mpy-cross")
    assert "1/4 file(s)" in capsys.readouterr().out  # against the previous clean build's count
    p = build_mp.Progress(False, 3, str(tmp_path / "progress.json"), clean=False)
    build_mp._make(["sh", "-c", "echo CC a"], log, p, "mpy-cross")
    assert " 1 file(s)" in capsys.readouterr().out  # an incremental build: no total
    q = build_mp.Progress(True, 3, str(tmp_path / "progress.json"))
    q.begin("x")
    build_mp._make(["sh", "-c", "echo CC a"], log, q, "mpy-cross")
    assert capsys.readouterr().out == ""
    with pytest.raises(build_mp.BuildError):
        build_mp._make(["sh", "-c", "exit 3"], log, q, "mpy-cross")


def test_two_bundles_of_one_name_never_share_a_flash(tmp_path):
    """The attack passes ran two bundles named alike at once, and one lock
    booted the other's log and state: each bundle directory has its own
    state, and a state of another lock is refused, not booted."""
    from lockctl import cli
    a, b = tmp_path / "x" / "mylock", tmp_path / "y" / "mylock"
    assert cli._state_dir(str(a)) != cli._state_dir(str(b))
    assert cli._state_dir(str(a)) == cli._state_dir(str(a))
    state = tmp_path / "state"
    state.mkdir()
    cli._claim_state(str(state), {"device_id": "front-door"}, str(a))
    cli._claim_state(str(state), {"device_id": "front-door"}, str(a))
    with pytest.raises(SystemExit):
        cli._claim_state(str(state), {"device_id": "side-door"}, str(b))
