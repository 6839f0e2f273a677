"""The host side of rebinding a lock to another AS (PROFILE sec. 7; seed
sec. 5.1; the lock's side is firmware/lock/rebind.py): the rebind record,
CBOR, for `POST /rebind` or for the file `rebind.cbor` a lock whose AS is
gone takes at boot with physical presence."""
import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import serialization



def record(issuer, kid, as_key, cert, uri, as_lock_key=None, hint=None):
    """The rebind record (CBOR bytes) naming a new AS: `issuer` (text),
    `kid` (bytes), `as_key` (its EC private or public key, cryptography),
    `cert` (its certificate or CA: a cryptography x509.Certificate, PEM or
    DER bytes), `uri` ("coaps://HOST[:PORT]"), `as_lock_key` (16 bytes or
    None), `hint` (text or None). Raises ValueError for a field the lock
    would refuse."""
    if hasattr(as_key, "public_key"):
        as_key = as_key.public_key()
    pub = as_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
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

