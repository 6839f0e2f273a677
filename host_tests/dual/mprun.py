"""Runs one dual test module under the MicroPython unix port.

usage: micropython mprun.py MODULE [NAME_PREFIX]
Prints one line per test ("ok NAME" or "FAIL NAME: ERROR") and a closing
"N passed, M failed" line; exits 1 if anything failed or nothing ran.
"""
import sys


def main():
    modname = sys.argv[1]
    prefix = sys.argv[2] if len(sys.argv) > 2 else "test_"
    mod = __import__(modname)
    names = sorted(n for n in dir(mod) if n.startswith(prefix))
    passed = failed = 0
    for name in names:
        fn = getattr(mod, name)
        if not callable(fn):
            continue
        try:
            fn()
        except Exception as e:
            failed += 1
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
            sys.print_exception(e)
        else:
            passed += 1
            print("ok %s" % name)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not passed else 0)


main()
