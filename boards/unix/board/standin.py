"""The simulated board's ROM: what an ESP32's MicroPython does at reset,
on the simulator's interpreter (build/mp/micropython), for `lockctl board`.

usage: micropython standin.py --flash IMAGE [--mode power|raw]
                              [--firmware frozen|lib] [--blocks N]

Run by the host supervisor (tools/lockctl/boardsim.py) with its stdin and
stdout on a pseudo-terminal (the board's UART), which cooks output as the
ESP32's console does (\\n -> \\r\\n) and turns a received Ctrl-C into
SIGINT (KeyboardInterrupt), as the board's UART interrupt does.

On a board all of this is C in flash and costs the lock no heap; here it
is Python on the heap, so it is kept out of the lock's way: the set-up
(standin_setup.py) is compiled, run and dropped before boot.py, and the
REPL (standin_repl.py) is compiled only once main.py has ended or when it
is not run. While the lock runs, only this file's few lines are resident.

At start, as ports/esp32/main.c: the littlefs image (boards/unix/blockdev.py,
the lock's 4096-byte-block flash) is mounted at / in place of the host's
filesystem (a blank image is formatted first, as inisetup.py does), then
/boot.py runs, then /main.py if the mode is "power" (a power-on or hard
reset) and not "raw" (a soft reset asked for from the raw REPL). Then the
REPL on the UART: the friendly REPL and the raw REPL with raw-paste, as
shared/runtime/pyexec.c speaks them, which is what mpremote drives.

firmware "frozen": sys.path is the ESP32's ['', '.frozen', '/lib'] and the
lock's modules are frozen into this interpreter. firmware "lib": the board
carries only asyncio (frozen, as the ESP32 port's own manifest has it) and
the lock's modules must come from /lib (the .mpy that `lockctl deploy`
copies): sys.path is ['', '/lib'].

Resets leave the process with an exit code the supervisor acts on:
81 machine.reset() (hard: boot.py and main.py again), 80 soft reset from
the raw REPL (boot.py only, raw REPL again), 82 soft reset from the friendly
REPL or machine.soft_reset() (boot.py and main.py).
"""

import gc
import sys

import machine as _machine

HARD_RESET = 81
SOFT_RESET_RAW = 80
SOFT_RESET_FRIENDLY = 82


class _Machine:
    """machine, with the resets a board has (the unix port's machine has
    neither): the supervisor restarts the interpreter."""

    def __getattr__(self, name):
        return getattr(_machine, name)

    def reset(self):
        raise SystemExit(HARD_RESET)

    def soft_reset(self):
        raise SystemExit(SOFT_RESET_FRIENDLY)


def _reset_from(e, soft_code):
    code = e.value if isinstance(e.value, int) else None
    if code in (HARD_RESET, SOFT_RESET_RAW, SOFT_RESET_FRIENDLY):
        raise e
    # sys.exit() on a board soft-resets it.
    raise SystemExit(soft_code)


def _run_file(path):
    """Run /boot.py or /main.py as pyexec_file_if_exists does: True if it
    ended normally; an exception is printed; resets pass through."""
    try:
        f = open(path)
    except OSError:
        return True
    g = {"__name__": "__main__", "__file__": path}
    try:
        code = f.read()
        f.close()
        # As pyexec_file: the source is not kept while the script runs.
        code = compile(code, path, "exec")
        exec(code, g)
        return True
    except SystemExit as e:
        _reset_from(e, SOFT_RESET_FRIENDLY)
    except BaseException as e:  # noqa: the board prints it and goes on to the REPL
        sys.print_exception(e)
    return False


def _part(name):
    d = sys.argv[0].rsplit("/", 1)
    return open((d[0] if len(d) > 1 else ".") + "/" + name)


_repl = _part("standin_repl.py")  # opened while the host's filesystem is mounted
_s = {"Machine": _Machine, "src": _part("standin_setup.py")}
exec(compile(_s["src"].read(), "standin_setup.py", "exec"), _s)
_mode = _s["mode"]
_s = None
_keep = list(sys.modules)
gc.collect()
try:
    if _run_file("/boot.py") and _mode == "power":
        _run_file("/main.py")
except KeyboardInterrupt:
    pass
# The board's REPL is C and needs no heap; this one must be compiled, and a
# lock interrupted by Ctrl-C still holds its heap through the modules it
# imported (asyncio's queue holds its tasks). They go, as the soft reset
# that mpremote sends next would make them go.
for _k in list(sys.modules):
    if _k not in _keep:
        del sys.modules[_k]
if "asyncio" in sys.modules:
    sys.modules["asyncio"].new_event_loop()
_k = _keep = None
gc.collect()
exec(compile(_repl.read(), "standin_repl.py", "exec"), globals())
_repl_main(_mode)  # noqa: F821 (standin_repl.py)
