"""Transport: CoAP over UDP (RFC 7252 sec. 3) on MicroPython asyncio.

The socket is created, bound and owned by the caller; this module only
reads datagrams, hands them to a `CoapServer` and sends back what it
returns. Nothing a datagram does can stop the loop: every exception is
counted on the server (`server.errors`, `server.on_error`) and the loop
goes on.

Receive path. MicroPython sockets (unix port 1.29, ESP32) have `recvfrom`
but no `recvfrom_into`; `readinto` fills a buffer but loses the sender's
address, so it is useless for an unconnected UDP socket. When the socket
offers `recvfrom_into` (CPython, future ports) the datagram lands in one
preallocated buffer; otherwise `recvfrom` allocates one bytes object of the
datagram's size (the unix port frees its temporary `bufsize` block, the
ESP32 port shrinks it in place) plus the address. Either way the server
sees a memoryview. One byte more than `bufsize` is asked for, so a
datagram that did not fit is detected instead of being parsed truncated
(it is answered 4.13 or dropped by the server).

MicroPython only: `serve` waits with `yield` on asyncio's I/O queue, as
MicroPython's asyncio/stream.py does, so that waiting allocates nothing.
"""
import asyncio
import errno


async def serve(sock, server, transport="coap", bufsize=1152):
    """Serve `server` on `sock` (bound UDP) until cancelled. Keep `bufsize`
    at least `server.max_size`."""
    sock.setblocking(False)
    recv_into = getattr(sock, "recvfrom_into", None)
    buf = bytearray(bufsize + 1) if recv_into else None
    view = memoryview(buf) if recv_into else None
    while True:
        yield asyncio.core._io_queue.queue_read(sock)
        try:
            if recv_into:
                n, peer = recv_into(buf)
                data = view[:n]
            else:
                data, peer = sock.recvfrom(bufsize + 1)
                n = len(data)
                data = memoryview(data)
            out = server.handle(data, peer, transport, None, n > bufsize)
            if out is not None:
                sock.sendto(out, peer)
        except OSError as e:
            # A spurious wake-up is not an error; anything else (send
            # failure, ICMP error reported on the socket) is counted.
            if e.args and e.args[0] == errno.EAGAIN:
                continue
            server.report(e)
        except Exception as e:
            server.report(e)
