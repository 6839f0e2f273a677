"""Transport: CoAP over UDP (RFC 7252 sec. 3) on MicroPython asyncio.

The socket is created, bound and owned by the caller; this module only
reads datagrams, hands them to a `CoapServer` and sends back what it
returns. Nothing a datagram does can stop the loop: every exception is
counted on the server (`server.errors`, `server.on_error`) and the loop
goes on.

Receive path, as found on MicroPython 1.29 (unix port; the ESP32 and lwIP
ports have the same socket methods): there is `recvfrom(n)` but no
`recvfrom_into`, and `readinto` fills a buffer but loses the sender's
address, which an unconnected UDP socket needs. `recvfrom(n)` allocates one
bytes object of the datagram's size (the unix port frees its temporary
n-byte block, the ESP32 port shrinks it in place) and the address; that is
the least allocating choice available, and the server reads the bytes
through a memoryview without copying them again. One byte more than
`bufsize` is asked for, so a datagram that did not fit is flagged as
truncated (the server answers 4.13 or drops it) instead of being parsed cut.

MicroPython only: `serve` waits with `yield` on asyncio's I/O queue, as
MicroPython's asyncio/stream.py does, so waiting allocates nothing.
"""
import asyncio
import errno
import gc

from micropython import const

_MAX_RX_FAILS = const(3)
_SMALL_RX = const(256)


async def serve(sock, server, transport="coap", bufsize=1152):
    """Serve `server` on `sock` (a bound UDP socket) until cancelled. Keep
    `bufsize` at least `server.max_size`.

    Heap: a receive allocates bufsize+1 bytes and then, while that block is
    still held, the copy of the datagram: two contiguous blocks, which a
    small, fragmented heap (56 KiB on an ESP32) may not have even when
    enough is free in all. Two reserve blocks of bufsize+1 bytes are kept
    between datagrams, one for each (2.3 KB of the heap, the price of never
    losing a large datagram to a failed copy); a receive that fails releases
    them and is tried again; the first is taken back right after the receive
    (before handling can fill its hole), the second once the request is done. Failing that,
    the datagram is taken in _SMALL_RX bytes (a larger one is answered
    4.13). A datagram that still cannot be received is retried on the next
    wake-up; after _MAX_RX_FAILS in a row one is dropped into a preallocated
    byte, so the loop never spins."""
    sock.setblocking(False)
    sink = bytearray(1)
    n = bufsize + 1
    # Taken like any later reserve: a heap with no such block now (say,
    # fragmented by a boot that verified stored tokens) starts without them
    # and the loop takes them when it can.
    gc.collect()
    rx_reserve = _take(n)
    copy_reserve = _take(n)
    fails = 0
    while True:
        yield asyncio.core._io_queue.queue_read(sock)
        data = out = None
        got = False
        limit = bufsize
        try:
            try:
                data, peer = sock.recvfrom(n)
            except MemoryError:
                rx_reserve = copy_reserve = None
                gc.collect()
                try:
                    data, peer = sock.recvfrom(n)
                except MemoryError:
                    # Still no room: take it in a small buffer, so small
                    # requests (proofs, token ids, the server's own expiry
                    # of old exchanges) go on; a larger one is cut and
                    # answered 4.13 rather than parsed.
                    data, peer = sock.recvfrom(_SMALL_RX)
                    if len(data) >= _SMALL_RX:
                        limit = _SMALL_RX - 1
                rx_reserve = _take(n)
            got = True
            fails = 0
            out = server.handle(memoryview(data), peer, transport, None, len(data) > limit)
            if out is not None:
                sock.sendto(out, peer)
        except OSError as e:
            # A spurious wake-up is not an error; anything else (a send
            # failure, an ICMP error reported on the socket) is counted.
            if not (e.args and e.args[0] == errno.EAGAIN):
                server.report(e)
        except MemoryError as e:
            # Out of heap even so. Whether the datagram is still queued
            # cannot be told (the copy may fail after the read), so it is
            # retried, and only a run of failures drops one.
            server.report(e)
            if not got:
                fails += 1
                if fails >= _MAX_RX_FAILS:
                    fails = 0
                    try:
                        sock.readinto(sink)
                    except OSError:
                        pass
        except Exception as e:
            server.report(e)
        if rx_reserve is None or copy_reserve is None:
            data = out = None
            gc.collect()
            if rx_reserve is None:
                rx_reserve = _take(n)
            if copy_reserve is None:
                copy_reserve = _take(n)


def bound(host, port):
    """A board's UDP socket: non-blocking, bound to (host, port). A port
    that cannot be bound is fatal (said, exit status 3). No SO_REUSEADDR:
    UDP has no TIME_WAIT to wait out, and with it a second lock on the same
    port would start silently and miss traffic. (Frozen here rather than in
    the board's main script, whose bytecode would take GC heap.)"""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(socket.getaddrinfo(host, port)[0][-1])
    except OSError as e:
        print("FATAL: cannot bind %s:%d (%s): another lock on this port? use --port" % (host, port, e))
        import sys
        sys.exit(3)
    s.setblocking(False)
    return s


def _take(size):
    try:
        return bytearray(size)
    except MemoryError:
        return None
