"""The simulated board's REPL (pyexec.c's friendly and raw REPL, raw-paste
included), compiled by boards/unix/board/standin.py into its own globals
only once main.py has ended or was never run: on a board the REPL is C
in flash, so while the lock runs its heap holds none of this.
"""
_in = sys.stdin.buffer  # noqa: F821 (standin.py's globals: sys, the resets)
_out = sys.stdout.buffer


def tx(s):
    _out.write(s)


def rx():
    """One byte from the UART; Ctrl-C arrives as SIGINT and is given back
    as 3, as the board's REPL reads it when no code runs."""
    try:
        b = _in.read(1)
    except KeyboardInterrupt:
        return 3
    if not b:
        # The supervisor closed the UART: power off.
        raise SystemExit(0)
    return b[0]


def _execute(src, g, mode_code):
    """parse_compile_execute with EXEC_FLAG_PRINT_EOF."""
    try:
        exec(compile(src, "<stdin>", "exec"), g)
    except SystemExit as e:
        tx(b"\x04")
        _reset_from(e, mode_code)
    except BaseException as e:  # noqa: printed after the first EOF, as the board does
        tx(b"\x04")
        sys.print_exception(e)
        tx(b"\x04")
        return
    tx(b"\x04\x04")


def _raw_paste(g):
    """Raw-paste mode (pyexec.c do_reader_stdin), with the ESP32's
    256-byte stdin buffer: a 128-byte flow-control window."""
    window = 128
    tx(b"R\x01" + bytes((window & 0xFF, window >> 8, 1)))
    buf = bytearray()
    remain = window
    while True:
        c = rx()
        if c == 4 or c == 3:
            tx(b"\x04")
            if c == 3:
                tx(b"\x04")
                sys.print_exception(KeyboardInterrupt())
                tx(b"\x04")
                return
            break
        buf.append(c)
        remain -= 1
        if remain == 0:
            tx(b"\x01")
            remain = window
    _execute(bytes(buf), g, SOFT_RESET_RAW)


def raw_repl(g):
    """pyexec_raw_repl. Returns when Ctrl-B asks for the friendly REPL."""
    tx(b"raw REPL; CTRL-B to exit\n")
    while True:
        line = bytearray()
        tx(b">")
        while True:
            c = rx()
            if c == 1:
                if len(line) == 2 and line[0] == 5:
                    if line[1] == ord("A"):
                        _raw_paste(g)
                    else:
                        tx(b"R\x00")
                    line = bytearray()
                    tx(b">")
                    continue
                tx(b"raw REPL; CTRL-B to exit\n")
                line = bytearray()
                tx(b">")
            elif c == 2:
                tx(b"\n")
                return
            elif c == 3:
                line = bytearray()
            elif c == 4:
                break
            else:
                line.append(c)
        tx(b"OK")
        if not line:
            tx(b"\nMPY: soft reboot\n")
            raise SystemExit(SOFT_RESET_RAW)
        _execute(bytes(line), g, SOFT_RESET_RAW)


def _banner():
    tx(("MicroPython v%d.%d.%d on lock board simulator (unix, x86, littlefs root)\n"
        % sys.implementation.version[:3]).encode())
    tx(b'Type "help()" for more information.\n')


def friendly_repl(g):
    """A line REPL (no history or completion); Ctrl-A: raw REPL, Ctrl-D: soft reset."""
    _banner()
    while True:
        tx(b">>> ")
        line = bytearray()
        while True:
            c = rx()
            if c == 1:
                raw_repl(g)
                _banner()
                line = None
                break
            if c == 2:
                tx(b"\n")
                _banner()
                line = None
                break
            if c == 3:
                tx(b"\nKeyboardInterrupt\n")
                line = None
                break
            if c == 4:
                if not line:
                    tx(b"\nMPY: soft reboot\n")
                    raise SystemExit(SOFT_RESET_FRIENDLY)
                continue
            if c in (8, 127):
                if line:
                    line.pop()
                    tx(b"\x08 \x08")
                continue
            if c == 13 or c == 10:
                tx(b"\n")
                break
            line.append(c)
            tx(bytes((c,)))
        if not line:
            continue
        try:
            exec(compile(bytes(line), "<stdin>", "single"), g)
        except SystemExit as e:
            _reset_from(e, SOFT_RESET_FRIENDLY)
        except BaseException as e:  # noqa: shown, as the REPL does
            sys.print_exception(e)


# What help('modules') lists on a stock board (--firmware lib): the port's
# frozen asyncio and the simulator's flash driver; the lock's packages are
# not in such a build, so `lockctl deploy` copies them.
_STOCK_FROZEN = ("asyncio/__init__", "asyncio/core", "asyncio/event", "asyncio/funcs", "asyncio/lock",
                 "asyncio/stream", "blockdev", "uasyncio")


def _stock_help(what=None):
    if what != "modules":
        return help(what) if what is not None else help()
    names = sorted(set(_STOCK_FROZEN) | {"array", "binascii", "builtins", "collections", "errno", "gc",
                                         "hashlib", "io", "json", "machine", "micropython", "os", "select",
                                         "socket", "struct", "sys", "time", "tls", "vfs"})
    for i in range(0, len(names), 4):
        print("".join("%-18s" % n for n in names[i:i + 4]))
    print("Plus any modules on the filesystem")


def _repl_main(mode):
    _repl.close()  # noqa: F821
    g = {"__name__": "__main__"}
    if sys.path[1] == "/lib":
        g["help"] = _stock_help
    if mode == "raw":
        raw_repl(g)
    while True:
        try:
            friendly_repl(g)
        except KeyboardInterrupt:
            tx(b"\nKeyboardInterrupt\n")
