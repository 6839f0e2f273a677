"""The simulator's interpreter (build/mp/micropython) is shaped like the board.

Every check runs in that interpreter, as a separate process, and can fail: a
64-bit, double-precision unix build fails 1, 2 and 6, one built for x87
arithmetic fails 2, one without the variant's mbedTLS options fails 4, a
manifest that misses a firmware module fails 5. The
ESP32 facts are those of MicroPython's ports/esp32 (mpconfigport.h) at the
pinned commit 1c3c201149:

1. 32-bit machine word: sys.maxsize is 2**31-1 and the ticks period is 2**30
   (MICROPY_PY_TIME_TICKS_PERIOD, the small-int range of a 32-bit word), so
   ticks wrap where they wrap on the board.
2. Single-precision floats (MICROPY_FLOAT_IMPL_FLOAT), rounded to nearest
   after each operation as the ESP32's FPU does (SSE here, not x87 extended
   precision): a Unix time becomes a float32 (float(1787063769) is
   1787063808.0), and results equal CPython's float32 emulation through
   struct, bit for bit, including complex division (py/objcomplex.c), where
   x87 keeps intermediates in extended precision and differs.
3. Bluetooth: the `bluetooth` module with BLE (NimBLE, as on the ESP32). It
   is not activated: there is no controller here.
4. DTLS 1.2 server with a PSK and the CCM-8 suites (ESP-IDF's mbedTLS offers
   them; CoAPS mandates TLS_PSK_WITH_AES_128_CCM_8, RFC 7252 9.1.3.1), in the
   `tls` module, against python-mbedtls as the client: HelloVerifyRequest
   cookie exchange, one message each way, the negotiated suite; a wrong key
   or identity fails; an ECDHE-PSK suite negotiates; one UDP socket serves
   two clients at once (per-peer streams, see DTLS_SERVER).
5. The firmware (every module under firmware/), asyncio and blockdev are
   frozen into the interpreter, as the board carries them in flash: imported
   with firmware/ on MICROPYPATH after .frozen, each module still comes from
   the frozen set.
6. The GC heap the simulator is started with (ESP32_HEAP_BYTES, the
   MICROPY_GC_INITIAL_HEAP_SIZE of 56 * 1024 bytes) is what py/gc.c makes
   of it with a 32-bit word, as on the board: gc.mem_free() + gc.mem_alloc()
   is 56000 (the block tables take the rest; a 64-bit build gets 56576).
"""
import os
import select
import socket
import struct
import subprocess

from mbedtls import tls as mbedtls_tls
from mbedtls.exceptions import TLSError

from mp import BOARD_UNIX, ESP32_HEAP_BYTES, FIRMWARE, ROOT, micropython_exe, run_mp

HOST = "127.0.0.1"


def _mp(code, heapsize=ESP32_HEAP_BYTES, mpypath=None, args=()):
    """Run `code` in the simulator's interpreter; its stdout lines."""
    r = run_mp(["-c", code] + list(args), heapsize=heapsize, timeout=30, mpypath=mpypath)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.splitlines()


# 1. Word size and ticks.

def test_32bit_word_and_esp32_ticks_period():
    out = _mp("import sys, time\n"
              "print(sys.maxsize)\n"
              "print(time.ticks_add(0, -1))\n"
              "print(time.ticks_add(2**30 - 1, 1))\n"
              "print(time.ticks_diff(0, 2**30 - 1))\n")
    assert out == [str(2**31 - 1), str(2**30 - 1), "0", "1"]


# 2. Floats.

def _f32(x):
    """x rounded to the nearest IEEE single (ties to even)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _bits(x):
    """The exact value of a float, as the hex of its IEEE double."""
    return struct.pack("<d", x).hex()


def _cdiv_f32(a, b, c, d):
    """(a+bj)/(c+dj) as py/objcomplex.c computes it, each operation rounded
    to single precision."""
    n = _f32(_f32(c * c) + _f32(d * d))
    c, d = _f32(c / n), _f32(d / -n)
    return _f32(_f32(a * c) - _f32(b * d)), _f32(_f32(a * d) + _f32(b * c))


# (expression run in MicroPython, its value computed in single precision)
FLOAT_CASES = [
    ("float(1787063769)", _f32(1787063769.0)),
    ("float(2**24 + 1)", _f32(2.0**24 + 1)),  # tie: to even, down
    ("float(2**24 + 3)", _f32(2.0**24 + 3)),  # tie: to even, up
    ("1787063769 / 1000", _f32(_f32(1787063769.0) / 1000)),
    ("1 / 3", _f32(1 / 3)),
    ("1 / 10 + 2 / 10", _f32(_f32(1 / 10) + _f32(2 / 10))),
    ("0.1 + 0.2", _f32(_f32(0.1) + _f32(0.2))),
    ("1e10 + 1", _f32(_f32(1e10) + 1)),
    ("2 / 3 * 3", _f32(_f32(2 / 3) * 3)),
]


def test_float32_round_to_nearest():
    # A double-precision build fails every line. One operation rounds alike
    # with SSE and x87 (rounding the extended result to single again is
    # harmless for + - * /); the next test tells them apart.
    assert _f32(1787063769.0) == 1787063808.0  # the CPython side of the check
    code = ["import struct", "def h(x): print(struct.pack('<d', x).hex())"]
    code += ["h(%s)" % expr for expr, _ in FLOAT_CASES]
    code += ["print(int(float(1787063769)), 1e10 + 1 == 1e10, 16777216.0 + 1 == 16777216.0)"]
    out = _mp("\n".join(code))
    assert out[-1] == "1787063808 True True"
    got = dict(zip([expr for expr, _ in FLOAT_CASES], out))
    assert got == {expr: _bits(value) for expr, value in FLOAT_CASES}


def test_float32_complex_division_rounds_each_operation():
    # x87 code keeps the intermediates of this formula in 64-bit mantissas
    # and differs from these values in many of the cases.
    cases = [(a, b, c, d) for a in range(1, 8) for b in (1, 2) for c in (1, 3) for d in range(1, 8)]
    code = ("import struct\n"
            "for a, b, c, d in %r:\n"
            "    z = complex(a / 10, b) / complex(c, d / 10)\n"
            "    print(struct.pack('<d', z.real).hex(), struct.pack('<d', z.imag).hex())\n" % cases)
    out = _mp(code)
    want = []
    for a, b, c, d in cases:
        re, im = _cdiv_f32(_f32(a / 10), float(b), float(c), _f32(d / 10))
        want.append("%s %s" % (_bits(re), _bits(im)))
    assert out == want


# 3. Bluetooth.

def test_bluetooth_ble_present():
    out = _mp("import bluetooth\nprint(hasattr(bluetooth, 'BLE'), type(bluetooth.BLE).__name__)")
    assert out == ["True type"]


# 4. DTLS with a PSK.

PSK_IDENTITY = "phone-1"
PSK = bytes(range(0x40, 0x50))
CCM_8 = "TLS-PSK-WITH-AES-128-CCM-8"
ECDHE_PSK = "TLS-ECDHE-PSK-WITH-AES-128-CBC-SHA256"

# A DTLS server on one UDP socket. mbedTLS reads and writes a stream; each
# client address gets its own (Peer), fed with the datagrams the loop receives
# from that address, so one socket serves any number of clients. The first
# ClientHello of a client is answered with a HelloVerifyRequest (a cookie bound
# to client_id) and raises OSError(MBEDTLS_ERR_SSL_HELLO_VERIFY_REQUIRED):
# the wrapper is dropped and a new one takes the ClientHello that carries the
# cookie. argv: port, PSK (hex), number of sessions to see through (an echo or
# a failed handshake each).
DTLS_SERVER = r'''
import gc, io, socket, sys, tls

HELLO_VERIFY_REQUIRED = -0x6A80


class Peer(io.IOBase):
    def __init__(self, sock, addr):
        self.sock, self.addr, self.inbox, self.tls = sock, addr, [], None

    def readinto(self, buf):
        if not self.inbox:
            return None  # EAGAIN: mbedTLS wants more
        d = self.inbox.pop(0)
        n = min(len(d), len(buf))
        buf[:n] = d[:n]
        return n

    def write(self, buf):
        return self.sock.sendto(buf, self.addr)

    def ioctl(self, req, arg):
        return 0


port, key, sessions = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    sock.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
except OSError as e:
    print("BIND-FAILED", e)
    sys.exit(1)
sock.settimeout(10)
ctx = tls.SSLContext(tls.PROTOCOL_DTLS_SERVER)
ctx.server_psk_keys = {b"phone-1": key}
print("READY", " ".join(ctx.get_ciphers()))
peers = {}
while sessions:
    data, addr = sock.recvfrom(1500)
    peer = peers.get(addr)
    if peer is None:
        peer = peers[addr] = Peer(sock, addr)
    peer.inbox.append(data)
    if peer.tls is None:
        peer.tls = ctx.wrap_socket(peer, server_side=True, do_handshake_on_connect=False,
                                   client_id=addr if isinstance(addr, bytes) else repr(addr).encode())
    try:
        msg = peer.tls.recv(1024)  # runs the handshake on; None: wants more
    except OSError as e:
        peer.tls = None
        if e.args[0] == HELLO_VERIFY_REQUIRED:
            print("VERIFY")
            continue
        print("FAIL", e.args[0])
        del peers[addr]
        sessions -= 1
        continue
    if msg:
        peer.tls.send(b"echo:" + msg)
        gc.collect()
        print("DATA", " ".join(peer.tls.cipher()), msg.decode(), gc.mem_free())
        sessions -= 1
print("DONE")
'''

MBEDTLS_ERR_SSL_INVALID_MAC = -0x7180
MBEDTLS_ERR_SSL_UNKNOWN_IDENTITY = -0x6C80


class DtlsServer:
    """DTLS_SERVER in the simulator's interpreter on the ESP32 heap, on a free
    UDP port of 127.0.0.1."""

    def __init__(self, tmp_path, sessions, key=PSK):
        script = tmp_path / "dtls_server.py"
        script.write_text(DTLS_SERVER)
        env = dict(os.environ, MICROPYPATH=".frozen")
        for _ in range(5):
            self.port = _free_udp_port()
            self.proc = subprocess.Popen(
                [micropython_exe(), "-X", "heapsize=%d" % ESP32_HEAP_BYTES, str(script),
                 str(self.port), key.hex(), str(sessions)],
                env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            ready, _, _ = select.select([self.proc.stdout], [], [], 10)
            line = self.proc.stdout.readline().decode() if ready else ""
            if line.startswith("READY "):
                self.ciphers = line.split()[1:]
                return
            self.close()
            assert line.startswith("BIND-FAILED"), "DTLS server did not start: %r" % line
        raise AssertionError("no free UDP port for the DTLS server")

    def output(self, timeout=10):
        """The server's remaining output once it has exited."""
        self.proc.wait(timeout=timeout)
        return self.proc.stdout.read().decode().splitlines()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def _free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _dtls_client(port, suite, key=PSK, identity=PSK_IDENTITY, timeout=5.0):
    """A python-mbedtls DTLS 1.2 client offering only `suite`, handshake done."""
    conf = mbedtls_tls.DTLSConfiguration(
        pre_shared_key=(identity, key), ciphers=[suite], validate_certificates=False,
        lowest_supported_version=mbedtls_tls.DTLSVersion.DTLSv1_2)
    sock = mbedtls_tls.ClientContext(conf).wrap_socket(
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM), server_hostname=None)
    try:
        sock.settimeout(timeout)
        sock.connect((HOST, port))
        sock.do_handshake()
    except BaseException:
        sock.close()
        raise
    return sock


def _echo(sock, msg):
    sock.send(msg)
    return sock.recv(1024)


def test_dtls_psk_ccm8(tmp_path):
    server = DtlsServer(tmp_path, sessions=1)
    try:
        # get_ciphers() lists the suites compiled into mbedTLS (not those
        # the context restricts itself to once it has PSKs).
        assert CCM_8 in server.ciphers and ECDHE_PSK in server.ciphers, server.ciphers
        with _dtls_client(server.port, CCM_8) as client:
            assert client.cipher() == CCM_8
            assert client.negotiated_tls_version() is mbedtls_tls.DTLSVersion.DTLSv1_2
            assert _echo(client, b"hello lock") == b"echo:hello lock"
        out = server.output()
    finally:
        server.close()
    assert out[0] == "VERIFY", out
    assert out[1].startswith("DATA %s DTLSv1.2 hello lock " % CCM_8), out
    assert out[2:] == ["DONE"], out


def test_dtls_wrong_psk_or_identity_fails(tmp_path):
    server = DtlsServer(tmp_path, sessions=2)
    try:
        # Wrong key: the server rejects the client's Finished (bad record MAC);
        # the MicroPython build sends no alert for it (no
        # MBEDTLS_SSL_ALL_ALERT_MESSAGES), so the client times out.
        try:
            _dtls_client(server.port, CCM_8, key=bytes(16), timeout=2.0).close()
        except (TLSError, OSError):
            pass
        else:
            raise AssertionError("handshake with a wrong PSK succeeded")
        # Unknown identity: the server answers with a fatal alert.
        try:
            _dtls_client(server.port, CCM_8, identity="phone-2").close()
        except TLSError as e:
            assert "alert" in str(e), e
        else:
            raise AssertionError("handshake with an unknown identity succeeded")
        out = server.output()
    finally:
        server.close()
    assert out == ["VERIFY", "FAIL %d" % MBEDTLS_ERR_SSL_INVALID_MAC,
                   "VERIFY", "FAIL %d" % MBEDTLS_ERR_SSL_UNKNOWN_IDENTITY, "DONE"]


def test_dtls_two_clients_one_socket_and_ecdhe_psk(tmp_path):
    server = DtlsServer(tmp_path, sessions=2)
    try:
        with _dtls_client(server.port, CCM_8) as a, _dtls_client(server.port, ECDHE_PSK) as b:
            # Both handshakes are done before either sends: the server holds two sessions.
            assert (a.cipher(), b.cipher()) == (CCM_8, ECDHE_PSK)
            assert _echo(b, b"from b") == b"echo:from b"
            assert _echo(a, b"from a") == b"echo:from a"
        out = server.output()
    finally:
        server.close()
    assert out[:2] == ["VERIFY", "VERIFY"], out
    assert out[2].startswith("DATA %s DTLSv1.2 from b " % ECDHE_PSK), out
    assert out[3].startswith("DATA %s DTLSv1.2 from a " % CCM_8), out
    assert out[4:] == ["DONE"], out


# 5. Frozen firmware.

def _firmware_modules():
    """{module name: its path under firmware/} for every .py there, e.g.
    {'trust': 'trust/__init__.py', 'trust.p256': 'trust/p256.py', ...}."""
    modules = {}
    for dirpath, dirnames, files in os.walk(FIRMWARE):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), FIRMWARE).replace(os.sep, "/")
                parts = rel[:-3].split("/")
                modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = rel
    return modules


IMPORT_ALL = """
import sys
for name in sys.argv[1:]:
    __import__(name)
    print(name, sys.modules[name].__file__)
"""


def test_firmware_is_frozen():
    firmware = _firmware_modules()
    assert {"trust", "trust.p256", "coap.server", "lock.app"} <= set(firmware), firmware
    # A module loaded from a directory on MICROPYPATH reports that directory's
    # path; a frozen one reports its path inside the frozen set, relative.
    control = _mp(IMPORT_ALL, mpypath=FIRMWARE, args=["trust.cbor"])
    assert control == ["trust.cbor %s" % os.path.join(FIRMWARE, "trust", "cbor.py")]
    # The same sources are on the path here, after .frozen (and blockdev.py
    # after it in boards/unix): every module must still come frozen.
    want = dict(firmware, asyncio="asyncio/__init__.py", blockdev="blockdev.py")
    out = _mp(IMPORT_ALL, mpypath=":".join([".frozen", FIRMWARE, BOARD_UNIX]), args=sorted(want))
    assert dict(line.split(" ", 1) for line in out) == want


# 6. The heap.

def test_esp32_initial_heap():
    assert ESP32_HEAP_BYTES == 56 * 1024
    out = _mp("import gc\nprint(gc.mem_free() + gc.mem_alloc())")
    assert out == ["56000"]
