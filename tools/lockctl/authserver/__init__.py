"""The bench authorization server (`lockctl as`, issue 10): policies in a
database, a token endpoint minting PoP-bound tokens (RFC 9200), the CA of
the locks' certificates, and the locks' uplink (PROFILE sec. 7).

Modules, one concern each: schema (tables), store (storage interface),
policy (rule evaluation), ca (certificates), home (the AS directory),
tokens (token endpoint, introspection), resources (CoAP resources),
server (CoAP and CoAPS transports), clients (phone and lock ends on the
host), seed (the seeds' people), cli (`lockctl as`)."""


def add_parser(subparsers):
    from .cli import add_parser as _add
    return _add(subparsers)
