"""`lockctl deploy`: put the firmware and one lock's bundle on a board with
mpremote (the pinned, unmodified one in .venv), verify every file by its
SHA-256 on the board, and reset it.

    lockctl deploy --port /dev/ttyUSB0 --bundle mylock [--board esp32] [--wifi wifi.json]

Steps, each an mpremote run on the port:

1. probe: the board's native architecture (sys.implementation._mpy), its
   free flash and its frozen modules (help('modules')). A board whose
   architecture is not the one boards/<board>/board.json compiles for
   ("march") is refused. If every firmware module is frozen into the
   board's MicroPython, no .mpy is copied ("firmware: frozen"); if only
   some are, the board's image was built from another tree and deploy
   stops (flash a new image, or use a stock MicroPython).
2. copy: the .mpy (mpy-cross -march=<march>) into /lib, the bundle's
   files the lock reads (provision.lock_files: lock.json, its key and
   certificate, the uplink's AS certificate) into /bundle, the board's boot.py, main.py (and
   board.json), optionally /wifi.json; the board hashes what it holds
   first (one run) and a file whose SHA-256 is already the host's is not
   copied. The AS private key (as-key.pem, beside the bundle) is never
   among them, and a file to be copied that holds that key (PEM, DER or
   its private scalar, raw or hex) stops deploy.
3. verify: one run computes the SHA-256 of every copied file on the board
   and deploy compares each with the host's; any difference or missing
   file stops deploy *before* the reset, so a board is never started on a
   half-written firmware.
4. reset (machine.reset()): the board boots the deployed lock.

Errors are DeployError with one line saying what to do: the port is
missing, the board does not answer, the architecture differs, a hash
differs.
"""
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Never copied; checked for by content as well as by name.
AS_KEY_FILE = "as-key.pem"
# mpy-cross -march names by MP_NATIVE_ARCH_* index (py/persistentcode.h),
# which sys.implementation._mpy >> 10 gives on the board.
ARCH_NAMES = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
              "xtensa", "xtensawin", "rv32imc", "rv64imc")
# Used only when boards/<board>/board.json is missing (it is the source of truth).
FALLBACK_BOARDS = {
    "esp32": {"march": "xtensawin"},
    "esp32c3": {"march": "rv32imc"},
    "esp32s3": {"march": "xtensawin"},
}
PROBE_TIMEOUT_S = 30
RESET_TIMEOUT_S = 30


class DeployError(Exception):
    pass


def _build_mpy():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import build_mpy
    return build_mpy


def board_profile(board):
    """(board.json as a dict, a note) for boards/<board>; the note says when
    the built-in fallback (FALLBACK_BOARDS) had to be used. Raises
    DeployError for an unknown board or a board.json without a valid
    "march"."""
    path = os.path.join(ROOT, "boards", board, "board.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                d = json.load(f)
        except ValueError as e:
            raise DeployError("%s: %s" % (path, e))
        if not isinstance(d, dict) or d.get("march") not in ARCH_NAMES[1:]:
            raise DeployError("%s: \"march\" must be one of %s" % (path, ", ".join(ARCH_NAMES[1:])))
        return d, None
    if board in FALLBACK_BOARDS:
        return dict(FALLBACK_BOARDS[board]), "no %s: built-in profile (march %s)" % (
            os.path.relpath(path, ROOT), FALLBACK_BOARDS[board]["march"])
    known = sorted(b for b in os.listdir(os.path.join(ROOT, "boards"))
                   if os.path.exists(os.path.join(ROOT, "boards", b, "board.json")))
    raise DeployError("unknown board %r (boards with a board.json: %s)" % (board, ", ".join(known)))


def device_files(board, profile):
    """[(host path, board path)] copied as they are: boot.py and main.py
    (and board.json where the board code reads it). board.json
    "deploy": {"files": {board path: path relative to boards/<board>}}
    names them; otherwise build_mpy.device_files(board)."""
    dep = profile.get("deploy") or {}
    if "files" in dep:
        return [(os.path.join(ROOT, "boards", board, src), dst) for dst, src in sorted(dep["files"].items())]
    return list(_build_mpy().device_files(board))


def compile_firmware(board, profile, out):
    """Compile the firmware (and the board code unless board.json
    "deploy": {"board_code": false}) into `out`; returns
    [(relative .mpy path, size in bytes)]."""
    bm = _build_mpy()
    code = (profile.get("deploy") or {}).get("board_code", True)
    try:
        return bm.build(out, profile["march"], (board,) if code else ())
    except subprocess.CalledProcessError as e:
        raise DeployError("mpy-cross failed: %s" % e)


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _as_key_secrets(bundle):
    """Byte strings that reveal the AS private key (its PEM, DER and raw
    scalar) if as-key.pem is beside the bundle; [] otherwise."""
    path = os.path.join(bundle, AS_KEY_FILE)
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        pem = f.read()
    out = [pem.strip()]
    try:
        from cryptography.hazmat.primitives import serialization
        k = serialization.load_pem_private_key(pem, None)
        out.append(k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
        n = k.private_numbers().private_value
        d = n.to_bytes(32, "big")
        import base64
        out += [d, d.hex().encode(), d.hex().upper().encode(), str(n).encode(),
                base64.b64encode(d).rstrip(b"="), base64.urlsafe_b64encode(d).rstrip(b"=")]
    except Exception as e:  # noqa: an unreadable AS key cannot be checked for: refuse
        raise DeployError("%s cannot be read (%s): deploy checks that it is never copied" % (path, e))
    return out


def plan_files(board, bundle, mpy_dir, made, profile, wifi=None):
    """[(host path, board path)] in copy order: /lib .mpy (`made` from
    compile_firmware, or [] when the firmware is frozen), the bundle,
    the board's files, /wifi.json. Raises DeployError when the bundle
    lacks a file or a file to copy holds the AS private key."""
    paths = (profile.get("files") or {})
    bundle_dir = paths.get("bundle", "/bundle")
    files = [(os.path.join(mpy_dir, rel), "/lib/" + rel.replace(os.sep, "/")) for rel, _ in made]
    from .provision import ProvisionError, lock_files
    try:
        names = lock_files(bundle)
    except ProvisionError as e:
        raise DeployError(str(e))
    for f in names:
        src = os.path.join(bundle, f)
        if not os.path.isfile(src):
            raise DeployError("bundle %s lacks %s (lockctl provision writes it)" % (bundle, f))
        files.append((src, bundle_dir + "/" + f))
    files += device_files(board, profile)
    if wifi:
        if not os.path.isfile(wifi):
            raise DeployError("no Wi-Fi file %s" % wifi)
        files.append((wifi, paths.get("wifi", "/wifi.json")))
    secrets = _as_key_secrets(bundle)
    for src, dst in files:
        if os.path.basename(src) == AS_KEY_FILE or os.path.basename(dst) == AS_KEY_FILE:
            raise DeployError("refusing to copy %s: the AS private key never leaves the host" % src)
        with open(src, "rb") as f:
            data = f.read()
        for text in _forms(data):
            for s in secrets:
                if s and s in text:
                    raise DeployError("refusing to copy %s: it holds the AS private key" % src)
            # No file the lock reads holds a private key in PEM: its own key
            # is DER (lock_key). One there is someone's key pasted by mistake.
            if b"-----BEGIN" in text and b"PRIVATE KEY-----" in text:
                raise DeployError("refusing to copy %s: it holds a PEM private key" % src)
    return files


def _forms(data):
    """The bytes of a file and, for JSON, every string in it decoded (a
    key pasted into a JSON string has its newlines escaped)."""
    yield data
    if data.lstrip()[:1] in (b"{", b"["):
        import json
        try:
            doc = json.loads(data)
        except ValueError:
            return
        stack = [doc]
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                stack.extend(v.keys())
                stack.extend(v.values())
            elif isinstance(v, list):
                stack.extend(v)
            elif isinstance(v, str):
                yield v.encode()


def shadowed(profile, made):
    """The firmware's top-level names that a directory the lock writes at
    the filesystem root would hide: the board runs main.py with '' (the
    root) ahead of '.frozen' and '/lib' on sys.path, and MicroPython imports
    a directory without __init__ as a package, so a data root /lock is
    imported as `lock` from the second boot on. `made`: compile_firmware's
    list; [] when board.json names no root."""
    tops = {rel.replace(os.sep, "/").split("/")[0].rsplit(".", 1)[0] for rel, _ in made}
    out = []
    for key in ("root", "bundle"):
        path = (profile.get("files") or {}).get(key)
        if path and path.startswith("/"):
            first = path.strip("/").split("/")[0]
            if first in tops:
                out.append("%s %s hides the firmware's `%s`" % (key, path, first))
    return out


def _check_shadowing(profile, made):
    bad = shadowed(profile, made)
    if bad:
        raise DeployError("board.json \"files\": %s (sys.path starts with '', the root): the lock would "
                          "not start after its first boot; move it (e.g. /data)" % "; ".join(bad))


def mpremote_exe():
    """The pinned mpremote beside this Python (.venv/bin), else the PATH's."""
    exe = os.path.join(os.path.dirname(sys.executable), "mpremote")
    if os.path.exists(exe):
        return exe
    import shutil
    found = shutil.which("mpremote")
    if not found:
        raise DeployError("mpremote not found: `make venv` installs the pinned one into .venv")
    return found


class Board:
    """mpremote runs against one port."""

    def __init__(self, port, say=print):
        self.port = port
        self.say = say
        self.exe = mpremote_exe()

    def cmd(self, *args, resume=True):
        return [self.exe, "connect", self.port] + (["resume"] if resume else []) + list(args)

    def run(self, args, timeout, what, on_line=None):
        """Run one mpremote command line; returns its stdout. `on_line`
        gets each output line as it arrives (progress)."""
        if not os.path.exists(self.port):
            raise DeployError("port %s does not exist (board unplugged? `lockctl board` not running?)"
                              % self.port)
        try:
            p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise DeployError("cannot run mpremote: %s" % e)
        out = []
        end = time.monotonic() + timeout
        import threading
        err = []
        t = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
        t.start()
        killed = []

        def watchdog():
            if p.poll() is None:
                killed.append(1)
                p.kill()
        timer = threading.Timer(max(0.1, end - time.monotonic()), watchdog)
        timer.start()
        try:
            buf = b""
            while True:
                chunk = p.stdout.read1(4096) if hasattr(p.stdout, "read1") else p.stdout.read(4096)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = re.split(rb"[\r\n]", buf)
                for line in lines:
                    s = line.decode("utf-8", "replace")
                    out.append(s)
                    if on_line and s.strip():
                        on_line(s)
            if buf:
                out.append(buf.decode("utf-8", "replace"))
            p.wait()
        finally:
            timer.cancel()
        t.join(5)
        stderr = (err[0] if err else b"").decode("utf-8", "replace").strip()
        if killed:
            raise DeployError("board on %s not answering: %s took over %d s (%s)" % (
                self.port, what, timeout, stderr or "no output"))
        if p.returncode != 0:
            msg = stderr or "\n".join(out).strip()
            if "could not enter raw repl" in msg or "could not exec command" in msg:
                raise DeployError("board on %s not answering mpremote's raw REPL during %s "
                                  "(is a board attached and running MicroPython?): %s" % (
                                      self.port, what, msg.splitlines()[-1] if msg else ""))
            if "failed to access" in msg or "could not open port" in msg.lower():
                raise DeployError("cannot open %s during %s (in use by another program?): %s" % (
                    self.port, what, msg.splitlines()[-1]))
            raise DeployError("%s failed on %s: %s" % (what, self.port, msg.splitlines()[-1] if msg else
                                                       "mpremote exited %d" % p.returncode))
        return "\n".join(out)


PROBE = ("import sys,os\n"
         "print('ARCH', getattr(sys.implementation, '_mpy', 0) >> 10)\n"
         "try:\n s=os.statvfs('/')\n print('FREE', s[0]*s[3])\nexcept Exception:\n print('FREE -1')\n"
         "help('modules')\n")


def probe(board):
    """{"arch": mpy-cross name or None, "free": bytes or -1, "frozen": set
    of frozen module names such as "lock/app"} from the board. The first
    mpremote run: it interrupts what runs and soft-resets the board."""
    out = board.run(board.cmd("exec", PROBE, resume=False), PROBE_TIMEOUT_S, "probe")
    info = {"arch": None, "free": -1, "frozen": set()}
    in_modules = False
    for line in out.splitlines():
        if line.startswith("ARCH "):
            n = int(line.split()[1])
            info["arch"] = ARCH_NAMES[n] if 0 <= n < len(ARCH_NAMES) else "arch%d" % n
        elif line.startswith("FREE "):
            info["free"] = int(line.split()[1])
            in_modules = True
        elif in_modules:
            if line.startswith("Plus any modules"):
                in_modules = False
            else:
                info["frozen"].update(line.split())
    return info


def _verify_code(paths):
    return ("import hashlib\nb=bytearray(512)\nm=memoryview(b)\n"
            "for p in %r:\n"
            " try:\n"
            "  h=hashlib.sha256()\n"
            "  with open(p,'rb') as f:\n"
            "   while True:\n"
            "    n=f.readinto(b)\n"
            "    if not n:break\n"
            "    h.update(m[:n])\n"
            "  print('SHA',h.digest().hex(),p)\n"
            " except OSError as e:\n"
            "  print('SHA missing',p,e)\n" % (list(paths),))


def board_hashes(board, paths, what):
    """{board path: SHA-256 hex, or None when the board has no such file},
    computed on the board in one mpremote run."""
    out = board.run(board.cmd("exec", _verify_code(sorted(paths))), 60 + len(paths), what)
    got = {}
    for line in out.splitlines():
        if line.startswith("SHA "):
            _, h, p = line.split(" ", 2)
            if h == "missing":
                got[p.split(" ", 1)[0]] = None
            else:
                got[p] = h
    return got


def verify(board, want):
    """Compare the board's SHA-256 of every file with the host's (`want`:
    {board path: hex SHA-256}); returns the number verified; raises
    DeployError naming every difference."""
    got = board_hashes(board, want, "verify")
    bad = []
    for dst in sorted(want):
        h = got.get(dst, "no answer")
        if h != want[dst]:
            bad.append("%s (board %s, host %s)" % (dst, (h or "missing")[:16], want[dst][:16]))
    if bad:
        raise DeployError("hash mismatch on %d file(s), board not reset: %s" % (len(bad), "; ".join(bad)))
    return len(want)


def _mkdirs_code(dirs):
    return ("import os\nfor d in %r:\n try:\n  os.mkdir(d)\n except OSError:\n  pass\n" % (sorted(dirs),))


def _remote(dst):
    """mpremote's name for a board path: relative to the board's working
    directory, which is / after the soft reset (":lib/lock/app.mpy")."""
    return ":" + dst.lstrip("/")


def _dirs_of(files):
    dirs = set()
    for _, dst in files:
        parts = dst.split("/")[1:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/" + "/".join(parts[:i]))
    return sorted(dirs, key=lambda d: (d.count("/"), d))


def deploy(port, bundle, wifi=None, dry_run=False, say=print, board="esp32", before_verify=None):
    """Deploy to the board on serial `port` (a path: /dev/ttyUSB0, or the
    DIR/ttyBOARD of `lockctl board`). `board`: the profile under
    boards/<board>/. `before_verify`: a callable run between copy and
    verify (tests). Returns a dict: board, march, firmware ("frozen" or
    "lib"), files [(host, board path)], copied, unchanged, verified
    (counts), mpy_bytes, seconds. Raises DeployError."""
    t0 = time.monotonic()
    profile, note = board_profile(board)
    if note:
        say(note)
    march = profile["march"]
    bundle = os.path.abspath(bundle)
    out = tempfile.mkdtemp(prefix="lock-deploy-")
    made = compile_firmware(board, profile, out)
    mpy_bytes = sum(s for _, s in made)
    say("compiled %d modules for %s (%s): %d bytes" % (len(made), board, march, mpy_bytes))
    result = {"board": board, "march": march, "mpy_bytes": mpy_bytes, "copied": 0, "unchanged": 0}
    if dry_run:
        files = plan_files(board, bundle, out, made, profile, wifi)
        b = Board(port, say)
        for bad in shadowed(profile, made):
            say("WARNING: board.json \"files\": %s (deploy refuses this board until it moves)" % bad)
        say("(dry run; the .mpy copies are skipped if the board's firmware is frozen)")
        say(" ".join(shlex.quote(x) for x in b.cmd("exec", "<probe: architecture, free flash, frozen modules>",
                                                    resume=False)))
        say(" ".join(shlex.quote(x) for x in b.cmd("exec", "<sha256 of %d files: copy those that differ>"
                                                    % len(files))))
        say(" ".join(shlex.quote(x) for x in b.cmd("exec", "<mkdir %s>" % " ".join(_dirs_of(files)))))
        for src, dst in files:
            say(" ".join(shlex.quote(x) for x in b.cmd("fs", "cp", "-f", src, _remote(dst))))
        say(" ".join(shlex.quote(x) for x in b.cmd("exec", "<sha256 of %d files>" % len(files))))
        say(" ".join(shlex.quote(x) for x in b.cmd("reset")))
        result.update(files=files, firmware=None, verified=0, seconds=time.monotonic() - t0)
        return result

    # Everything that can be checked here is, before the board is touched
    # (the probe interrupts the lock that runs there).
    _check_shadowing(profile, made)
    files = plan_files(board, bundle, out, made, profile, wifi)
    dev = Board(port, say)
    say("[probe] %s" % port)
    info = probe(dev)
    if info["arch"] != march:
        raise DeployError("the board on %s runs native code for %s, board profile %r compiles for %s: "
                          "wrong --board?" % (port, info["arch"] or "no architecture (no native code)",
                                              board, march))
    wanted = {rel[:-4].replace(os.sep, "/") for rel, _ in made}
    frozen = wanted & info["frozen"]
    if frozen == wanted:
        say("firmware: frozen into the board's MicroPython (%d modules): no .mpy copied" % len(frozen))
        files = files[len(made):]  # plan_files puts the .mpy first
        result["firmware"] = "frozen"
    elif frozen:
        raise DeployError("the board's frozen firmware is from another tree (it lacks %s): flash an image "
                          "built from this tree, or a stock MicroPython" % ", ".join(sorted(wanted - frozen)))
    else:
        result["firmware"] = "lib"
        say("firmware: %d modules as .mpy in /lib; their bytecode goes to the heap, well over an ESP32's "
            "56 KiB at READY (bench/bench_deploy.py): a board without PSRAM needs the frozen image" % len(made))

    # What the board already holds is hashed there in one run; only the
    # files that differ are copied, in one mpremote run (one connection, no
    # soft reset in between) whose "cp" lines are the progress.
    say("[hash] SHA-256 of %d files on the board (unchanged ones are not copied)" % len(files))
    want = {dst: _sha(src) for src, dst in files}
    have = board_hashes(dev, [dst for _, dst in files], "hash")
    todo = [(src, dst) for src, dst in files if have.get(dst) != want[dst]]
    total = sum(os.path.getsize(s) for s, _ in todo)
    if 0 <= info["free"] < total:
        say("warning: %d bytes to copy, %d bytes free on the board" % (total, info["free"]))
    result["unchanged"] = len(files) - len(todo)
    result["copied"] = len(todo)
    if todo:
        args = ["exec", _mkdirs_code(_dirs_of(todo))]
        for src, dst in todo:
            args += ["+", "fs", "cp", "-f", src, _remote(dst)]
        by_dst = {dst: src for src, dst in todo}
        state = {"i": 0}

        def progress(line):
            if line.startswith("cp "):
                state["i"] += 1
                dst = "/" + line.rsplit(" :", 1)[-1].lstrip("/")
                src = by_dst.get(dst)
                say("[%d/%d] copying %s (%d bytes)" % (state["i"], len(todo), dst,
                                                       os.path.getsize(src) if src else 0))
        dev.run(dev.cmd(*args), 60 + total // 2000, "copy", progress)
    else:
        say("every file is already on the board")
    n = len(files)
    if before_verify:
        before_verify()
    say("[verify] SHA-256 of %d files on the board" % n)
    result["verified"] = verify(dev, want)
    say("verified: %d files match the host's SHA-256" % result["verified"])
    say("[reset] machine.reset()")
    dev.run(dev.cmd("reset"), RESET_TIMEOUT_S, "reset")
    result["files"] = files
    result["seconds"] = time.monotonic() - t0
    say("deployed %s to %s in %.1f s (%d copied, %d unchanged, firmware %s)" % (
        os.path.basename(bundle), port, result["seconds"], result["copied"], result["unchanged"],
        result["firmware"]))
    return result


def add_parser(subparsers):
    """`lockctl deploy`."""
    s = subparsers.add_parser("deploy", help="copy the firmware (.mpy for the board's architecture, unless "
                                             "frozen) and a bundle to a board with mpremote, verify, reset",
                              description="Probe the board (architecture, frozen firmware), copy the .mpy "
                                          "(unless frozen), the bundle (never as-key.pem) and boot.py/main.py "
                                          "with mpremote, check every file's SHA-256 on the board, then reset "
                                          "it. Files already on the board with the same hash are not copied.")
    s.add_argument("--port", required=True, help="serial port of the board: /dev/ttyUSB0, or DIR/ttyBOARD "
                                                 "of `lockctl board`")
    s.add_argument("--bundle", required=True, help="the lock's bundle (as-key.pem beside it is never copied)")
    s.add_argument("--board", default="esp32",
                   help="board profile boards/<board>/board.json (esp32, esp32c3, unix = lockctl board)")
    s.add_argument("--wifi", help='JSON file {"ssid": ..., "password": ...} to copy as /wifi.json')
    s.add_argument("--dry-run", action="store_true", help="compile and print the mpremote commands only")
    s.set_defaults(fn=cmd_deploy)


def cmd_deploy(a):
    try:
        deploy(a.port, a.bundle, a.wifi, a.dry_run, board=getattr(a, "board", "esp32"))
    except DeployError as e:
        print("lockctl: error: %s" % e, file=sys.stderr)
        sys.exit(2)

