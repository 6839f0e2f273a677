"""Persistence of the lock's security state across reboots: stored tokens,
revocation lists and the exi first-receipt table (RFC 9200 5.10.3).

One CBOR file replaced atomically (write a temporary file, then rename,
which littlefs commits atomically), followed by the CRC-32 of the CBOR
(version 2; a version-1 file, without CRC, is still read). The file is
written as it is encoded, through a 128-byte buffer: on the ESP32's small,
fragmented heap a state of a few KB must not need one contiguous block.
A missing or unreadable file means an empty state; an unreadable one is kept
aside for inspection.
"""
import os
import struct
from binascii import crc32

from micropython import const

from trust import cbor

_VERSION = const(2)
_CHUNK = const(128)


class _Writer:
    """The append/extend of a bytearray (what cbor.encode_into uses), onto a
    file through one small buffer, with a running CRC-32."""

    def __init__(self, f):
        self.f = f
        self.buf = bytearray(_CHUNK)
        self.n = 0
        self.crc = 0

    def append(self, byte):
        if self.n == _CHUNK:
            self.flush()
        self.buf[self.n] = byte
        self.n += 1

    def extend(self, data):
        mv = memoryview(data)
        i = 0
        while i < len(mv):
            if self.n == _CHUNK:
                self.flush()
            k = min(_CHUNK - self.n, len(mv) - i)
            self.buf[self.n:self.n + k] = mv[i:i + k]
            self.n += k
            i += k

    def flush(self):
        part = memoryview(self.buf)[:self.n]
        self.crc = crc32(part, self.crc)
        self.f.write(part)
        self.n = 0


class StateFile:
    def __init__(self, path):
        self.path = path

    def load(self):
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except OSError:
            return None
        try:
            st = None
            if len(raw) > 4 and struct.unpack(">I", raw[-4:])[0] == crc32(memoryview(raw)[:-4]):
                st = cbor.decode(memoryview(raw)[:-4], 6, 65536)
            if not isinstance(st, dict) or st.get("v") != _VERSION:
                st = cbor.decode(raw, 6, 65536)  # version 1: no CRC
                if not isinstance(st, dict) or st.get("v") != 1:
                    raise ValueError("version")
            return st
        except ValueError:
            try:
                os.rename(self.path, self.path + ".bad")
            except OSError:
                pass
            return None

    def save(self, st):
        st["v"] = _VERSION
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            w = _Writer(f)
            cbor.encode_into(st, w)
            w.flush()
            f.write(struct.pack(">I", w.crc))
        os.rename(tmp, self.path)


def snapshot(verifier, store):
    return {
        "tokens": [t.raw for t in store.tokens],
        "rh": sorted(verifier.revoked_hashes),
        "rc": sorted(verifier.revoked_ctis),
        "exi": verifier.exi.to_list(),
    }


def restore(st, verifier):
    """Revocations and exi first; the stored tokens are returned raw so the
    caller re-verifies each (keys may have changed since they were stored)."""
    if not st:
        return []
    for h in st.get("rh", ()):
        verifier.revoked_hashes.add(h)
    for c in st.get("rc", ()):
        verifier.revoked_ctis.add(c)
    verifier.exi.load(st.get("exi", ()))
    return list(st.get("tokens", ()))
