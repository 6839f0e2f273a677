# Board main (every board): kept tiny, since the board compiles it onto
# the heap at boot; the sequence is frozen in lockmain.py.
import time

import machine
import lockmain

try:
    lockmain.main()
except KeyboardInterrupt:
    # Ctrl-C (mpremote, deploy's probe, a person at the REPL) stops the lock
    # and its relock task: the relay is released before the REPL has the
    # board, so the door is locked whatever it was.
    import board
    if board.current is not None:
        board.current.relay_spec.output(False)
    print("lock stopped (Ctrl-C): relay released, the door locked")
    raise
except Exception as e:
    # Fail secure: the reset releases the relay; say why and restart.
    import sys
    sys.print_exception(e)
    time.sleep(5)
    machine.reset()
