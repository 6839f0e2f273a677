"""Bench AS: the certificate authority (PROFILE sec. 1, 7).

The AS key is also the CA: it signs the AS's own CA certificate, the DTLS
server certificate the uplink presents to locks, every lock's certificate
(`issue_lock_cert`, for provisioning) and the phones' client certificates
for the token endpoint over CoAPS (`issue_phone_cert`). The AS serves DTLS with a
separate server key (the token-signing key signs nothing but tokens and
certificates). A lock is known on the uplink by its certificate: exactly
the one this AS issued it and recorded (store.Store.lock_by_cert), never
merely one that chains to the CA; a phone likewise (Store.phone_by_cert).
"""
import datetime
import ipaddress

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 3650


class CertError(ValueError):
    """A certificate the AS refuses (not issued by it, wrong key type)."""


def ca_name(issuer):
    # The same subject lockctl provision gives its AS certificate.
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACE AS " + issuer)])


def _builder(subject, issuer_name, public_key, days):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer_name)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def make_ca_cert(as_key, issuer, days=CA_DAYS):
    b = _builder(ca_name(issuer), ca_name(issuer), as_key.public_key(), days)
    b = (b.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                      content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(as_key.public_key()), critical=False))
    return b.sign(as_key, hashes.SHA256())


def _leaf(as_key, issuer, cn, public_key, sans, eku, days):
    b = _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), ca_name(issuer), public_key, days)
    b = (b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.SubjectAlternativeName(sans), critical=False)
         .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(as_key.public_key()),
                        critical=False))
    return b.sign(as_key, hashes.SHA256())


def _p256(public_key):
    if not (isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1"):
        raise CertError("a lock key must be P-256 (PROFILE sec. 1)")
    return public_key


def issue_lock_cert(as_key, issuer, device_id, lock_public_key, days=LEAF_DAYS):
    """A lock's certificate (DER), signed by the AS as CA: CN and DNS SAN =
    device_id, usable as DTLS server (phones) and client (uplink). The
    caller records it (Store.add_lock / AuthServer.issue_lock_cert), else
    the uplink refuses it."""
    pub = _p256(lock_public_key)
    cert = _leaf(as_key, issuer, device_id, pub, [x509.DNSName(device_id)],
                 [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], days)
    return cert.public_bytes(serialization.Encoding.DER)


def issue_phone_cert(as_key, issuer, client_id, phone_public_key, days=LEAF_DAYS):
    """A phone's DTLS client certificate (DER) for the token endpoint over
    CoAPS: CN = client_id, for the phone's registered PoP key."""
    cert = _leaf(as_key, issuer, client_id, _p256(phone_public_key), [x509.DNSName(_dns_label(client_id))],
                 [ExtendedKeyUsageOID.CLIENT_AUTH], days)
    return cert.public_bytes(serialization.Encoding.DER)


def _dns_label(text):
    # A SAN needs a DNS-shaped name; the CN carries the client_id verbatim.
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text.lower()) or "phone"


def issue_server_cert(as_key, issuer, server_key, names, days=LEAF_DAYS):
    """The AS's DTLS server certificate for its uplink: CN the first name,
    SAN every name (DNS, or IP address when it parses as one)."""
    sans = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            sans.append(x509.DNSName(n))     # mbedTLS before 3.5 matches IPs as DNS text
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = _leaf(as_key, issuer, names[0], _p256(server_key.public_key()), sans,
                 [ExtendedKeyUsageOID.SERVER_AUTH], days)
    return cert.public_bytes(serialization.Encoding.DER)


def check_issued(ca_cert, cert_der):
    """The parsed certificate when `cert_der` is signed by the CA key under
    its name (else CertError). Issued by this AS, that is; the store still
    decides whether it is the lock's current one."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError:
        raise CertError("not a DER certificate") from None
    if cert.issuer != ca_cert.subject:
        raise CertError("issued by %s, not by this AS (%s)" % (cert.issuer.rfc4514_string(),
                                                               ca_cert.subject.rfc4514_string()))
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError) as e:
        raise CertError("not signed by this AS's CA key (%s)" % type(e).__name__) from None
    _p256(cert.public_key())
    return cert


def device_id_of(cert):
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
