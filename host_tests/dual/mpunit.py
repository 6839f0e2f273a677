"""Tiny test helpers that work the same under CPython (pytest) and MicroPython.

Dual test modules (host_tests/dual/test_*.py) use only plain `assert` and these
helpers, so one file runs under both interpreters.
"""


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raised; fail if it raised nothing
    or raised something other than exc_type."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    except Exception as e:  # wrong type: report it clearly
        raise AssertionError("expected %s, got %s: %r" % (exc_type.__name__, type(e).__name__, e))
    raise AssertionError("expected %s, nothing raised" % exc_type.__name__)


def unhex(s):
    """Hex (whitespace allowed) to bytes."""
    import binascii
    return binascii.unhexlify("".join(s.split()))
