"""The host side of rebinding a lock to another AS (PROFILE sec. 7; seed
sec. 5.1; the lock's side is firmware/lock/rebind.py): the rebind record,
CBOR, for `POST /rebind` or for the file `rebind.cbor` a lock whose AS is
gone takes at boot with physical presence."""
import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import cose_host as ch


def record(issuer, kid, as_key, cert, uri, as_lock_key=None, hint=None):
    """The rebind record (CBOR bytes) naming a new AS: `issuer` (text),
    `kid` (bytes), `as_key` (its EC private or public key, cryptography),
    `cert` (its certificate or CA: a cryptography x509.Certificate, PEM or
    DER bytes), `uri` ("coaps://HOST[:PORT]"), `as_lock_key` (16 bytes or
    None), `hint` (text or None). Raises ValueError for a field the lock
    would refuse."""
    pub = ch.pub_bytes(as_key)
    if isinstance(cert, bytes) and cert.startswith(b"-----"):
        cert = x509.load_pem_x509_certificate(cert)
    if isinstance(cert, x509.Certificate):
        cert = cert.public_bytes(serialization.Encoding.DER)
    if not isinstance(kid, bytes) or not 1 <= len(kid) <= 64:
        raise ValueError("kid: 1 to 64 bytes")
    if not 1 <= len(cert) <= 1024:
        raise ValueError("the AS certificate must be 1 to 1024 bytes of DER")
    if not uri.startswith(("coaps://", "coap://")):
        raise ValueError("uri: coaps://HOST[:PORT]")
    rec = {"issuer": issuer, "kid": kid, "pub": pub, "cert": cert, "uri": uri}
    if as_lock_key is not None:
        if len(as_lock_key) != 16:
            raise ValueError("as_lock_key: 16 bytes")
        rec["as_lock_key"] = bytes(as_lock_key)
    if hint is not None:
        rec["hint"] = hint
    return cbor2.dumps(rec)



def _read(path):
    with open(path, "rb") as f:
        return f.read()


def cmd_record(a):
    """`lockctl rebind-record`: write the record to --out."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
    data = _read(a.as_key)
    try:
        key = load_pem_private_key(data, None) if b"PRIVATE" in data else load_pem_public_key(data)
    except ValueError as e:
        raise SystemExit("lockctl rebind-record: %s: not a PEM EC key: %s" % (a.as_key, e))
    try:
        raw = record(a.issuer, a.kid.encode(), key, _read(a.as_cert), a.uri,
                     bytes.fromhex(a.as_lock_key) if a.as_lock_key else None, a.hint)
    except ValueError as e:
        raise SystemExit("lockctl rebind-record: %s" % e)
    with open(a.out, "wb") as f:
        f.write(raw)
    print("wrote %s (%d bytes): the lock moves to %s (%s)" % (a.out, len(raw), a.issuer, a.uri))
    print("online: POST it to the lock's /rebind with an admin token of its current AS")
    print("offline (its AS is gone): copy it into the lock's bundle as rebind.cbor and hold the "
          "pairing button while the lock boots (simulator: lockctl sim --presence)")
    return 0


EPILOG = """examples:
  lockctl rebind-record --issuer https://as2.example --kid as2-key-1 \\
      --as-key as2/as-key.pem --as-cert as2/as-cert.pem --uri coaps://as2.example --out rebind.cbor
  cp rebind.cbor mylock/ && lockctl sim mylock --presence     # offline, physical presence
"""


def add_parser(sub):
    """`lockctl rebind-record`."""
    import argparse
    s = sub.add_parser("rebind-record", help="write a rebind record that moves a lock to another AS",
                       description=__doc__.split("\n\n")[0], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--issuer", required=True, help="the new AS's issuer (the iss of its tokens)")
    s.add_argument("--kid", required=True, help="the kid of the new AS's signing key (text)")
    s.add_argument("--as-key", required=True, help="the new AS's key, PEM (public, or private: only "
                   "its public half goes into the record)")
    s.add_argument("--as-cert", required=True, help="the new AS's certificate or CA, PEM or DER")
    s.add_argument("--uri", required=True, help="the new AS's uplink URI, coaps://HOST[:PORT]")
    s.add_argument("--as-lock-key", help="a new AS-to-lock key for PSK mode, 32 hex digits")
    s.add_argument("--hint", help="the AS URI the lock gives phones in its hints (default: the issuer)")
    s.add_argument("--out", default="rebind.cbor", help="where to write the record (default rebind.cbor)")
    s.set_defaults(fn=cmd_record)
    return s
