"""CoAP (RFC 7252) message layer and server core; sockets are handed in."""
