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


async def serve(sock, server, transport="coap", bufsize=1152):
    """Serve `server` on `sock` (a bound UDP socket) until cancelled. Keep
    `bufsize` at least `server.max_size`.

    Heap: the receive needs bufsize+1 contiguous bytes, which a small,
    fragmented heap (56 KiB on an ESP32) may not have even when enough is
    free in all; a reserve block of that size is kept between datagrams and
    released for the receive when needed, then taken again."""
    sock.setblocking(False)
    sink = bytearray(1)  # discards a datagram without allocating
    reserve = bytearray(bufsize + 1)
    while True:
        yield asyncio.core._io_queue.queue_read(sock)
        data = out = None
        got = False
        try:
            try:
                data, peer = sock.recvfrom(bufsize + 1)
            except MemoryError:
                if reserve is None:
                    raise
                reserve = None  # its block is where the datagram goes
                gc.collect()
                data, peer = sock.recvfrom(bufsize + 1)
            got = True
            out = server.handle(memoryview(data), peer, transport, None, len(data) > bufsize)
            if out is not None:
                sock.sendto(out, peer)
        except OSError as e:
            # A spurious wake-up is not an error; anything else (a send
            # failure, an ICMP error reported on the socket) is counted.
            if not (e.args and e.args[0] == errno.EAGAIN):
                server.report(e)
        except MemoryError as e:
            # Out of heap even so: collect, and if the datagram is still
            # queued (the receive itself failed) drop it into a preallocated
            # byte, so the loop never spins on a datagram it cannot take.
            server.report(e)
            gc.collect()
            if not got:
                try:
                    sock.readinto(sink)
                except OSError:
                    pass
        except Exception as e:
            server.report(e)
        if reserve is None:
            data = out = None
            gc.collect()
            try:
                reserve = bytearray(bufsize + 1)
            except MemoryError:
                pass
