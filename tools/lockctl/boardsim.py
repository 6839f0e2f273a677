"""`lockctl board`: the simulator's interpreter started as a board, for
`lockctl deploy` and mpremote to drive exactly as an ESP32 on /dev/ttyUSB0.

The board is boards/unix/board/standin.py on build/mp/micropython (its
"ROM": littlefs image mounted at /, boot.py, main.py, the raw REPL). This
module is the USB-serial bridge and the power supply around it:

- port side: a pseudo-terminal whose slave is reachable at a stable path
  (DIR/ttyBOARD, a symlink to /dev/pts/N) that mpremote opens with
  pyserial. It stays open across the board's resets, as a CP210x does;
  what the board prints while nobody listens is dropped when the port's
  buffer is full (a UART has no flow control).
- board side: a second pseudo-terminal, the interpreter's stdin, stdout
  and controlling terminal: output cooked \\n -> \\r\\n as the ESP32's
  console does, a received Ctrl-C turned into SIGINT (KeyboardInterrupt)
  as the board's UART interrupt does.
- resets: the interpreter exits 81 on machine.reset(), 80/82 on a soft
  reset; the supervisor starts it again (hard reset: input the board had
  not read is lost, as on a board). Any other exit is a crash and the
  board is restarted after RESTART_AFTER_CRASH_S, like a watchdog.

Everything the board prints is also kept, line by line, in `lines` (and
in DIR/console.log), so tests and benchmarks can wait for READY.
"""
import errno
import fcntl
import os
import selectors
import signal
import subprocess
import sys
import termios
import threading
import time
import tty

from . import interp

ROOT = interp.ROOT
STANDIN = os.path.join(ROOT, "boards", "unix", "board", "standin.py")
HARD_RESET, SOFT_RESET_RAW, SOFT_RESET_FRIENDLY = 81, 80, 82
RESTART_AFTER_CRASH_S = 1.0


class BoardError(Exception):
    pass


def _raw(fd):
    tty.setraw(fd)


def _board_tty(fd):
    """The interpreter's terminal: bytes in as sent (no CR/NL mapping, no
    echo, no line discipline) except Ctrl-C, which raises SIGINT without
    flushing the queues; output NL -> CR NL."""
    attr = termios.tcgetattr(fd)
    attr[0] = 0                                       # iflag
    attr[1] = termios.OPOST | termios.ONLCR            # oflag
    attr[3] = termios.ISIG | termios.NOFLSH            # lflag
    cc = attr[6]
    for i in range(len(cc)):
        cc[i] = 0 if isinstance(cc[i], int) else b"\0"
    cc[termios.VINTR] = b"\x03"
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attr)


class BoardSim:
    """One simulated board. `dir`: where the port symlink (ttyBOARD), the
    flash image (flash.img unless `flash` names one) and console.log live.
    `firmware`: "frozen" (the lock's modules are in the interpreter) or
    "lib" (they must be in /lib). `heapsize`: bytes of GC heap (int or
    "56K"), default the ESP32's 56 KiB. `blocks`: flash size in 4096-byte
    blocks (default blockdev.BLOCKS, 128 = 512 KiB). `echo`: a callable
    given each console line as it arrives (None: silent). `grow`: bytes of
    modelled ESP-IDF system heap the GC heap may grow into (None: the
    ESP32 model of lockctl.interp; 0: never)."""

    def __init__(self, dir, flash=None, firmware="frozen", heapsize=None, blocks=None, echo=None, grow=None):
        if firmware not in ("frozen", "lib"):
            raise BoardError("firmware must be 'frozen' or 'lib', not %r" % (firmware,))
        self.dir = os.path.abspath(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = os.path.join(self.dir, "ttyBOARD")
        self.flash = os.path.abspath(flash or os.path.join(self.dir, "flash.img"))
        self.firmware = firmware
        self.heapsize = heapsize or interp.ESP32_HEAP_BYTES
        self.blocks = blocks
        self.echo = echo
        self.grow = interp.ESP32_HEAP_GROW_BYTES if grow is None else grow
        self.lines = []
        self.resets = []          # (time.monotonic(), exit code) per restart
        self.proc = None
        self._partial = b""
        self._stop = threading.Event()
        self._thread = None
        self._log = None
        self._pts = None

    # -- life cycle -------------------------------------------------------
    def start(self):
        """Open the ports, power the board on; returns self. Raises
        BoardError when the interpreter is missing."""
        try:
            self._cmd0 = interp.micropython_cmd(self.heapsize)
        except interp.InterpreterMissing as e:
            raise BoardError(str(e))
        if os.path.islink(self.port) and os.path.exists(self.port):
            # The link leads to a live pseudo-terminal: another board runs on
            # this directory (its flash image too). A stale link is replaced.
            raise BoardError("%s is in use by another lockctl board (its port %s is live): stop it, or give "
                             "this one another --dir" % (self.dir, self.port))
        self.port_master, self._port_slave = os.openpty()
        _raw(self._port_slave)
        self.board_master, self._board_slave = os.openpty()
        _board_tty(self._board_slave)
        for fd in (self.port_master, self.board_master):
            os.set_blocking(fd, False)
        try:
            os.unlink(self.port)
        except FileNotFoundError:
            pass
        self._pts = os.ttyname(self._port_slave)
        os.symlink(self._pts, self.port)
        self._log = open(os.path.join(self.dir, "console.log"), "ab")
        self._to_board = b""
        self._spawn("power")
        self._thread = threading.Thread(target=self._loop, name="boardsim", daemon=True)
        self._thread.start()
        return self

    def _spawn(self, mode):
        cmd = self._cmd0 + [STANDIN, "--flash", self.flash, "--mode", mode, "--firmware", self.firmware]
        if self.blocks:
            cmd += ["--blocks", str(self.blocks)]
        env = interp.mp_env(".frozen", grow=self.grow)
        slave = self._board_slave

        def child():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     preexec_fn=child, close_fds=True, cwd=self.dir)

    def stop(self):
        """Power off: the interpreter is killed, the ports closed, the
        symlink removed."""
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for fd in (self.port_master, self._port_slave, self.board_master, self._board_slave):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            if os.readlink(self.port) == self._pts:
                os.unlink(self.port)
        except OSError:
            pass
        if self._log:
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- the bridge -------------------------------------------------------
    def _console(self, data):
        self._log.write(data)
        self._log.flush()
        data = self._partial + data
        parts = data.split(b"\n")
        self._partial = parts.pop()
        for p in parts:
            line = p.rstrip(b"\r").decode("utf-8", "replace")
            self.lines.append(line)
            if self.echo:
                self.echo(line)

    def _loop(self):
        try:
            self._bridge()
        except Exception as e:  # noqa: said on the console, where a test or a person looks
            self._console(("\n[board: the bridge stopped: %r]\n" % (e,)).encode())
            raise

    def _bridge(self):
        sel = selectors.DefaultSelector()
        sel.register(self.port_master, selectors.EVENT_READ, "port")
        sel.register(self.board_master, selectors.EVENT_READ, "board")
        while not self._stop.is_set():
            for key, _ in sel.select(0.05):
                try:
                    data = os.read(key.fd, 4096)
                except OSError as e:
                    if e.errno in (errno.EAGAIN, errno.EIO):
                        continue
                    raise
                if key.data == "port":
                    self._to_board += data
                else:
                    self._console(data)
                    try:
                        os.write(self.port_master, data)
                    except BlockingIOError:
                        pass    # nobody reads the port: the bytes are lost, as on a UART
            if self._to_board:
                try:
                    n = os.write(self.board_master, self._to_board)
                    self._to_board = self._to_board[n:]
                except BlockingIOError:
                    pass
            rc = self.proc.poll()
            if rc is not None and not self._stop.is_set():
                self._restart(rc)

    def _restart(self, rc):
        # What the interpreter printed last is read before it starts again.
        try:
            while True:
                data = os.read(self.board_master, 4096)
                if not data:
                    break
                self._console(data)
                try:
                    os.write(self.port_master, data)
                except BlockingIOError:
                    pass
        except OSError:
            pass
        self.resets.append((time.monotonic(), rc))
        if rc == SOFT_RESET_RAW:
            self._spawn("raw")
        elif rc == SOFT_RESET_FRIENDLY:
            self._spawn("power")
        else:
            # A hard reset: the UART input the board had not read is gone.
            termios.tcflush(self._board_slave, termios.TCIFLUSH)
            self._to_board = b""
            if rc != HARD_RESET:
                self._console(("[board: interpreter exited with %s; restarting in %.0f s as after a "
                               "watchdog reset]\n" % (rc, RESTART_AFTER_CRASH_S)).encode())
                if self._stop.wait(RESTART_AFTER_CRASH_S):
                    return
            self._spawn("power")

    # -- for tests --------------------------------------------------------
    def wait_for(self, text, timeout=20, start=0):
        """The first console line from index `start` on containing `text`
        (the line being printed, such as a prompt, counts); raises
        BoardError (with the console's tail) after `timeout` s."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.lines[start:]:
                if text in line:
                    return line
            partial = self._partial.decode("utf-8", "replace")
            if text in partial:
                return partial
            time.sleep(0.02)
        raise BoardError("board: no %r within %s s; console:\n%s" % (text, timeout, "\n".join(self.lines[-40:])))

    def hard_resets(self):
        return sum(1 for _, rc in self.resets if rc == HARD_RESET)


def add_parser(subparsers):
    """`lockctl board`: run a simulated board in the foreground."""
    s = subparsers.add_parser("board", help="run a simulated board (the simulator's interpreter on a "
                                            "pseudo-terminal, littlefs root) for lockctl deploy / mpremote",
                              description="A board stand-in: its REPL (raw REPL included) on DIR/ttyBOARD,\n"
                                          "its filesystem a littlefs image, boot.py and main.py run at reset\n"
                                          "(the simulator's interpreter; Ctrl-C or a kill powers it off).",
                              epilog="example:\n  lockctl board --dir var/board &\n  lockctl deploy --board unix "
                                     "--port var/board/ttyBOARD --bundle mylock\n  mpremote connect "
                                     "var/board/ttyBOARD fs ls :",
                              formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    s.add_argument("--dir", default=os.path.join(ROOT, "var", "board"),
                   help="where the port (DIR/ttyBOARD), flash.img and console.log live (default var/board)")
    s.add_argument("--flash", help="littlefs image (default DIR/flash.img, created blank)")
    s.add_argument("--firmware", choices=("frozen", "lib"), default="frozen",
                   help="frozen: the lock's modules are in the interpreter (as a lock firmware image); "
                        "lib: a stock board, the modules must be deployed as .mpy in /lib")
    s.add_argument("--heap", default=None,
                   help="GC heap, e.g. 64K (default boards/unix/board.json: \"heap\", the ESP32's 56 KiB plus "
                        "what the stand-in's own Python holds; \"heap_lib\" with --firmware lib)")
    s.add_argument("--blocks", type=int, default=None, help="flash size in 4096-byte blocks (default 128)")
    s.set_defaults(fn=cmd_board)


def _stop_on_signal(signum, frame):
    raise KeyboardInterrupt


def cmd_board(a):
    heap = a.heap
    if heap is None:
        heap = board_profile("unix").get("heap_lib" if a.firmware == "lib" else "heap")
    try:
        interp.ensure_built()
        blocks = a.blocks or board_profile("unix").get("flash_blocks")
        b = BoardSim(a.dir, a.flash, a.firmware, heap, blocks, echo=lambda l: print(l, flush=True))
        b.start()
    except (BoardError, RuntimeError) as e:
        print("lockctl: error: %s" % e, file=sys.stderr)
        sys.exit(2)
    print("board: port %s (firmware %s, heap %s); mpremote connect %s; Ctrl-C powers off" % (
        b.port, a.firmware, b.heapsize, b.port), flush=True)
    # Ctrl-C or a kill powers the board off (the interpreter goes with it;
    # were this process killed outright, the closed pty hangs it up).
    signal.signal(signal.SIGINT, _stop_on_signal)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()


def board_profile(name):
    """boards/NAME/board.json as a dict ({} when absent)."""
    import json
    try:
        with open(os.path.join(ROOT, "boards", name, "board.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def main(argv=None):
    """`python -m lockctl.boardsim board ...` (what `lockctl board` runs)."""
    import argparse
    p = argparse.ArgumentParser(prog="lockctl")
    add_parser(p.add_subparsers(dest="cmd", required=True))
    a = p.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
