"""Seeded mutation run of valid tokens through the verifier.

Same code under CPython and MicroPython: a xorshift32 generator makes the
mutations identical on both. Every outcome must be a success or a clean
Refused; anything else is reported as a crash with the input.
Input (stdin, one JSON object): {"seed", "n", "tokens": [hex], "case": {...}}.
"""
import binascii
import json
import sys

import casedriver
from trust import reasons


class Rng:
    def __init__(self, seed):
        self.s = (seed & 0xFFFFFFFF) or 1

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def below(self, n):
        return self.next() % n if n > 0 else 0


def mutate(rng, tok):
    b = bytearray(tok)
    for _ in range(1 + rng.below(4)):
        op = rng.below(8)
        n = len(b)
        if op == 0 and n:                      # flip a bit
            b[rng.below(n)] ^= 1 << rng.below(8)
        elif op == 1 and n:                    # random byte
            b[rng.below(n)] = rng.below(256)
        elif op == 2:                          # insert a byte
            i = rng.below(n + 1)
            b = b[:i] + bytearray([rng.below(256)]) + b[i:]
        elif op == 3 and n:                    # delete a run
            i = rng.below(n)
            b = b[:i] + b[i + 1 + rng.below(8):]
        elif op == 4 and n:                    # truncate
            b = b[:rng.below(n)]
        elif op == 5 and n:                    # interesting CBOR heads
            b[rng.below(n)] = (0x1B, 0x5B, 0x7B, 0x9B, 0xBB, 0xDB, 0xFF, 0x9F, 0xBF, 0xF8, 0x1F)[rng.below(11)]
        elif op == 6 and n > 2:                # duplicate a slice
            i = rng.below(n)
            j = min(n, i + 1 + rng.below(16))
            b = b[:i] + b[i:j] + b[i:]
        elif op == 7 and n:                    # length/count off by one
            i = rng.below(n)
            b[i] = (b[i] + (1 if rng.below(2) else 255)) & 0xFF
    return bytes(b)


def run(spec):
    rng = Rng(spec["seed"])
    toks = [binascii.unhexlify(t) for t in spec["tokens"]]
    case = spec["case"]
    v = casedriver.make_verifier(case)
    counts = {}
    crashes = []
    for i in range(spec["n"]):
        m = mutate(rng, toks[rng.below(len(toks))])
        try:
            v.verify(m, case.get("now"), 0, 0, False)
            key = "ok"
        except reasons.Refused as e:
            key = reasons.name(e.reason)
        except Exception as e:  # the finding this run looks for
            key = "CRASH"
            crashes.append("%s %r %s" % (type(e).__name__, e, binascii.hexlify(m).decode()))
        counts[key] = counts.get(key, 0) + 1
    return counts, crashes


def main():
    spec = json.loads(sys.stdin.read())
    counts, crashes = run(spec)
    for c in crashes[:20]:
        print("CRASH " + c)
    print("COUNTS " + json.dumps(counts))
    print("END")


if __name__ == "__main__":
    main()
