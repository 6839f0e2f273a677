"""A phone's unlock latency while another address floods the lock.

usage: .venv/bin/python bench/bench_flood.py [--seconds S] [--baseline-seconds B]

The flood of host_tests/test_e2e_flood.py (`Flood`): the simulated lock on
loopback with its default configuration, the victim's token stored and
used, other phones' tokens filling the store; the victim (127.0.0.1)
unlocks back to back, each unlock a token-less request (4.01 and a fresh
cnonce) and a proof-only request (2.04), CON with retransmission. First
for B seconds with nobody else on the network (the reference, same run),
then for S seconds while 127.0.0.2 floods: nonces, sniffed tokens inline
and uploaded, bad proofs against the full store (second half only), garbage
and oversize datagrams (see that file).

Prints (figures only, nothing asserted): p50 and p99 of the victim's unlock
(the proof request's round trip, as bench_lock.py measures it) and of the
whole unlock (hints + proof), with and without the flood and the ratio
flood / no flood; how many unlocks were granted or refused; what the
attacker's requests got.
"""
import argparse
import collections
import os
import statistics
import sys
import tempfile

from benchutil import ROOT

sys.path[:0] = [os.path.join(ROOT, "firmware"), os.path.join(ROOT, "host_tests", "shims", "cpython")]

from test_e2e_flood import Flood, granted, percentile  # noqa: E402


def figures(out):
    g = granted(out)
    lat = [u[3] for u in g]
    whole = [u[4] for u in g]
    return {"n": len(out["unlocks"]), "granted": len(g),
            "refused": collections.Counter(u[1] for u in out["unlocks"] if u[1] != "2.04"),
            "others": collections.Counter("%s %s" % (o[1], o[2]) for o in out["others"]),
            "p50": statistics.median(lat) if lat else float("nan"), "p99": percentile(lat, 0.99),
            "w50": statistics.median(whole) if whole else float("nan"), "w99": percentile(whole, 0.99),
            "halves": [[u[3] for u in g if (u[0] < out["quiet_s"]) == first] for first in (True, False)]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="flood duration (default 15 s)")
    ap.add_argument("--baseline-seconds", type=float, default=8.0,
                    help="unlocks without a flood, the reference (default 8 s)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lock-flood-") as tmp:
        base = Flood(os.path.join(tmp, "base"), seconds=a.baseline_seconds, flood=False).run(read=False)
        flood = Flood(os.path.join(tmp, "flood"), seconds=a.seconds).run(read=False)
    b, f = figures(base), figures(flood)
    print("Victim unlocks on loopback, back to back (stored token, fresh PoP proof each; store full):")
    print("  %-34s %9s %9s %11s %11s %s" % ("", "p50 ms", "p99 ms", "whole p50", "whole p99", "unlocks"))
    for name, x, secs in (("no flood (reference)", b, a.baseline_seconds), ("flood from 127.0.0.2", f, a.seconds)):
        extra = ""
        if x["refused"] or x["others"]:
            extra = ", refused %s%s" % (dict(x["refused"]), (", no nonce %s" % dict(x["others"])) if x["others"] else "")
        print("  %-34s %9.1f %9.1f %11.1f %11.1f %d granted of %d in %.0f s%s"
              % (name, x["p50"], x["p99"], x["w50"], x["w99"], x["granted"], x["n"], secs, extra))
    print("  ratio flood / no flood:             p50 %.2f   p99 %.2f   whole p50 %.2f   whole p99 %.2f"
          % (f["p50"] / b["p50"], f["p99"] / b["p99"], f["w50"] / b["w50"], f["w99"] / b["w99"]))
    for name, lat in zip(("first half (no bad proofs, no junk options)", "second half (all four kinds)"),
                         f["halves"]):
        if lat:
            print("  flood, %-44s p50 %.1f ms (%.2f x no flood), p99 %.1f ms, %d granted"
                  % (name + ":", statistics.median(lat), statistics.median(lat) / b["p50"],
                     percentile(lat, 0.99), len(lat)))
    print("  unlock: the proof request's round trip (as bench_lock.py); whole: hints request + proof")
    print("attacker, %d rounds: %s" % (flood["attacker"]["rounds"], ", ".join(flood["attacker"]["counts"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
