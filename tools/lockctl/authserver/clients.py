"""Bench AS: the other ends, on the host: a phone asking the token endpoint
(plain CoAP with aiocoap, or CoAPS with its certificate), and a lock's
uplink (CoAPS with the lock's certificate); CoAPS is lockctl.dtls on
python-mbedtls. Used by `lockctl as request` and the tests; the lock's own
uplink is firmware (PROFILE sec. 7)."""
import asyncio

import cbor2
from mbedtls import pk, tls, x509

from .. import cose_host as ch
from ..client import _code
from ..dtls import CERT_CIPHERS, CoapOverDtls, DtlsChannel
from . import tokens


def token_request_body(client_id, key, audience, scope):
    """The CBOR of a token request (RFC 9200 5.8.1) for a phone's PoP key."""
    return cbor2.dumps({tokens.GRANT_TYPE: tokens.GRANT_CLIENT_CREDENTIALS, tokens.CLIENT_ID: client_id,
                        tokens.AUDIENCE: audience, tokens.SCOPE: scope,
                        tokens.REQ_CNF: {1: ch.cose_key_ec2(key)}}, canonical=True)


def request_token_coaps(host, port, client_id, key, cert_der, ca_der, audience, scope,
                        server_name="localhost"):
    """POST /token over CoAPS, the phone authenticated by the client
    certificate the AS issued it: (CoAP code text, response map)."""
    from cryptography.hazmat.primitives import serialization
    key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with CoapsClient(host, port, cert_der, key_der, ca_der, server_name) as c:
        code, payload, _cf = c.request("POST", "token", token_request_body(client_id, key, audience, scope), 19)
    return code, cbor2.loads(payload) if payload else None


async def request_token(host, port, client_id, key, audience, scope, timeout_s=10.0):
    """POST /token over plain CoAP: (CoAP code text, response map)."""
    import aiocoap
    host_part = "[%s]" % host if ":" in host else host
    msg = aiocoap.Message(code=aiocoap.POST, uri="coap://%s:%d/token" % (host_part, port),
                          payload=token_request_body(client_id, key, audience, scope))
    msg.opt.content_format = 19
    ctx = await aiocoap.Context.create_client_context()
    try:
        resp = await asyncio.wait_for(ctx.request(msg).response, timeout_s)
    finally:
        await ctx.shutdown()
    return _code(resp), cbor2.loads(resp.payload) if resp.payload else None


class _CertChannel(DtlsChannel):
    """DtlsChannel presenting a client certificate (mutual authentication),
    validating the server against `ca_der` with hostname `server_name`."""

    def __init__(self, host, port, cert_der, key_der, ca_der, server_name, handshake_timeout=10.0):
        super().__init__(host, port, lock_cert=b"", ca_cert=ca_der, handshake_timeout=handshake_timeout)
        self.lock_cert = None           # no pin: the CA and the name are the check
        self.client_cert, self.client_key = cert_der, key_der
        self.server_name = server_name

    def _context(self):
        store = tls.TrustStore()
        store.add(x509.CRT.from_DER(self.ca_cert))
        chain = ([x509.CRT.from_DER(self.client_cert)], pk.ECC.from_DER(self.client_key)) \
            if self.client_cert else None
        kw = dict(ciphers=CERT_CIPHERS, trust_store=store, validate_certificates=True,
                  lowest_supported_version=tls.DTLSVersion.DTLSv1_2,
                  highest_supported_version=tls.DTLSVersion.DTLSv1_2,
                  handshake_timeout_min=1.0, handshake_timeout_max=self.handshake_timeout)
        if chain:
            kw["certificate_chain"] = chain
        return tls.ClientContext(tls.DTLSConfiguration(**kw)), self.server_name


class CoapsClient:
    """CoAPS to the AS with a client certificate: a lock's uplink (PROFILE
    sec. 7) or a phone on the host. Certificate and key DER (None: no
    client certificate), the AS CA's DER, the name the AS certificate must
    carry."""

    def __init__(self, host, port, cert_der, key_der, ca_der, server_name="localhost",
                 handshake_timeout=10.0, exchange_timeout=20.0):
        self.channel = _CertChannel(host, port, cert_der, key_der, ca_der, server_name, handshake_timeout)
        self.coap = CoapOverDtls(self.channel, exchange_timeout)

    def __enter__(self):
        self.channel.connect()
        return self

    def __exit__(self, *a):
        self.channel.close()

    def request(self, method, path, payload=b"", cf=None):
        """(code text, payload bytes, content format)."""
        import aiocoap
        resp = self.coap.request(getattr(aiocoap, method), path, payload, (), cf)
        return _code(resp), bytes(resp.payload), resp.opt.content_format

    def cbor(self, method, path, obj=None, cf=60):
        body = b"" if obj is None else cbor2.dumps(obj)
        code, payload, _cf = self.request(method, path, body, cf if obj is not None else None)
        try:
            return code, cbor2.loads(payload) if payload else None
        except (cbor2.CBORDecodeError, ValueError):
            return code, payload
