"""Trust core / crypto: AES-CCM decryption (RFC 3610) on cryptolib's AES-ECB.

Used for COSE algorithm 10, AES-CCM-16-64-128 (RFC 9053 4.2): 128-bit key,
L = 2 (13-byte nonce), M = 8 (64-bit tag). Only ECB is required of
cryptolib, which every MicroPython port with cryptolib provides.
"""
import cryptolib

_ECB = 1


class CCMError(ValueError):
    pass


def ct_equal(a, b):
    """Constant-time comparison of two byte strings (STYLE 7)."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def _xor_into(dst, src, n):
    for i in range(n):
        dst[i] ^= src[i]


def _mac(aes, nonce, aad, msg, tag_len, L):
    # RFC 3610 2.2: B_0 = flags | nonce | l(m); then l(a) | a, then m, zero-padded.
    blk = bytearray(16)
    blk[0] = (0x40 if aad else 0) | (((tag_len - 2) // 2) << 3) | (L - 1)
    blk[1:1 + len(nonce)] = nonce
    mlen = len(msg)
    for i in range(L):
        blk[15 - i] = (mlen >> (8 * i)) & 0xFF
    x = bytearray(aes.encrypt(blk))
    data = bytearray()
    if aad:
        alen = len(aad)
        if alen >= 0xFF00:
            raise CCMError("aad too long")
        data.append(alen >> 8)
        data.append(alen & 0xFF)
        data.extend(aad)
        if len(data) % 16:
            data.extend(bytes(16 - len(data) % 16))
    data.extend(msg)
    if len(data) % 16:
        data.extend(bytes(16 - len(data) % 16))
    for off in range(0, len(data), 16):
        _xor_into(x, memoryview(data)[off:off + 16], 16)
        x = bytearray(aes.encrypt(x))
    return x[:tag_len]


def _ctr_block(nonce, i, L):
    a = bytearray(16)
    a[0] = L - 1
    a[1:1 + len(nonce)] = nonce
    for j in range(L):
        a[15 - j] = (i >> (8 * j)) & 0xFF
    return a


def decrypt(key, nonce, ciphertext, aad=b"", tag_len=8):
    """Return the plaintext of `ciphertext` (message || tag) or raise CCMError
    if the tag does not verify. Nothing unauthenticated is returned."""
    L = 15 - len(nonce)
    if len(key) != 16 or L < 2 or L > 8 or tag_len not in (4, 6, 8, 10, 12, 14, 16):
        raise CCMError("parameters")
    if len(ciphertext) < tag_len:
        raise CCMError("too short")
    aes = cryptolib.aes(bytes(key), _ECB)
    clen = len(ciphertext) - tag_len
    msg = bytearray(ciphertext[:clen])
    for off in range(0, clen, 16):
        ks = aes.encrypt(_ctr_block(nonce, off // 16 + 1, L))
        n = min(16, clen - off)
        for i in range(n):
            msg[off + i] ^= ks[i]
    s0 = aes.encrypt(_ctr_block(nonce, 0, L))
    tag = bytearray(ciphertext[clen:])
    _xor_into(tag, s0, tag_len)
    if not ct_equal(tag, _mac(aes, nonce, aad, msg, tag_len, L)):
        raise CCMError("authentication failed")
    return bytes(msg)
