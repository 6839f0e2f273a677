"""Build the simulator's MicroPython from pinned source into build/mp/.

usage: python tools/build_mp.py [--force] [--jobs N] [--quiet]

Makes `build/mp/micropython` (the unix-port variant in boards/unix/variant:
32-bit, float32, NimBLE, mbedTLS with DTLS and the ESP32's cipher suites, the
firmware frozen) and `build/mp/mpy-cross`, from MicroPython master 1c3c201149
with its pinned mbedTLS, NimBLE and micropython-lib:

- the vendored tarball `../shared/vendor/micropython-1c3c201149-unix-min.tar.xz`
  (or the path in $LOCK_MP_TARBALL), checked against its SHA-256, or
- where it is absent, a git clone of github.com/micropython/micropython at the
  same commits (the only step of the project that uses the network, and only
  at build time).

Cached: the SHA-256 of every input (source pin, variant, manifests, frozen
modules, this script) is kept in build/mp/inputs.sha256; nothing is rebuilt
while it matches. A frozen module that changes rebuilds only the interpreter's
frozen content (make is incremental). The last clean build's wall time is
kept in build/mp/clean-build-seconds for `make bench`.

Progress: each step is announced ("build_mp: [2/4] mpy-cross ...") and a
running make reports the files it has compiled every few seconds (a clean
build against the previous clean build's count, build/mp/progress.json), on
one rewritten line on a terminal. `--quiet` prints nothing but errors; the
compiler's own output always goes to build/mp/build.log.

Exit status 0 when the binaries are up to date, 1 with one line on stderr
when the build cannot be done.
"""
import json
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "build", "mp")
VARIANT_DIR = os.path.join(ROOT, "boards", "unix", "variant")
VARIANT = "locksim"

# The pins (shared/vendor/README.md). The tarball's hash stands for all four.
MICROPYTHON_COMMIT = "1c3c201149f37fe8d81246191b3127bb198d6306"
SUBMODULES = {
    "lib/mbedtls": "0bebf8b8c7f07abe3571ded48a11aa907a1ffb20",
    "lib/mynewt-nimble": "42849560ba7906f023f61e5f7ff3709ba2c1dfca",
    "lib/micropython-lib": "ee4bb8ff139e24c42b739935fbd8ec7c4d061e02",
}
TARBALL_NAME = "micropython-1c3c201149-unix-min.tar.xz"
TARBALL_SHA256 = "4ac34c7f84b2edc604ddc99824d91f2d7022f70e4ee69e7aff1fd43e80c8dee7"
GIT_URL = "https://github.com/micropython/micropython"
# py/makeversionhdr.py reads these when the tree has no .git (the tarball).
VERSION_ENV = {
    "MICROPY_GIT_TAG": "v1.29.0-preview.731.g1c3c201149",
    "MICROPY_GIT_HASH": "1c3c201149",
    "SOURCE_DATE_EPOCH": "1787063769",
}

# The variant files that set compiler flags (a change rebuilds every object).
VARIANT_SETTINGS = ["mpconfigvariant.mk", "mpconfigvariant.h"]

# Inputs besides the source pin: what goes into the interpreter.
INPUT_DIRS = ["firmware", os.path.join("boards", "unix", "variant")]
INPUT_FILES = [os.path.join("boards", "firmware_manifest.py"),
               os.path.join("boards", "unix", "blockdev.py"),
               os.path.join("tools", "build_mp.py")]


class BuildError(Exception):
    pass


def tarball_path():
    env = os.environ.get("LOCK_MP_TARBALL")
    if env:
        return env
    return os.path.join(os.path.dirname(ROOT), "shared", "vendor", TARBALL_NAME)


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_digest(source_id):
    """SHA-256 over the source pin and every input file (path and bytes)."""
    h = hashlib.sha256(source_id.encode())
    paths = [os.path.join(ROOT, p) for p in INPUT_FILES]
    for d in INPUT_DIRS:
        for dirpath, dirnames, files in os.walk(os.path.join(ROOT, d)):
            dirnames[:] = sorted(n for n in dirnames if n != "__pycache__")
            paths += [os.path.join(dirpath, f) for f in sorted(files) if not f.endswith(".pyc")]
    for p in sorted(paths):
        h.update(os.path.relpath(p, ROOT).encode() + b"\0")
        with open(p, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return h.hexdigest()


def _run(cmd, log, env=None, cwd=None):
    with open(log, "ab") as out:
        out.write(("\n$ %s\n" % " ".join(cmd)).encode())
        out.flush()
        r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if r.returncode:
        with open(log, "rb") as f:
            tail = f.read()[-4000:].decode(errors="replace")
        raise BuildError("%s failed (exit %d); log %s:\n%s" % (cmd[0], r.returncode, log, tail))


class Progress:
    """Steps and a running count of compiled files, on stdout."""

    def __init__(self, quiet, total_steps, counts_path, stream=None, clean=True):
        self.quiet = quiet
        self.clean = clean  # a clean build: counts compare with (and set) the last clean one
        self.total = total_steps
        self.step = 0
        self.counts_path = counts_path
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        try:
            with open(counts_path) as f:
                self.counts = json.load(f)
        except (OSError, ValueError):
            self.counts = {}
        self.t0 = time.time()

    def say(self, msg):
        if not self.quiet:
            print("build_mp: " + msg, file=self.stream, flush=True)

    def begin(self, what):
        self.step += 1
        self.say("[%d/%d] %s" % (self.step, self.total, what))

    def compiling(self, name, n, final=False):
        if self.quiet:
            return
        expect = self.counts.get(name) if self.clean else None
        of = "/%d" % expect if expect and n <= expect else ""
        msg = "build_mp: [%d/%d] %s: %d%s file(s) compiled, %.0f s" % (
            self.step, self.total, name, n, of, time.time() - self.t0)
        if self.tty:
            self.stream.write("\r" + msg + ("\n" if final else ""))
            self.stream.flush()
        elif final or n:
            print(msg, file=self.stream, flush=True)

    def record(self, name, n):
        if n and self.clean:
            self.counts[name] = n
            try:
                with open(self.counts_path, "w") as f:
                    json.dump(self.counts, f)
            except OSError:
                pass


def _make(cmd, log, progress, name, env=None, report_s=None):
    """Run make, its output into `log`, counting the files it compiles
    (the "CC"/"MPY"/"LINK" lines of MicroPython's makefiles) for `progress`."""
    if report_s is None:
        report_s = 1.0 if progress.tty else 10.0
    n = 0
    last = time.time()
    with open(log, "ab") as out:
        out.write(("\n$ %s\n" % " ".join(cmd)).encode())
        out.flush()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        for raw in p.stdout:
            out.write(raw)
            word = raw.split(None, 1)[0] if raw.strip() else b""
            if word in (b"CC", b"MPY", b"LINK", b"CXX", b"AS"):
                n += 1
                if time.time() - last >= report_s:
                    progress.compiling(name, n)
                    last = time.time()
        rc = p.wait()
    if rc:
        with open(log, "rb") as f:
            tail = f.read()[-4000:].decode(errors="replace")
        raise BuildError("%s failed (exit %d); log %s:\n%s" % (cmd[0], rc, log, tail))
    if n:
        progress.compiling(name, n, final=True)
    progress.record(name, n)
    return n


def _source_from_tarball(tar, src):
    got = _sha256_file(tar)
    if got != TARBALL_SHA256:
        raise BuildError("%s: SHA-256 %s, expected %s" % (tar, got, TARBALL_SHA256))
    tmp = src + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with tarfile.open(tar) as t:
        t.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(tmp)
    (top,) = os.listdir(tmp)
    shutil.rmtree(src, ignore_errors=True)
    os.rename(os.path.join(tmp, top), src)
    os.rmdir(tmp)


def _source_from_git(src, log):
    if not shutil.which("git"):
        raise BuildError("no %s and no git to clone %s" % (tarball_path(), GIT_URL))
    tmp = src + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _clone(tmp, log)
    except BuildError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError("no source: %s is missing (set LOCK_MP_TARBALL) and cloning %s at %s failed "
                         "(log: %s)" % (tarball_path(), GIT_URL, MICROPYTHON_COMMIT[:10], log))
    shutil.rmtree(src, ignore_errors=True)
    os.rename(tmp, src)


def _clone(tmp, log):
    _run(["git", "init", "-q", tmp], log)
    _run(["git", "-C", tmp, "fetch", "-q", "--depth", "1", GIT_URL, MICROPYTHON_COMMIT], log)
    _run(["git", "-C", tmp, "checkout", "-q", "FETCH_HEAD"], log)
    for path, commit in sorted(SUBMODULES.items()):
        _run(["git", "-C", tmp, "submodule", "update", "--init", "--depth", "1", path], log)
        got = subprocess.run(["git", "-C", os.path.join(tmp, path), "rev-parse", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        if got != commit:
            raise BuildError("%s is at %s, expected %s" % (path, got, commit))


def build(force=False, jobs=None, quiet=False):
    """Bring build/mp/ up to date. Returns True if it built, False if cached.
    Raises BuildError. Builds started at once (two pytest runs, make and an
    editor hook) take turns on build/mp/.lock instead of mixing their trees."""
    import fcntl
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(force, jobs, quiet)


def _build(force, jobs, quiet):
    tar = tarball_path()
    source_id = ("tarball:" + TARBALL_SHA256) if os.path.exists(tar) else ("git:" + MICROPYTHON_COMMIT)
    digest = input_digest(source_id)
    stamp = os.path.join(OUT, "inputs.sha256")
    exes = [os.path.join(OUT, "micropython"), os.path.join(OUT, "mpy-cross")]
    if not force and all(os.path.exists(e) for e in exes) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read().strip() == digest:
                return False
    os.makedirs(OUT, exist_ok=True)
    log = os.path.join(OUT, "build.log")
    open(log, "wb").close()
    t0 = time.time()
    src = os.path.join(OUT, "src")
    src_stamp = os.path.join(OUT, "source.id")
    have = open(src_stamp).read().strip() if os.path.exists(src_stamp) else None
    clean = have != source_id or force
    progress = Progress(quiet, 4 if clean else 3, os.path.join(OUT, "progress.json"), clean=clean)
    if clean:
        progress.begin("source: MicroPython %s from %s" % (
            MICROPYTHON_COMMIT[:10], tar if source_id.startswith("tarball") else GIT_URL))
        if os.path.exists(src_stamp):
            os.remove(src_stamp)
        if source_id.startswith("tarball"):
            _source_from_tarball(tar, src)
        else:
            _source_from_git(src, log)
        with open(src_stamp, "w") as f:
            f.write(source_id + "\n")
    else:
        progress.say("frozen modules or variant changed, rebuilding the interpreter")
    env = dict(os.environ)
    env.update(VERSION_ENV)
    jobs = str(jobs or max(2, os.cpu_count() or 2))
    progress.begin("mpy-cross (make -j%s; log %s)" % (jobs, os.path.relpath(log, ROOT)))
    _make(["make", "-C", os.path.join(src, "mpy-cross"), "-j", jobs], log, progress, "mpy-cross", env=env)
    # make does not track compiler flags: when the variant's settings change
    # (an mbedTLS macro in CFLAGS_EXTRA, say), the objects built with the old
    # ones would be linked again. Start that build directory afresh instead.
    port_build = os.path.join(src, "ports", "unix", "build-" + VARIANT)
    flags_stamp = os.path.join(port_build, ".variant-settings.sha256")
    flags = hashlib.sha256(b"".join(_sha256_file(os.path.join(VARIANT_DIR, f)).encode()
                                    for f in VARIANT_SETTINGS)).hexdigest()
    old_flags = open(flags_stamp).read().strip() if os.path.exists(flags_stamp) else None
    if old_flags != flags and os.path.exists(port_build):
        shutil.rmtree(port_build)
    progress.begin("interpreter: unix port, variant %s, firmware frozen (make -j%s)" % (VARIANT, jobs))
    _make(["make", "-C", os.path.join(src, "ports", "unix"), "-j", jobs,
           "VARIANT_DIR=" + VARIANT_DIR, "VARIANT=" + VARIANT,
           "BUILD=build-" + VARIANT], log, progress, "interpreter", env=env)
    progress.begin("install into %s" % os.path.relpath(OUT, ROOT))
    with open(flags_stamp, "w") as f:
        f.write(flags + "\n")
    for exe, built in zip(exes, [os.path.join(src, "ports", "unix", "build-" + VARIANT, "micropython"),
                                 os.path.join(src, "mpy-cross", "build", "mpy-cross")]):
        shutil.copy2(built, exe + ".tmp")
        os.replace(exe + ".tmp", exe)
    if clean:
        with open(os.path.join(OUT, "clean-build-seconds"), "w") as f:
            f.write("%.1f\n" % (time.time() - t0))
    with open(stamp, "w") as f:
        f.write(digest + "\n")
    if not quiet:
        print("build_mp: built %s and %s in %.0f s" % (exes[0], exes[1], time.time() - t0), flush=True)
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--force", action="store_true", help="rebuild from a fresh source tree")
    p.add_argument("--jobs", type=int, help="parallel make jobs (default: CPUs, at least 2)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args()
    try:
        build(a.force, a.jobs, a.quiet)
    except BuildError as e:
        sys.stderr.write("build_mp: %s\n" % e)
        sys.exit(1)


if __name__ == "__main__":
    main()
