# Board main (every board): kept tiny, since the board compiles it onto
# the heap at boot; the sequence is frozen in lockmain.py.
import time

import machine
import lockmain

try:
    lockmain.main()
except Exception as e:
    # Fail secure: the reset releases the relay; say why and restart.
    import sys
    sys.print_exception(e)
    time.sleep(5)
    machine.reset()
