"""Bench AS storage: the tables (SQLAlchemy Core).

Portable by construction, so a PostgreSQL deployment takes it unchanged:
only generic types (Integer, BigInteger, Text, String, LargeBinary,
Boolean), instants as integer Unix seconds (`*_s`, UTC; PROFILE sec. 6: no
floats for wall time), every constraint named and explicit (primary keys,
unique, foreign keys, checks written in plain SQL both dialects read), no
SQLite-only SQL. Who can fill each table:

- users, phones, locks, policies: the AS operator (lockctl as ...);
- issued_tokens: the token endpoint, one row per minted token;
- revocations: the operator (lockctl as revoke): a token id, a cti, or an
  exi floor; the locks read it as a diff (`pos` is the position in
  GET /trl?after=POS, PROFILE sec. 7);
- audit_records, audit_uploads: authenticated locks, each only for itself
  (POST /audit, keyed by (lock, seq) within the lock's log epoch);
- exi_sequences: the token endpoint, one counter per lock (RFC 9200
  5.10.3: an exi token's cti is the next number, PROFILE sec. 2).
"""
from sqlalchemy import (BigInteger, Boolean, CheckConstraint, Column, ForeignKey, Integer,
                        LargeBinary, MetaData, PrimaryKeyConstraint, String, Table, Text,
                        UniqueConstraint)

SCHEMA_VERSION = 1

# Naming convention: constraints get stable names on every backend (what a
# migration tool needs to address them).
metadata = MetaData(naming_convention={
    "pk": "pk_%(table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "ix": "ix_%(table_name)s_%(column_0_name)s",
})

# A surrogate key: BIGINT on PostgreSQL, INTEGER on SQLite (only an INTEGER
# PRIMARY KEY autoincrements there).
_Id = BigInteger().with_variant(Integer(), "sqlite")

ROLES = ("owner", "member", "guest")

meta_info = Table(
    "as_meta", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

users = Table(
    "users", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_s", BigInteger, nullable=False),
    UniqueConstraint("name"),
    CheckConstraint("role IN ('owner', 'member', 'guest')", name="role"),
    CheckConstraint("length(name) > 0", name="name_nonempty"),
)

phones = Table(
    "phones", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    # RFC 9200 5.8.1 client_id: what the phone names itself in a token request.
    Column("client_id", String(128), nullable=False),
    Column("user_id", _Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # The PoP key (RFC 8747 cnf): SEC1 uncompressed P-256 point, 65 bytes.
    Column("public_key", LargeBinary(65), nullable=False),
    Column("enabled", Boolean(create_constraint=True, name="enabled_bool"), nullable=False),
    # Its DTLS client certificate for the token endpoint over CoAPS, issued
    # by this AS (ca.py), when it has one.
    Column("cert_der", LargeBinary, nullable=True),
    Column("cert_serial", String(40), nullable=True),
    Column("created_s", BigInteger, nullable=False),
    UniqueConstraint("client_id"),
    UniqueConstraint("cert_serial"),
    CheckConstraint("length(client_id) > 0", name="client_id_nonempty"),
)

locks = Table(
    "locks", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("device_id", String(128), nullable=False),          # the token's aud
    Column("public_key", LargeBinary(65), nullable=False),     # its DTLS key, SEC1
    Column("cert_der", LargeBinary, nullable=False),           # issued by this AS (ca.py)
    Column("cert_serial", String(40), nullable=False),         # hex
    # Tokens with exi (no trusted clock on the lock) or with exp.
    Column("exi", Boolean(create_constraint=True, name="exi_bool"), nullable=False),
    # Raised when the lock is provisioned again: a new flash, a decision log
    # whose seq starts over (audit records are kept per epoch).
    Column("log_epoch", Integer, nullable=False),
    # The lock's log identity (its /audit "log"): another one is a log that
    # started over (a wiped flash), which opens a new epoch too.
    Column("log_id", LargeBinary(16), nullable=True),
    Column("created_s", BigInteger, nullable=False),
    UniqueConstraint("device_id"),
    UniqueConstraint("cert_serial"),
    CheckConstraint("log_epoch >= 1", name="log_epoch"),
)

policies = Table(
    "policies", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("user_id", _Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("lock_id", _Id, ForeignKey("locks.id", ondelete="CASCADE"), nullable=False),
    Column("permission", String(32), nullable=False),
    # Bit 0 = Monday ... bit 6 = Sunday, in the policy's time zone.
    Column("weekdays", Integer, nullable=False),
    # Minutes of the local day [start, end); NULL both = all day; start > end
    # is a window over midnight, belonging to the day it starts.
    Column("start_min", Integer, nullable=True),
    Column("end_min", Integer, nullable=True),
    Column("valid_from_s", BigInteger, nullable=True),
    Column("valid_until_s", BigInteger, nullable=True),
    Column("tz", String(64), nullable=False),                  # IANA name, e.g. Europe/Berlin
    Column("created_s", BigInteger, nullable=False),
    CheckConstraint("weekdays BETWEEN 1 AND 127", name="weekdays"),
    CheckConstraint("(start_min IS NULL) = (end_min IS NULL)", name="hours_pair"),
    CheckConstraint("start_min IS NULL OR (start_min BETWEEN 0 AND 1439 AND end_min BETWEEN 0 AND 1440 "
                    "AND start_min <> end_min)", name="hours_range"),
    CheckConstraint("valid_from_s IS NULL OR valid_until_s IS NULL OR valid_from_s < valid_until_s",
                    name="validity"),
    CheckConstraint("length(permission) > 0", name="permission_nonempty"),
)

issued_tokens = Table(
    "issued_tokens", metadata,
    Column("token_id", LargeBinary(32), primary_key=True),     # PROFILE sec. 2 v2
    Column("cti", LargeBinary(16), nullable=False),
    Column("lock_id", _Id, ForeignKey("locks.id", ondelete="CASCADE"), nullable=False),
    Column("phone_id", _Id, ForeignKey("phones.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", _Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("scope", Text, nullable=False),
    Column("iat_s", BigInteger, nullable=False),
    Column("exp_s", BigInteger, nullable=True),
    Column("exi_s", BigInteger, nullable=True),
    CheckConstraint("exp_s IS NOT NULL OR exi_s IS NOT NULL", name="lifetime"),
    UniqueConstraint("lock_id", "cti", name="uq_issued_tokens_lock_cti"),
)

revocations = Table(
    "revocations", metadata,
    Column("pos", _Id, primary_key=True, autoincrement=True),  # GET /trl?after=POS
    Column("lock_id", _Id, ForeignKey("locks.id", ondelete="CASCADE"), nullable=False),
    Column("token_id", LargeBinary(32), nullable=True),
    Column("cti", LargeBinary(64), nullable=True),
    # Every exi token of this lock numbered at or below it is revoked (the
    # lock's exi floor, firmware/trust/cwt.py ExiTable.set_floor).
    Column("exi_floor", BigInteger, nullable=True),
    Column("revoked_s", BigInteger, nullable=False),
    Column("reason", Text, nullable=True),
    CheckConstraint("(CASE WHEN token_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN cti IS NULL THEN 0 ELSE 1 END)"
                    " + (CASE WHEN exi_floor IS NULL THEN 0 ELSE 1 END) = 1", name="one_of"),
    CheckConstraint("exi_floor IS NULL OR exi_floor >= 0", name="exi_floor"),
    UniqueConstraint("lock_id", "token_id", name="uq_revocations_lock_token"),
    UniqueConstraint("lock_id", "cti", name="uq_revocations_lock_cti"),
)

audit_records = Table(
    "audit_records", metadata,
    Column("lock_id", _Id, ForeignKey("locks.id", ondelete="CASCADE"), nullable=False),
    Column("log_epoch", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("wall_s", BigInteger, nullable=True),
    Column("boot", BigInteger, nullable=True),
    Column("uptime_ms", BigInteger, nullable=True),
    Column("transport", String(16), nullable=True),
    Column("permission", String(32), nullable=True),
    Column("sub", Text, nullable=True),
    Column("token_id", LargeBinary(32), nullable=True),
    Column("granted", Boolean(create_constraint=True, name="granted_bool"), nullable=True),
    Column("reason", Integer, nullable=True),
    Column("raw", LargeBinary, nullable=False),                # the record's CBOR as received
    Column("received_s", BigInteger, nullable=False),
    PrimaryKeyConstraint("lock_id", "log_epoch", "seq"),
    CheckConstraint("seq >= 0", name="seq"),
)

audit_uploads = Table(
    "audit_uploads", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("lock_id", _Id, ForeignKey("locks.id", ondelete="CASCADE"), nullable=False),
    Column("log_epoch", Integer, nullable=False),
    Column("boot", BigInteger, nullable=False),
    Column("dropped", BigInteger, nullable=False),
    Column("records", Integer, nullable=False),
    Column("stored", Integer, nullable=False),
    Column("received_s", BigInteger, nullable=False),
)

exi_sequences = Table(
    "exi_sequences", metadata,
    Column("lock_id", _Id, ForeignKey("locks.id", ondelete="CASCADE"), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    CheckConstraint("last_seq >= 0", name="last_seq"),
)
