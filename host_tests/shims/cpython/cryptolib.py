"""CPython stand-in for MicroPython's `cryptolib` (tests only), backed by
the `cryptography` package. Same constructor and methods as the firmware
sees on the board: aes(key, mode[, iv]) with encrypt/decrypt of whole blocks.
Only ECB (mode 1) and CBC (mode 2) are provided, like the ESP32 build.
"""
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MODE_ECB = 1
MODE_CBC = 2


class aes:
    def __init__(self, key, mode, iv=None):
        if len(key) not in (16, 32):
            raise ValueError("key")
        if mode == MODE_ECB:
            m = modes.ECB()
        elif mode == MODE_CBC:
            m = modes.CBC(bytes(iv))
        else:
            raise ValueError("mode")
        c = Cipher(algorithms.AES(bytes(key)), m)
        self._enc = c.encryptor()
        self._dec = c.decryptor()
        self._used = None

    def _run(self, ctx, which, data, out):
        if self._used not in (None, which):
            raise OSError("cipher in use")
        self._used = which
        data = bytes(data)
        if len(data) % 16:
            raise ValueError("blksize")
        r = ctx.update(data)
        if out is None:
            return r
        out[: len(r)] = r
        return None

    def encrypt(self, data, out=None):
        return self._run(self._enc, "e", data, out)

    def decrypt(self, data, out=None):
        return self._run(self._dec, "d", data, out)
