"""Bench AS: its directory (configuration in files, keys, database).

DIR/as.json            issuer, kid, database URL, ports, token lifetime
DIR/as-key.pem         the AS key: signs tokens and certificates (PKCS#8 PEM)
DIR/as-cert.pem        the AS CA certificate; locks trust it for the uplink,
                       phones for the lock's certificate (PROFILE sec. 1, 7)
DIR/as-server-key.pem  the uplink's DTLS server key
DIR/as-server-cert.pem its certificate, issued by the CA
DIR/as.db              SQLite database (unless as.json names another URL)
"""
import json
import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .. import cose_host as ch
from . import ca
from .store import Store, StoreError

DEFAULTS = {
    "issuer": "https://as.example",
    "kid": "as-key-1",
    "db": None,                  # None: sqlite:///DIR/as.db
    "bind": "127.0.0.1",
    "coap_port": 5783,           # phones: POST /token (plain CoAP, see server.py)
    "coaps_port": 5784,          # locks: the uplink (CoAPS, mutual certificates)
    "token_ttl_s": 3600,         # longest token lifetime, whatever the policy
    "trl_page": 16,              # revocations per GET /trl answer
    "server_names": ["localhost", "127.0.0.1"],
}


class HomeError(Exception):
    pass


def _write(path, data, secret=False):
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise HomeError("cannot read %s: %s" % (path, e.strerror)) from None


class Home:
    """An opened AS directory: cfg, as_key, ca_cert, server key and cert
    (DER), and the Store."""

    def __init__(self, path):
        self.path = path
        cfg_path = os.path.join(path, "as.json")
        try:
            cfg = json.loads(_read(cfg_path))
        except ValueError as e:
            raise HomeError("%s: %s" % (cfg_path, e)) from None
        self.cfg = dict(DEFAULTS, **cfg)
        self.as_key = ch.key_from_pem(_read(self._p("as-key.pem")))
        self.ca_cert = x509.load_pem_x509_certificate(_read(self._p("as-cert.pem")))
        self.server_key = ch.key_from_pem(_read(self._p("as-server-key.pem")))
        self.server_cert_der = x509.load_pem_x509_certificate(
            _read(self._p("as-server-cert.pem"))).public_bytes(serialization.Encoding.DER)
        self.store = Store(self.db_url)

    def _p(self, name):
        return os.path.join(self.path, name)

    @property
    def db_url(self):
        return self.cfg["db"] or "sqlite:///" + os.path.abspath(self._p("as.db"))

    @property
    def issuer(self):
        return self.cfg["issuer"]

    @property
    def kid(self):
        return self.cfg["kid"].encode()

    @property
    def ca_der(self):
        return self.ca_cert.public_bytes(serialization.Encoding.DER)

    def close(self):
        self.store.close()

    # -- the CA side of provisioning ----------------------------------------
    def issue_lock_cert(self, device_id, lock_public_key, exi=True, new_log=False):
        """Issue a lock's certificate and record it (a new lock, or a new
        certificate for a known one: the old one is refused from then on;
        `new_log`: a known lock provisioned anew, whose decision log starts
        over). Returns the DER. What `lockctl provision` calls for an
        AS-run lock."""
        der = ca.issue_lock_cert(self.as_key, self.issuer, device_id, lock_public_key)
        cert = x509.load_der_x509_certificate(der)
        pub = ch.pub_bytes(lock_public_key)
        serial = "%x" % cert.serial_number
        try:
            self.store.lock(device_id)
        except StoreError:
            self.store.add_lock(device_id, pub, der, serial, exi)
        else:
            self.store.replace_lock_cert(device_id, pub, der, serial, new_log=new_log)
        return der

    def uplink_uri(self, host=None):
        """coaps://HOST:PORT of this AS's uplink, and the name its server
        certificate must be checked for when HOST is not one of its names."""
        if host is None:
            host = self.cfg["bind"] if self.cfg["bind"] not in ("0.0.0.0", "::", "") else \
                self.cfg["server_names"][0]
        h = "[%s]" % host if ":" in host else host
        name = None if host in self.cfg["server_names"] else self.cfg["server_names"][0]
        return "coaps://%s:%d" % (h, self.cfg["coaps_port"]), name

    def issue_phone_cert(self, client_id):
        """Issue and record a DTLS client certificate for a registered
        phone's key (the token endpoint over CoAPS knows the phone by it).
        Returns the DER; a certificate issued before is refused from then on."""
        from cryptography.hazmat.primitives.asymmetric import ec
        phone = self.store.phone(client_id)
        if phone is None:
            raise StoreError("no phone %r" % client_id)
        pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(phone["public_key"]))
        der = ca.issue_phone_cert(self.as_key, self.issuer, client_id, pub)
        self.store.set_phone_cert(client_id, der, "%x" % x509.load_der_x509_certificate(der).serial_number)
        return der

    def provision_lock(self, out, device_id, exi=None, uplink_host=None, **kw):
        """`lockctl provision` for a lock this AS serves: the bundle trusts
        this AS's key (issuer, kid), its lock certificate is issued here and
        recorded, as-cert.pem is this AS's CA, and lock.json's "uplink"
        names this AS (lock/config.py: uri, ca, name). kw: provision()'s
        options."""
        from ..provision import provision
        if not kw.get("as_uri"):
            # The hints the lock gives phones name this AS's token endpoint.
            host = self.uplink_uri(uplink_host)[0].split("//", 1)[1].rsplit(":", 1)[0]
            kw["as_uri"] = "coap://%s:%d/token" % (host, self.cfg["coap_port"])
        cfg = provision(out, device_id, issuer=self.issuer, kid=self.cfg["kid"],
                        as_key_pem=_read(self._p("as-key.pem")), say=kw.pop("say", lambda *a: None),
                        write_as_key=False, **kw)
        uri, name = self.uplink_uri(uplink_host)
        cfg["uplink"] = dict(cfg.get("uplink") or {}, uri=uri, ca="as-cert.pem")
        if name:
            cfg["uplink"]["name"] = name
        _write(os.path.join(out, "lock.json"), (json.dumps(cfg, indent=2) + "\n").encode())
        lock_key = serialization.load_der_private_key(_read(os.path.join(out, cfg["lock_key"])), None)
        if exi is None:
            exi = cfg.get("clock", "unsynced") == "unsynced"
        der = self.issue_lock_cert(device_id, lock_key.public_key(), exi, new_log=True)
        _write(os.path.join(out, cfg["lock_cert"]), der)
        _write(os.path.join(out, "as-cert.pem"), _read(self._p("as-cert.pem")))
        return cfg

    def import_bundle(self, bundle, exi=None):
        """Register a lock from an existing bundle: it must trust this AS's
        key and hold a certificate this AS issued (else HomeError). The
        bundle's exi-seq (lockctl token --exi) raises the AS's counter."""
        cfg = json.loads(_read(os.path.join(bundle, "lock.json")))
        mine = ch.pub_bytes(self.as_key).hex()
        if not any(k.get("pub") == mine for k in cfg.get("as_keys", ())):
            raise HomeError("bundle %s does not trust this AS's key (provision it with "
                            "`lockctl as lock add DEVICE --provision DIR`)" % bundle)
        der = _read(os.path.join(bundle, cfg.get("lock_cert") or "lock-cert.der"))
        try:
            cert = ca.check_issued(self.ca_cert, der)
        except ca.CertError as e:
            raise HomeError("bundle %s: lock certificate refused: %s" % (bundle, e)) from None
        device_id = cfg["device_id"]
        if ca.device_id_of(cert) != device_id:
            raise HomeError("bundle %s: certificate is for %r, lock.json says %r" % (
                bundle, ca.device_id_of(cert), device_id))
        self._record_lock(device_id, cert, der, cfg, exi)
        seq_path = os.path.join(bundle, "exi-seq")
        if os.path.exists(seq_path):
            try:
                n = int(_read(seq_path).strip() or b"0")
            except ValueError:
                raise HomeError("%s: not a number" % seq_path) from None
            self.store.set_exi_seq(self.store.lock(device_id)["id"], n)
        return device_id


    def _record_lock(self, device_id, cert, der, cfg, exi):
        # The lock as this AS knows it: its exact certificate (new or replaced).
        if exi is None:
            exi = cfg.get("clock", "unsynced") == "unsynced"
        pub = ch.pub_bytes(cert.public_key())
        serial = "%x" % cert.serial_number
        try:
            self.store.lock(device_id)
            self.store.replace_lock_cert(device_id, pub, der, serial)
        except StoreError:
            self.store.add_lock(device_id, pub, der, serial, exi)

    # -- rebinding: a lock coming from another AS (seed sec. 5.1) -------------
    def adopt_lock(self, bundle, exi=None):
        """Register a lock that another AS provisioned, before it is rebound
        to this one (PROFILE sec. 7): its certificate, issued by that AS, is
        recorded as it is (the uplink knows a lock by its exact certificate)
        and that AS's CA (the bundle's as-cert.pem) is kept in lock-cas/ as
        a trust anchor of the uplink's DTLS, so the handshake can check the
        chain. Returns the device id. HomeError for a bundle without the
        two certificates or whose certificate that CA did not issue."""
        cfg = json.loads(_read(os.path.join(bundle, "lock.json")))
        der = _read(os.path.join(bundle, cfg.get("lock_cert") or "lock-cert.der"))
        ca_pem = _read(os.path.join(bundle, "as-cert.pem"))
        try:
            old_ca = x509.load_pem_x509_certificate(ca_pem)
            cert = ca.check_issued(old_ca, der)
        except (ValueError, ca.CertError) as e:
            raise HomeError("bundle %s: the lock's certificate does not chain to its as-cert.pem: %s"
                            % (bundle, e)) from None
        device_id = cfg["device_id"]
        self._record_lock(device_id, cert, der, cfg, exi)
        anchors = self._p("lock-cas")
        os.makedirs(anchors, exist_ok=True)
        ca_der = old_ca.public_bytes(serialization.Encoding.DER)
        import hashlib
        _write(os.path.join(anchors, hashlib.sha256(ca_der).hexdigest()[:16] + ".der"), ca_der)
        return device_id

    def lock_cas(self):
        """DER certificates of other AS's CAs kept by adopt_lock."""
        d = self._p("lock-cas")
        if not os.path.isdir(d):
            return []
        return [_read(os.path.join(d, n)) for n in sorted(os.listdir(d)) if n.endswith(".der")]

    def rebind_record(self, uplink_host=None, hint=None):
        """The rebind record (CBOR, lock.rebind's format) that moves a lock
        to this AS: issuer, kid, public key, CA certificate, uplink URI."""
        from ..rebind import record
        uri, _name = self.uplink_uri(uplink_host)
        return record(self.issuer, self.cfg["kid"].encode(), self.as_key, self.ca_der, uri, hint=hint)


def init(path, issuer=DEFAULTS["issuer"], kid=DEFAULTS["kid"], db=None, server_names=None, force=False,
         **cfg):
    """Create an AS directory: keys, CA and server certificates, as.json,
    the database. Refuses to overwrite one unless `force`."""
    if os.path.exists(os.path.join(path, "as.json")) and not force:
        raise HomeError("%s already holds an AS (use --force to replace it)" % path)
    os.makedirs(path, exist_ok=True)
    names = list(server_names or DEFAULTS["server_names"])
    as_key = ch.gen_key()
    server_key = ch.gen_key()
    ca_cert = ca.make_ca_cert(as_key, issuer)
    server_der = ca.issue_server_cert(as_key, issuer, server_key, names)
    conf = dict(DEFAULTS, issuer=issuer, kid=kid, db=db, server_names=names, **cfg)
    if not db:
        db_file = os.path.join(path, "as.db")
        if os.path.exists(db_file):
            os.unlink(db_file)
    _write(os.path.join(path, "as-key.pem"), ch.key_to_pem(as_key), secret=True)
    _write(os.path.join(path, "as-cert.pem"), ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(os.path.join(path, "as-server-key.pem"), ch.key_to_pem(server_key), secret=True)
    _write(os.path.join(path, "as-server-cert.pem"), x509.load_der_x509_certificate(server_der).public_bytes(
        serialization.Encoding.PEM))
    _write(os.path.join(path, "as.json"), (json.dumps(conf, indent=2) + "\n").encode())
    home = Home(path)
    home.store.create()
    return home


def open_home(path):
    if not os.path.exists(os.path.join(path, "as.json")):
        raise HomeError("no AS in %s (create one: lockctl as init %s)" % (path, path))
    home = Home(path)
    try:
        home.store.check()
    except StoreError as e:
        home.close()
        raise HomeError(str(e)) from None
    return home
