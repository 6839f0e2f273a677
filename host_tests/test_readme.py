"""The README's walkthrough, literally (issue 11): every shell block marked
`<!-- walkthrough -->` is run in order, each line as written, in a copy of
the checkout (its tracked files; the built interpreter and the virtual
environment linked in, as `make test` left them: in CI this runs on a clean
clone right after the README's second command, `make test`, set it up).

Conventions the README follows (and this test reads):
- a command whose comment names a terminal (`# terminal 1`) runs in the
  background, as in a terminal of its own; starting one in a later block
  stops those of earlier blocks (the README says to stop them);
- `#> TEXT` after a command: its output (stdout and stderr; for a
  background command, what it printed so far) must contain TEXT, waited
  for up to two minutes;
- other `#` lines are comments.
"""
import os
import re
import shutil
import signal
import subprocess
import threading
import time

from lockctl.interp import ROOT

README = os.path.join(ROOT, "README.md")
WAIT_S = 120


def blocks(text):
    """[[line, ...], ...]: the shell blocks marked `<!-- walkthrough -->`."""
    out = []
    for m in re.finditer(r"<!-- walkthrough -->\s*\n```sh\n(.*?)```", text, re.S):
        out.append([l for l in m.group(1).splitlines() if l.strip()])
    return out


def steps(block):
    """[(command, background, [expected text, ...])] of one block."""
    out = []
    for line in block:
        s = line.strip()
        if s.startswith("#>"):
            if not out:
                raise AssertionError("an expectation before any command: %r" % line)
            out[-1][2].append(s[2:].strip())
        elif s.startswith("#"):
            continue
        else:
            cmd, _, comment = s.partition(" #")
            out.append((cmd.strip(), "terminal" in comment, []))
    return out


class Terminal:
    def __init__(self, cmd, cwd):
        self.cmd = cmd
        self.out = []
        self.proc = subprocess.Popen(["bash", "-c", "exec " + cmd], cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=lambda: [self.out.append(l) for l in self.proc.stdout], daemon=True).start()

    def text(self):
        return "".join(self.out)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)   # Ctrl-C, as the README says
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass


def _copy_checkout(dst):
    """The tracked files of the checkout (the working tree's versions), with
    build/ and .venv/ linked, and ../shared beside it."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in files.decode().split("\0"):
        if not rel or not os.path.exists(os.path.join(ROOT, rel)):
            continue
        os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(dst, rel))
    os.symlink(os.path.join(ROOT, ".venv"), os.path.join(dst, ".venv"))
    # build/: the interpreters as built (linked), and make's stamps older
    # than the environment, as after `make test` on a clean clone (a local
    # tree may have had packages installed by hand since).
    build = os.path.join(dst, "build")
    os.makedirs(build)
    for name in os.listdir(os.path.join(ROOT, "build")):
        if not name.startswith("."):
            os.symlink(os.path.join(ROOT, "build", name), os.path.join(build, name))
    old = 946684800  # 2000-01-01
    open(os.path.join(build, ".sysdeps"), "w").close()
    for rel in ("build/.sysdeps", "requirements.txt", "pyproject.toml", "tools/sysdeps.sh"):
        os.utime(os.path.join(dst, rel), (old, old))
    shared = os.path.join(os.path.dirname(ROOT), "shared")
    os.symlink(shared, os.path.join(os.path.dirname(dst), "shared"))


def _wait(get, text, what, alive=lambda: True):
    end = time.time() + WAIT_S
    while time.time() < end:
        if text in get():
            return
        if not alive():
            time.sleep(0.5)
            if text in get():
                return
            break
        time.sleep(0.1)
    raise AssertionError("README step %r: no %r in its output:\n%s" % (what, text, get()[-3000:]))


def test_readme_walkthrough_literally(tmp_path):
    with open(README) as f:
        bs = blocks(f.read())
    assert len(bs) >= 4, "the README's walkthrough blocks are marked <!-- walkthrough -->"
    repo = str(tmp_path / "main")
    _copy_checkout(repo)
    env = dict(os.environ)
    env.pop("MICROPYPATH", None)
    running = []     # (block number, Terminal)
    try:
        for n, block in enumerate(bs):
            for cmd, background, expect in steps(block):
                if background:
                    for t in [t for b, t in running if b < n]:
                        t.stop()
                    running = [(b, t) for b, t in running if b == n]
                    t = Terminal(cmd, repo)
                    running.append((n, t))
                    for e in expect:
                        _wait(t.text, e, cmd, lambda t=t: t.proc.poll() is None)
                    continue
                r = subprocess.run(["bash", "-c", cmd], cwd=repo, capture_output=True, text=True, timeout=WAIT_S,
                                   env=env)
                out = r.stdout + r.stderr
                for e in expect:
                    assert e in out, "README step %r (exit %d): no %r in:\n%s\n--- terminals:\n%s" % (
                        cmd, r.returncode, e, out[-3000:], "\n".join(t.text()[-1500:] for _, t in running))
        for _, t in running:
            assert "Traceback" not in t.text(), t.text()[-3000:]
    finally:
        for _, t in running:
            t.stop()
