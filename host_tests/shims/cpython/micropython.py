"""CPython stand-in for MicroPython's `micropython` module (tests only).

Firmware modules use `const` and the code-emitter decorators; under CPython
these are identities, so the same source runs unchanged.
"""


def const(x):
    return x


def native(f):
    return f


def viper(f):
    return f


def mem_info(*a):
    pass
