"""Runs token/proof verification cases through the firmware's trust core.

The same driver runs in-process under CPython and as a script under the
MicroPython unix port (cases as JSON lines on stdin, "ID REASON" lines out),
so one table of crafted defects is checked on both interpreters.

A case: {"id", "token" (hex), "device_id", "keys": [[issuer, kid_hex|null,
pub_hex]], "psk_key" (hex|null), "allow_bearer", "skew", "now" (int|null),
"boot", "uptime", "revoked_hashes"/"revoked_ctis" (hex lists), "permission"
(checked against scope when present), "pop": {"proofs": [hex], "nonce_key"
(hex: the boot key the nonces were made under), "peer", "now_ms"}}. REASON is 0 when everything passed.
"""
import binascii
import json
import sys

from trust import pop, reasons
from trust.verifier import TrustedKey, Verifier


def _h(s):
    return binascii.unhexlify(s) if s is not None else None


def make_verifier(case):
    keys = [TrustedKey(k[0], _h(k[1]), _h(k[2])) for k in case["keys"]]
    v = Verifier(case.get("device_id", "lock-1"), keys, _h(case.get("psk_key")),
                 case.get("skew", 60), case.get("allow_bearer", False))
    for x in case.get("revoked_hashes", ()):
        v.revoked_hashes.add(_h(x))
    for x in case.get("revoked_ctis", ()):
        v.revoked_ctis.add(_h(x))
    return v


def run_case(case, v=None):
    """Returns (reason, detail)."""
    if v is None:
        v = make_verifier(case)
    try:
        tok = v.verify(_h(case["token"]), case.get("now"), case.get("boot", 0), case.get("uptime", 0))
        perm = case.get("permission")
        if perm is not None and not tok.allows(perm):
            raise reasons.Refused(reasons.SCOPE_INSUFFICIENT, perm)
        p = case.get("pop")
        if p is not None:
            clock = [p.get("now_ms", 0)]
            table = pop.NonceTable(lambda: clock[0], key=_h(p["nonce_key"]))
            if tok.claims.pop_key is None:
                raise reasons.Refused(reasons.POP_MISSING, "token has no EC2 cnf")
            for proof in p["proofs"]:
                pop.check_proof(_h(proof), tok.claims.pop_key, v.device_id, perm, tok.hash, table,
                                p.get("peer"))
        return 0, ""
    except reasons.Refused as e:
        return e.reason, e.detail


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        case = json.loads(line)
        r, d = run_case(case)
        print("%s %d %s" % (case["id"], r, d))
    print("END")


if __name__ == "__main__":
    main()
