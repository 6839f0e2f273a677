"""Host-side COSE/CWT building blocks (the AS and the phone), on cbor2 and
cryptography. Used by the `lockctl token` and `lockctl coap` commands and by
the tests to craft tokens, including deliberately defective ones."""
import hashlib
import os

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

ALG_ES256 = -7
ALG_AES_CCM_16_64_128 = 10
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def gen_key():
    return ec.generate_private_key(ec.SECP256R1())


def pub_bytes(key):
    """65-byte SEC1 uncompressed public point of a private or public key."""
    pub = key.public_key() if hasattr(key, "public_key") else key
    return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def key_to_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def key_from_pem(data):
    return serialization.load_pem_private_key(data, None)


def sign_es256(key, msg):
    """ES256 signature as the 64-byte r||s COSE wants (RFC 9053 2.1)."""
    r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def enc(v):
    return cbor2.dumps(v, canonical=True)


def cose_key_ec2(key):
    p = pub_bytes(key)
    return {1: 2, -1: 1, -2: p[1:33], -3: p[33:]}


def make_sign1(claims, key, kid=None, protected=None, unprotected=None, tag=18,
               payload=None, signature=None, protected_raw=None):
    """A COSE_Sign1 CWT. `claims` is a dict (encoded deterministically) unless
    `payload` gives the exact bytes. Defaults: protected {alg: ES256},
    unprotected {kid}. Any part can be overridden to craft defects."""
    if protected is None:
        protected = {1: ALG_ES256}
    prot = protected_raw if protected_raw is not None else (enc(protected) if protected else b"")
    if unprotected is None:
        unprotected = {4: kid} if kid is not None else {}
    body = payload if payload is not None else enc(claims)
    tbs = enc(["Signature1", prot, b"", body])
    sig = signature if signature is not None else sign_es256(key, tbs)
    msg = [prot, unprotected, body, sig]
    if tag == 18:
        return enc(cbor2.CBORTag(18, msg))
    if tag == 61:
        return enc(cbor2.CBORTag(61, cbor2.CBORTag(18, msg)))
    if tag is None:
        return enc(msg)
    return enc(cbor2.CBORTag(tag, msg))


def encrypt0_key(as_lock_key, kid, secret, iv=None):
    """cnf {2: COSE_Encrypt0} wrapping a symmetric COSE_Key (RFC 9202 3.3),
    AES-CCM-16-64-128 under the AS-to-lock key."""
    iv = iv or os.urandom(13)
    prot = enc({1: ALG_AES_CCM_16_64_128})
    plain = enc({1: 4, 2: kid, -1: secret})
    aad = enc(["Encrypt0", prot, b""])
    ct = AESCCM(as_lock_key, tag_length=8).encrypt(iv, plain, aad)
    return [prot, {5: iv}, ct]


def token_id(token):
    """PROFILE sec. 2 (v2): SHA-256 over the deterministic CBOR encoding of
    the COSE Sig_structure ["Signature1", protected, h'', payload] of a
    COSE_Sign1 token (tag 18, 61(18) or untagged): what the AS signed, the
    same for every envelope of it. Raises ValueError for anything else."""
    obj = cbor2.loads(token)
    if isinstance(obj, cbor2.CBORTag) and obj.tag == 61:
        obj = obj.value
    if isinstance(obj, cbor2.CBORTag):
        if obj.tag != 18:
            raise ValueError("not a COSE_Sign1 (tag %d)" % obj.tag)
        obj = obj.value
    if not (isinstance(obj, list) and len(obj) == 4 and isinstance(obj[0], bytes) and isinstance(obj[2], bytes)):
        raise ValueError("not a COSE_Sign1")
    return hashlib.sha256(enc(["Signature1", obj[0], b"", obj[2]])).digest()



def pop_challenge(device_id, nonce, permission, thash):
    return enc(["lock-pop-v1", device_id, nonce, permission, thash])


def pop_proof(client_key, device_id, nonce, permission, thash):
    """CBOR [nonce, signature] for the PoP option (PROFILE sec. 3)."""
    sig = sign_es256(client_key, pop_challenge(device_id, nonce, permission, thash))
    return enc([nonce, sig])


def seq_cti(n):
    """The cti of an exi token: its sequence number n, big-endian, minimal
    (no leading zero byte), 1-8 bytes (PROFILE sec. 2; RFC 9200 5.10.3)."""
    if not 0 <= n < 1 << 64:
        raise ValueError("an exi sequence number is 0 to 2**64-1")
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
