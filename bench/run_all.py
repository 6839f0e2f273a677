"""`make bench`: every benchmark, one after the other; figures only."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = ["bench_p256.py", "bench_trust.py", "bench_lock.py", "bench_declog.py"]


def main():
    failed = 0
    for b in BENCHES:
        path = os.path.join(HERE, b)
        if not os.path.exists(path):
            continue
        print("=== %s" % b, flush=True)
        r = subprocess.run([sys.executable, path])
        failed |= r.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
