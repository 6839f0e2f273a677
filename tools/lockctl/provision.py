"""`lockctl provision`: writes a provisioning bundle (PROFILE.md sec. 1).

DIR/lock.json      the lock's configuration (goes onto the lock)
DIR/lock-key.der   the lock's P-256 key (PKCS#8 DER, DTLS server identity)
DIR/lock-cert.der  its certificate, issued by the AS key acting as CA
DIR/as-key.pem     the AS private key, PKCS#8 PEM (stays on the host)
DIR/as-cert.pem    the AS CA certificate (clients trust it for DTLS)
"""
import datetime
import json
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from . import cose_host as ch


class ProvisionError(Exception):
    pass


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject_key, subject_cn, issuer_key, issuer_cn, ca, days):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(_name(subject_cn)).issuer_name(_name(issuer_cn))
         .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject_cn)]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def provision(out, device_id, issuer="https://as.example", kid="as-key-1", coap_port=5683,
              coaps_port=5684, plain_coap=False, allow_bearer=False, as_uri=None, bind="0.0.0.0",
              clock="unsynced", relock_ms=5000, force=False, as_key_pem=None, say=print, write_as_key=True):
    """Write a bundle for lock `device_id` in `out`; returns lock.json's
    dict. `write_as_key=False`: the AS key (given as `as_key_pem`) stays
    where it is, not beside the bundle (an AS that mints itself)."""
    if os.path.exists(os.path.join(out, "lock.json")) and not force:
        raise ProvisionError("%s already holds a bundle (use --force to replace it)" % out)
    os.makedirs(out, exist_ok=True)
    as_key = ch.key_from_pem(as_key_pem) if as_key_pem else ch.gen_key()
    lock_key = ch.gen_key()
    as_cert = _cert(as_key, "ACE AS " + issuer, as_key, "ACE AS " + issuer, True, 3650)
    lock_cert = _cert(lock_key, device_id, as_key, "ACE AS " + issuer, False, 3650)
    cfg = {
        "device_id": device_id,
        "as_uri": as_uri or "coaps://as.example/token",
        "as_keys": [{"issuer": issuer, "kid": kid.encode().hex(), "pub": ch.pub_bytes(as_key).hex()}],
        "as_lock_key": os.urandom(16).hex(),
        "lock_key": "lock-key.der",
        "lock_cert": "lock-cert.der",
        "clock_skew_s": 60,
        "clock": clock,
        "allow_bearer": allow_bearer,
        "bind": bind,
        "coap": {"enabled": plain_coap, "port": coap_port},
        "coaps": {"enabled": True, "port": coaps_port},
        "ble": {"enabled": False},
        "relock_ms": relock_ms,
        "lockout": {"max_failures": 5, "window_s": 60, "penalty_s": 30},
        "resources": [],
        "uplink": {"uri": None},
    }
    files = {
        "lock.json": (json.dumps(cfg, indent=2) + "\n").encode(),
        "lock-key.der": lock_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()),
        "lock-cert.der": lock_cert.public_bytes(serialization.Encoding.DER),
        "as-key.pem": ch.key_to_pem(as_key),
        "as-cert.pem": as_cert.public_bytes(serialization.Encoding.PEM),
    }
    if not write_as_key:
        del files["as-key.pem"]
    for name, data in files.items():
        path = os.path.join(out, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if name.endswith("key.pem") or
                     name.endswith("key.der") else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        say("wrote %s" % path)
    return cfg


def load_bundle(path):
    """(config dict, AS private key) of a bundle directory."""
    cfg_path = os.path.join(path, "lock.json")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except OSError as e:
        raise ProvisionError("cannot read %s: %s" % (cfg_path, e.strerror))
    key_path = os.path.join(path, "as-key.pem")
    as_key = None
    if os.path.exists(key_path):
        with open(key_path, "rb") as f:
            as_key = ch.key_from_pem(f.read())
    return cfg, as_key


def lock_files(path):
    """The files of bundle `path` the lock reads, by name: lock.json, the
    key and certificate lock.json names, the uplink's AS certificate when
    it names an uplink (PROFILE sec. 7), and a waiting rebind.cbor. Never
    the AS private key. Raises ProvisionError when lock.json is unreadable
    or is not a JSON object."""
    try:
        with open(os.path.join(path, "lock.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ProvisionError("cannot read %s/lock.json: %s" % (path, e))
    if not isinstance(cfg, dict):
        raise ProvisionError("%s/lock.json is not a JSON object" % path)
    # What the lock refuses to start without (firmware/lock/config.py checks the rest).
    if not isinstance(cfg.get("device_id"), str) or not cfg["device_id"]:
        raise ProvisionError("%s/lock.json: device_id must be a non-empty text" % path)
    keys = cfg.get("as_keys")
    if not isinstance(keys, list) or not keys or not all(
            isinstance(k, dict) and isinstance(k.get("pub"), str) and isinstance(k.get("issuer"), str) for k in keys):
        raise ProvisionError("%s/lock.json: as_keys must list the trusted AS keys ({issuer, kid, pub})" % path)
    names = ["lock.json"]
    for k in ("lock_key", "lock_cert"):
        if isinstance(cfg.get(k), str) and cfg[k]:
            names.append(cfg[k])
    up = cfg.get("uplink") or {}
    if isinstance(up, dict) and up.get("uri"):
        names.append(up.get("ca") or "as-cert.pem")
    if os.path.exists(os.path.join(path, "rebind.cbor")):
        names.append("rebind.cbor")
    return [n for n in names if n != "as-key.pem"]
