"""Rebinding the lock to another AS (seed sec. 5.1 "Alice changes
authorization server"; PROFILE.md sec. 1 and 7).

A rebind record names the new AS, as a CBOR map with text keys:

    "issuer"       text, 1-255 bytes: the `iss` its tokens carry
    "kid"          bytes, 1-64: the kid of its signing key
    "pub"          bytes, 65: its ES256 public key (uncompressed P-256 point)
    "cert"         bytes, 1-1024: its certificate, or the CA that issued it
                   (DER), which the uplink's DTLS client accepts
    "uri"          text: the uplink target, "coaps://HOST[:PORT]" (or
                   "coap://", development only)
    "as_lock_key"  bytes, 16 (optional): the new AS-to-lock key for PSK-mode
                   `cnf` keys (PROFILE sec. 3); without it PSK-mode tokens
                   are refused
    "hint"         text (optional): the AS URI in the lock's AS Request
                   Creation Hints (RFC 9200 5.3); default the issuer

It comes in `POST /rebind`, authorized by an `admin` token of the current
AS, or, for a lock whose AS is gone, as the file `rebind.cbor` in the
bundle directory, which the lock takes at boot only with physical presence
(the board's pairing button held at boot; the simulator's `--rebind`).

The lock keeps the record in `as.cbor` beside its state: the CBOR map and
its CRC-32 (4 bytes, big-endian), replaced atomically (a temporary file,
then a rename, which littlefs commits atomically). At boot it takes the
place of the bundle's AS. A record that is there but damaged makes the lock
trust no AS at all (fail closed) until a rebind with physical presence.
"""
import os
import struct
from binascii import crc32

from lock import config
from trust import cbor, p256
from trust.verifier import TrustedKey

FILE = "as.cbor"
REQUEST_FILE = "rebind.cbor"
MAX_BYTES = 1536   # a record: the certificate (1024) and the rest

_FIELDS = ("issuer", "kid", "pub", "cert", "uri", "as_lock_key", "hint")


class RebindError(ValueError):
    """A rebind record that is not well-formed: the message says which field."""


def _bytes(rec, key, lo, hi):
    v = rec.get(key)
    if not isinstance(v, bytes) or not lo <= len(v) <= hi:
        raise RebindError("%s: %d to %d bytes" % (key, lo, hi) if lo != hi else "%s: %d bytes" % (key, lo))
    return v


def _text(rec, key, hi):
    v = rec.get(key)
    if not isinstance(v, str) or not 0 < len(v.encode()) <= hi:
        raise RebindError("%s: text of 1 to %d bytes" % (key, hi))
    return v


def _der_sequence_len(b):
    # The length of the DER SEQUENCE at the start of b (header included), or
    # -1: a certificate is one SEQUENCE and nothing after it (mbedTLS checks
    # the rest when the uplink connects).
    if len(b) < 2 or b[0] != 0x30:
        return -1
    n = b[1]
    if n < 0x80:
        return 2 + n
    k = n & 0x7F
    if not 1 <= k <= 2 or len(b) < 2 + k:
        return -1
    return 2 + k + int.from_bytes(b[2:2 + k], "big")


def parse(raw):
    """The rebind record (a dict) in `raw` (CBOR bytes, at most MAX_BYTES).
    Raises RebindError naming the first field that is wrong: unknown keys,
    wrong types or sizes, a public key that is not on P-256, a URI that
    config.parse_uri refuses."""
    if len(raw) > MAX_BYTES:
        raise RebindError("record longer than %d bytes" % MAX_BYTES)
    try:
        rec = cbor.decode(raw, 2, MAX_BYTES)
    except ValueError:
        raise RebindError("not well-formed CBOR")
    if not isinstance(rec, dict):
        raise RebindError("a CBOR map is expected")
    for k in rec:
        if k not in _FIELDS:
            raise RebindError("unknown field %r" % (k,))
    _text(rec, "issuer", 255)
    _bytes(rec, "kid", 1, 64)
    if not p256.point_valid(_bytes(rec, "pub", 65, 65)):
        raise RebindError("pub: not a valid P-256 point")
    cert = _bytes(rec, "cert", 1, 1024)
    if _der_sequence_len(cert) != len(cert):
        raise RebindError("cert: not a DER certificate")
    try:
        config.parse_uri(_text(rec, "uri", 255))
    except config.ConfigError as e:
        raise RebindError(str(e))
    if "as_lock_key" in rec:
        _bytes(rec, "as_lock_key", 16, 16)
    if "hint" in rec:
        _text(rec, "hint", 255)
    return rec


def save(path, rec):
    """Write `rec` to `path` atomically. Raises OSError; the old file is
    then still in place."""
    tmp = path + ".tmp"
    raw = cbor.encode(rec)
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.write(struct.pack(">I", crc32(raw)))
        os.rename(tmp, path)
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def load(path):
    """The record kept at `path`, or None when there is none. Raises
    RebindError when the file is there but damaged or unreadable (the
    caller then trusts no AS)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 5)
    except OSError as e:
        if e.args and e.args[0] == 2:  # ENOENT: never rebound
            return None
        raise RebindError("cannot read %s: %s" % (path, e))
    if len(raw) <= 4 or len(raw) > MAX_BYTES + 4 or struct.unpack(">I", raw[-4:])[0] != crc32(raw[:-4]):
        raise RebindError("%s is damaged (CRC)" % path)
    return parse(raw[:-4])


def apply(cfg, rec):
    """Make `cfg` (a lock.config.Config) name the AS of `rec`: its one
    trusted key, the AS-to-lock key, the hint and the uplink target (with
    the record's certificate as the uplink's trust anchor, `ca_der`)."""
    cfg.as_keys = [TrustedKey(rec["issuer"], rec["kid"], rec["pub"])]
    cfg.as_lock_key = rec.get("as_lock_key")
    cfg.as_uri = rec.get("hint", rec["issuer"])
    u = cfg.uplink
    u.scheme, u.host, u.port = config.parse_uri(rec["uri"])
    u.enabled = True
    u.ca_der = rec["cert"]
    u.name = None


def distrust(cfg):
    """Make `cfg` trust no AS (a damaged record: fail closed)."""
    cfg.as_keys = []
    cfg.as_lock_key = None
    cfg.uplink.enabled = False
