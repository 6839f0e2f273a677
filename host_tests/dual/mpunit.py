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


_scratch = {"n": 0, "dir": None}


def scratch_path(name, blocks=200):
    """A fresh file path for a test that writes files: on littlefs (VfsLfs2)
    over a RAM block device of `blocks` blocks under MicroPython, as on the
    board (one mount per process, made by the first call), in a temporary
    directory removed at exit under CPython."""
    import sys
    _scratch["n"] += 1
    if _scratch["dir"] is None:
        if sys.implementation.name == "micropython":
            import vfs
            import blockdev
            bd = blockdev.RAMBlockDev(blocks=blocks)
            vfs.VfsLfs2.mkfs(bd, **blockdev.LFS_OPTIONS)
            vfs.mount(vfs.VfsLfs2(bd, **blockdev.LFS_OPTIONS), "/scratch")
            _scratch["dir"] = "/scratch"
        else:
            import atexit
            import shutil
            import tempfile
            _scratch["dir"] = tempfile.mkdtemp(prefix="dual")
            atexit.register(shutil.rmtree, _scratch["dir"], True)
    return "%s/%s%d" % (_scratch["dir"], name, _scratch["n"])
