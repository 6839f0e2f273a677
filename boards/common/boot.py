# Board boot (every board): the relay is released before anything else
# runs, so a reset leaves the door locked (boards/common/board.py).
import board

try:
    board.start()
except Exception as e:
    # main.py says why again and does not start the lock.
    print("board:", e)
