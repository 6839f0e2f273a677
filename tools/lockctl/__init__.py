"""lockctl: host-side tools for the ACE door lock (the AS, the phone,
provisioning, deploy). CPython only."""
__version__ = "0.1.0"
