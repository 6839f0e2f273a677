"""End to end: the CoAP server core and coap/udp.py running in a real
MicroPython process (host_tests/apps/coap_demo.py), reached through real UDP
sockets by aiocoap, by libcoap's coap-client-notls and by raw datagrams."""
import asyncio
import os
import select
import shutil
import socket
import subprocess
import time

import pytest

from mp import ESP32_HEAP_BYTES, MPYPATH, ROOT, micropython_exe

DEMO = os.path.join(ROOT, "host_tests", "apps", "coap_demo.py")
HOST = "127.0.0.1"


def _free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo():
    port = _free_udp_port()
    env = dict(os.environ, MICROPYPATH=MPYPATH)
    proc = subprocess.Popen([micropython_exe(), "-X", "heapsize=%d" % ESP32_HEAP_BYTES, DEMO, str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else b""
        assert line.strip() == b"READY", "demo did not start: %r" % (line + proc.stdout.read1(4096),)
        yield port, proc
    finally:
        proc.kill()
        proc.wait()
    out = proc.stdout.read().decode(errors="replace")
    # Only the deliberate /boom handler bug may be reported, and through
    # on_error: nothing may escape as a traceback.
    assert "Traceback" not in out, out
    for line in out.splitlines():
        assert line.startswith("error: RuntimeError"), out


class Raw:
    """A plain UDP socket speaking hand-built CoAP to the demo."""

    def __init__(self, port):
        self.addr = (HOST, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)
        self.mid = 0x5000

    def next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def send(self, data):
        self.sock.sendto(data, self.addr)

    def recv(self):
        data, _ = self.sock.recvfrom(4096)
        return data

    def close(self):
        self.sock.close()


def coap(mtype, code, mid, token=b"", options=(), payload=b""):
    """Tiny independent encoder for the raw tests (options: (number, bytes),
    ascending, deltas and lengths below 13)."""
    out = bytes([0x40 | mtype << 4 | len(token), code, mid >> 8, mid & 0xFF]) + token
    prev = 0
    for num, val in options:
        assert num - prev < 13 and len(val) < 13
        out += bytes([(num - prev) << 4 | len(val)]) + val
        prev = num
    return out + (b"\xff" + payload if payload else b"")


def get_hello(raw):
    mid = raw.next_mid()
    return coap(0, 1, mid, b"\xaa", ((11, b"hello"),)), mid


def check_hello(resp, mid):
    # ACK 2.05, MID, token aa, Content-Format 0, "hello world"
    assert resp == bytes([0x61, 0x45, mid >> 8, mid & 0xFF, 0xAA, 0xC0, 0xFF]) + b"hello world", resp


def counter_value(raw):
    mid = raw.next_mid()
    raw.send(coap(0, 1, mid, b"\x01", ((11, b"counter"),)))
    resp = raw.recv()
    assert resp[1] == 0x45
    return int(resp.split(b"\xff", 1)[1])


def test_aiocoap_client(demo):
    port, _ = demo
    import aiocoap

    async def run():
        ctx = await aiocoap.Context.create_client_context()
        try:
            base = "coap://%s:%d" % (HOST, port)

            async def ask(code, path):
                return await asyncio.wait_for(
                    ctx.request(aiocoap.Message(code=code, uri=base + path)).response, 20)

            r = await ask(aiocoap.GET, "/.well-known/core")
            assert r.code == aiocoap.CONTENT
            assert r.opt.content_format == 40
            assert r.payload == (b'</hello>;rt="demo.hello";ct=0;title="Hello",'
                                 b'</counter>;rt="demo.counter";if="core.p"')
            r = await ask(aiocoap.GET, "/hello")
            assert (r.code, r.payload) == (aiocoap.CONTENT, b"hello world")
            before = int((await ask(aiocoap.GET, "/counter")).payload)
            r = await ask(aiocoap.POST, "/counter")
            assert (r.code, r.payload) == (aiocoap.CHANGED, b"%d" % (before + 1))
            r = await ask(aiocoap.GET, "/nothere")
            assert r.code == aiocoap.NOT_FOUND
            r = await ask(aiocoap.DELETE, "/hello")
            assert r.code == aiocoap.METHOD_NOT_ALLOWED
            r = await ask(aiocoap.GET, "/boom")
            assert r.code == aiocoap.INTERNAL_SERVER_ERROR
        finally:
            await ctx.shutdown()

    asyncio.run(run())


def test_libcoap_client(demo):
    port, _ = demo
    exe = shutil.which("coap-client-notls")
    assert exe, "coap-client-notls missing: apt-get install libcoap3-bin"
    base = "coap://%s:%d" % (HOST, port)

    def run(*args):
        r = subprocess.run([exe, "-B", "10"] + list(args), capture_output=True, timeout=30)
        return r.stdout + r.stderr

    out = run("-m", "get", base + "/.well-known/core")
    assert b'</hello>;rt="demo.hello";ct=0;title="Hello",</counter>' in out, out
    assert run("-m", "get", base + "/hello").strip() == b"hello world"
    before = int(run("-m", "get", base + "/counter"))
    assert int(run("-m", "post", base + "/counter")) == before + 1
    # Non-confirmable request: answered NON.
    assert run("-N", "-m", "get", base + "/hello").strip() == b"hello world"
    out = run("-m", "get", base + "/nothere")
    assert b"4.04" in out, out
    out = run("-m", "put", base + "/hello")
    assert b"4.05" in out, out


RST = "rst"
# (name, datagram, expected answer): None = no answer, RST = Reset with the
# datagram's MID, an int = piggybacked response with that code.
# RFC 7252 sec. 3 message format errors, sec. 4.1-4.3 rejection rules, and
# the shapes behind published CoAP parser bugs (option length/delta
# arithmetic that overflows or reads past the end, e.g. Zephyr's
# CVE-2020-10063; token length out of range; marker at the end).
MALFORMED = [
    ("zero-length datagram", b"", None),
    ("1 byte", b"\x40", None),
    ("truncated header, 3 bytes", b"\x40\x01\x12", None),
    ("version 0", b"\x00\x01\x12\x34", None),
    ("version 2", b"\x80\x01\x12\x34", None),
    ("version 3 garbage", b"\xde\xad\xbe\xef" * 8, None),
] + [
    ("TKL %d" % tkl, bytes([0x40 | tkl, 1, 0x12, 0x34]) + bytes(15), RST) for tkl in range(9, 16)
] + [
    ("token shorter than TKL", b"\x48\x01\x12\x34\x01\x02", RST),
    ("option delta 15", b"\x40\x01\x12\x34\xf0", RST),
    ("option delta 15 length 1", b"\x40\x01\x12\x34\xf1\x00", RST),
    ("option length 15", b"\x40\x01\x12\x34\xbf" + b"a" * 20, RST),
    ("extended delta 13 missing", b"\x40\x01\x12\x34\xd0", RST),
    ("extended delta 14 half missing", b"\x40\x01\x12\x34\xe0\x01", RST),
    ("extended length 14 half missing", b"\x40\x01\x12\x34\xbe\x00", RST),
    ("extended length beyond the end", b"\x40\x01\x12\x34\xbe\x00\x10" + b"a" * 40, RST),
    ("huge option length 65804", b"\x40\x01\x12\x34\xbe\xff\xff" + b"a" * 8, RST),
    ("option number above 65535", b"\x40\x01\x12\x34\xe0\xff\xff", RST),
    ("option number overflow by accumulation", b"\x40\x01\x12\x34\xe0\xfc\xdc\xe0\x03\x00", RST),
    ("payload marker without payload", b"\x40\x01\x12\x34\xb5hello\xff", RST),
    ("empty CON with token", b"\x41\x00\x12\x34\xaa", RST),
    ("empty CON with trailing byte", b"\x40\x00\x12\x34\x00", RST),
    ("empty CON (ping)", b"\x40\x00\x12\x34", RST),
    ("many options (200 empty Uri-Path)", b"\x40\x01\x12\x34\xb0" + bytes(199), RST),
    ("response code in a CON", b"\x40\x45\x12\x34\xff\x31", RST),
    ("reserved code class 7 in a CON", b"\x40\xe0\x12\x34", RST),
    ("garbage with TKL 15 header", b"\x4f" + bytes(range(1, 60)), RST),
    ("empty NON with token", b"\x51\x00\x12\x34\xaa", None),
    ("NON with option delta 15", b"\x50\x01\x12\x34\xf0", None),
    ("ACK with length 15", b"\x60\x45\x12\x34\x0f", None),
    ("RST with a payload", b"\x70\x00\x12\x34\xff\x01", None),
    ("stray ACK response", b"\x60\x45\x12\x34\xff\x31", None),
    ("oversize 1500-byte garbage", b"\xff" * 1500, None),
    ("the demo server raises: udp.serve must go on", b"raise", None),
    ("oversize 1500-byte CON POST", b"\x40\x02\x12\x34\xb7counter\xff" + b"x" * 1488, 0x8D),
    ("Uri-Path not UTF-8", b"\x40\x01\x12\x34\xb2\xc0\xaf", 0x80),
    ("unknown critical option 9", b"\x40\x01\x12\x34\x91\x00", 0x82),
    ("Block1 not supported", b"\x40\x02\x12\x34\xb7counter\xd1\x03\x06\xff\x01", 0x82),
    ("Proxy-Uri", b"\x40\x01\x12\x34\xd1\x16x", 0xA5),
    ("60 empty Uri-Path options, well-formed", b"\x40\x01\x12\x34\xb0" + bytes(59), 0x84),
]


def test_malformed_datagrams_never_stop_the_server(demo):
    port, proc = demo
    raw = Raw(port)
    try:
        before = counter_value(raw)
        assert len(MALFORMED) >= 20
        for name, data, expected in MALFORMED:
            # Each row uses a fresh MID so deduplication never hides it.
            if len(data) >= 4 and data[0] >> 6 == 1:
                mid = raw.next_mid()
                data = data[:2] + bytes([mid >> 8, mid & 0xFF]) + data[4:]
            raw.send(data)
            good, good_mid = get_hello(raw)
            raw.send(good)
            first = raw.recv()
            # The server works in order: an answer to the bad datagram, if
            # any, arrives before the answer to the good one.
            if expected is None:
                check_hello(first, good_mid)
                continue
            assert first[2:4] == data[2:4], (name, first)
            if expected == RST:
                assert first == b"\x70\x00" + data[2:4], (name, first)
            else:
                assert first[0] >> 4 == 0x6 and first[1] == expected, (name, first)
            check_hello(raw.recv(), good_mid)
        assert proc.poll() is None
        assert counter_value(raw) == before  # the oversize POST did not count
    finally:
        raw.close()


def test_duplicate_con_identical_bytes_door_moves_once(demo):
    port, _ = demo
    raw = Raw(port)
    try:
        before = counter_value(raw)
        mid = raw.next_mid()
        post = coap(0, 2, mid, b"\x31\x32", ((11, b"counter"),))
        answers = []
        for i in range(3):
            raw.send(post)
            answers.append(raw.recv())
            time.sleep(0.05)
        assert answers[0] == answers[1] == answers[2]
        assert answers[0] == bytes([0x62, 0x44, mid >> 8, mid & 0xFF, 0x31, 0x32, 0xC0, 0xFF]) \
            + b"%d" % (before + 1)
        assert counter_value(raw) == before + 1
        # A NON duplicate is dropped: one answer, one count.
        mid = raw.next_mid()
        post = coap(1, 2, mid, b"\x33", ((11, b"counter"),))
        raw.send(post)
        raw.send(post)
        first = raw.recv()
        assert first[0] == 0x51 and first[1] == 0x44
        assert counter_value(raw) == before + 2
    finally:
        raw.close()
