"""`lockctl deploy`: put the firmware and one lock's bundle on an ESP32 with
mpremote. The modules are compiled for xtensawin first; the AS private key
never leaves the host."""
import os
import shlex
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLE_FILES = ("lock.json", "lock-key.der", "lock-cert.der")


class DeployError(Exception):
    pass


def plan(port, bundle, mpy_dir, wifi=None):
    """The mpremote command lines, in order."""
    for f in BUNDLE_FILES:
        if not os.path.exists(os.path.join(bundle, f)):
            raise DeployError("bundle %s lacks %s" % (bundle, f))
    mpremote = os.path.join(os.path.dirname(sys.executable), "mpremote")
    base = [mpremote if os.path.exists(mpremote) else "mpremote", "connect", port]
    cmds = [base + ["fs", "mkdir", ":lib"], base + ["fs", "mkdir", ":bundle"]]
    dirs = set()
    for dirpath, _, files in os.walk(mpy_dir):
        rel = os.path.relpath(dirpath, mpy_dir)
        if rel != "." and rel not in dirs:
            cmds.append(base + ["fs", "mkdir", ":lib/" + rel])
            dirs.add(rel)
        for f in sorted(files):
            src = os.path.join(dirpath, f)
            dst = ":lib/" + (f if rel == "." else rel + "/" + f)
            cmds.append(base + ["fs", "cp", src, dst])
    for f in BUNDLE_FILES:
        cmds.append(base + ["fs", "cp", os.path.join(bundle, f), ":bundle/" + f])
    for f in ("boot.py", "main.py"):
        cmds.append(base + ["fs", "cp", os.path.join(ROOT, "boards", "esp32", f), ":" + f])
    if wifi:
        cmds.append(base + ["fs", "cp", wifi, ":wifi.json"])
    cmds.append(base + ["reset"])
    return cmds


def deploy(port, bundle, wifi=None, dry_run=False, say=print):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import build_mpy
    out = tempfile.mkdtemp(prefix="lock-deploy-")
    made = build_mpy.build(out, "xtensawin", ("esp32",))
    say("compiled %d modules for xtensawin (%d bytes)" % (len(made), sum(s for _, s in made)))
    cmds = plan(port, bundle, out, wifi)
    for i, c in enumerate(cmds, 1):
        line = " ".join(shlex.quote(x) for x in c)
        if dry_run:
            say(line)
            continue
        say("[%d/%d] %s" % (i, len(cmds), " ".join(c[3:])))
        r = subprocess.run(c, capture_output=True, text=True)
        if r.returncode != 0 and not (c[3:5] == ["fs", "mkdir"] and "EEXIST" in r.stderr + r.stdout):
            raise DeployError("%s failed: %s" % (line, (r.stderr or r.stdout).strip()))
    return cmds
