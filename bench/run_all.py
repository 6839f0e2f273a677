"""`make bench`: every benchmark, one after the other; figures only.

usage: .venv/bin/python bench/run_all.py [--rebuild]
(--rebuild: bench_sim.py times a clean interpreter build instead of reading
the recorded one.)"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = ["bench_sim.py", "bench_p256.py", "bench_trust.py", "bench_lock.py", "bench_declog.py", "bench_wear.py",
           "bench_flood.py", "bench_coaps.py", "bench_ble.py", "bench_deploy.py", "bench_trl.py", "bench_uplink.py"]


def main():
    rebuild = "--rebuild" in sys.argv[1:]
    failed = 0
    for b in BENCHES:
        path = os.path.join(HERE, b)
        if not os.path.exists(path):
            continue
        print("=== %s" % b, flush=True)
        args = ["--rebuild"] if rebuild and b == "bench_sim.py" else []
        r = subprocess.run([sys.executable, path] + args)
        failed |= r.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
