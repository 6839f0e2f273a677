# The board code every board freezes (boards/<board>/manifest.py includes
# this): one copy of the Python, the boards differ in board.json only.
# boot.py and main.py stay on the filesystem (the port runs them from
# there); board.json too, at /board.json.
module("board.py")
module("actuator_gpio.py")
module("wlan.py")
module("lockmain.py")
