"""Demo CoAP app for the end-to-end test (MicroPython unix port).

usage: micropython coap_demo.py PORT
Binds UDP 127.0.0.1:PORT and serves GET /hello, POST /counter (counts the
POSTs it actually executed), GET /counter, GET /boom (a handler bug) and
/.well-known/core. Prints READY once the socket is bound, then every error
reported through on_error.
"""
import asyncio
import socket
import sys

from coap import message as m
from coap.server import CoapServer, Response, Site
from coap.udp import serve


class Hello:
    def get(self, request, exchange):
        return Response(m.CONTENT, b"hello world", content_format=0)


class Counter:
    def __init__(self):
        self.count = 0

    def get(self, request, exchange):
        return Response(m.CONTENT, b"%d" % self.count, content_format=0)

    def post(self, request, exchange):
        self.count += 1
        return Response(m.CHANGED, b"%d" % self.count, content_format=0)


class Boom:
    def get(self, request, exchange):
        raise RuntimeError("handler bug")


class DemoServer(CoapServer):
    def handle(self, data, peer, *args):
        # The datagram "raise" makes the server itself fail, so the test can
        # show that udp.serve counts the error and keeps serving.
        if bytes(data) == b"raise":
            raise RuntimeError("server failure")
        return super().handle(data, peer, *args)


def main():
    port = int(sys.argv[1])
    site = Site()
    site.add(("hello",), Hello(), {"rt": "demo.hello", "ct": 0, "title": "Hello"})
    site.add(("counter",), Counter(), {"rt": "demo.counter", "if": "core.p"})
    site.add(("boom",), Boom(), {"hidden": True})
    server = DemoServer(site, on_error=lambda e: print("error:", repr(e)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    print("READY")
    asyncio.run(serve(sock, server))


main()
