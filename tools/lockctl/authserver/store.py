"""Bench AS: storage behind a small interface (SQLAlchemy Core).

Store(url) works on any SQLAlchemy URL: `sqlite:///DIR/as.db` on the bench,
`postgresql+psycopg://...` in a deployment (the schema is portable, see
schema.py). Every method is one transaction. Nothing here knows CoAP, DTLS
or CBOR beyond storing the bytes it is handed.
"""
import time

from sqlalchemy import and_, create_engine, event, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from . import schema as S
from .policy import Rule


class StoreError(ValueError):
    """A request the data refuses: unknown name, duplicate, constraint."""


def _now():
    return int(time.time())


class Store:
    def __init__(self, url):
        self.engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            # SQLite checks foreign keys only when asked, per connection.
            @event.listens_for(self.engine, "connect")
            def _fk_on(dbapi_conn, _record):
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

    def create(self):
        S.metadata.create_all(self.engine)
        with self.engine.begin() as c:
            if c.execute(select(S.meta_info.c.value).where(S.meta_info.c.name == "schema")).first() is None:
                c.execute(insert(S.meta_info).values(name="schema", value=str(S.SCHEMA_VERSION)))

    def check(self):
        """Raises StoreError unless the database holds this schema version."""
        try:
            with self.engine.connect() as c:
                v = c.execute(select(S.meta_info.c.value).where(S.meta_info.c.name == "schema")).scalar()
        except SQLAlchemyError as e:       # a missing table: OperationalError or ProgrammingError by backend
            raise StoreError("no AS database there (%s); run `lockctl as init`" % type(e).__name__) from None
        if v != str(S.SCHEMA_VERSION):
            raise StoreError("database schema %s, this lockctl needs %d" % (v, S.SCHEMA_VERSION))

    def close(self):
        self.engine.dispose()

    # -- users, phones, locks -------------------------------------------------
    def _first(self, q):
        """The first row of query `q` as a dict, or None."""
        with self.engine.connect() as c:
            r = c.execute(q).mappings().first()
        return dict(r) if r else None

    def _all(self, q):
        """The rows of query `q` as dicts."""
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def _insert(self, table, **values):
        try:
            with self.engine.begin() as c:
                return c.execute(insert(table).values(**values)).inserted_primary_key[0]
        except IntegrityError as e:
            raise StoreError("%s: %s" % (table.name, _constraint(e))) from None

    def add_user(self, name, role="member"):
        if role not in S.ROLES:
            raise StoreError("role must be one of %s" % ", ".join(S.ROLES))
        return self._insert(S.users, name=name, role=role, created_s=_now())

    def user(self, name):
        r = self._first(select(S.users).where(S.users.c.name == name))
        if r is None:
            raise StoreError("no user %r" % name)
        return r

    def users(self):
        return self._all(select(S.users).order_by(S.users.c.id))

    def add_phone(self, client_id, user_name, public_key):
        if len(public_key) != 65 or public_key[0] != 4:
            raise StoreError("a phone key is a 65-byte uncompressed P-256 point")
        uid = self.user(user_name)["id"]
        return self._insert(S.phones, client_id=client_id, user_id=uid, public_key=public_key,
                            enabled=True, created_s=_now())

    def phone(self, client_id):
        """The phone row with its user's name and role, or None."""
        q = (select(S.phones, S.users.c.name.label("user"), S.users.c.role)
             .join(S.users, S.users.c.id == S.phones.c.user_id).where(S.phones.c.client_id == client_id))
        return self._first(q)

    def set_phone_cert(self, client_id, cert_der, cert_serial):
        with self.engine.begin() as c:
            n = c.execute(update(S.phones).where(S.phones.c.client_id == client_id).values(
                cert_der=cert_der, cert_serial=cert_serial)).rowcount
        if n != 1:
            raise StoreError("no phone %r" % client_id)

    def phone_by_cert(self, cert_der):
        """The enabled phone whose recorded certificate is exactly `cert_der`
        (with its user's name), or None."""
        q = (select(S.phones, S.users.c.name.label("user"), S.users.c.role)
             .join(S.users, S.users.c.id == S.phones.c.user_id)
             .where(and_(S.phones.c.cert_der == bytes(cert_der), S.phones.c.enabled.is_(True))))
        return self._first(q)

    def phones(self):
        q = (select(S.phones, S.users.c.name.label("user"))
             .join(S.users, S.users.c.id == S.phones.c.user_id).order_by(S.phones.c.id))
        return self._all(q)

    def add_lock(self, device_id, public_key, cert_der, cert_serial, exi):
        lid = self._insert(S.locks, device_id=device_id, public_key=public_key, cert_der=cert_der,
                           cert_serial=cert_serial, exi=bool(exi), log_epoch=1, created_s=_now())
        with self.engine.begin() as c:
            c.execute(insert(S.exi_sequences).values(lock_id=lid, last_seq=0))
        return lid

    def replace_lock_cert(self, device_id, public_key, cert_der, cert_serial, new_log=False):
        """A new certificate for a known lock (the old one is refused from
        now on); `new_log`: the lock was provisioned anew, its decision log
        starts over at seq 1 (a new audit epoch)."""
        values = dict(public_key=public_key, cert_der=cert_der, cert_serial=cert_serial)
        if new_log:
            values["log_epoch"] = S.locks.c.log_epoch + 1
            values["log_id"] = None  # the new log's first upload names it
        with self.engine.begin() as c:
            n = c.execute(update(S.locks).where(S.locks.c.device_id == device_id).values(**values)).rowcount
        if n != 1:
            raise StoreError("no lock %r" % device_id)

    def lock(self, device_id):
        r = self._first(select(S.locks).where(S.locks.c.device_id == device_id))
        if r is None:
            raise StoreError("no lock %r" % device_id)
        return r

    def lock_by_cert(self, cert_der):
        """The lock whose recorded certificate is exactly `cert_der`, or None."""
        return self._first(select(S.locks).where(S.locks.c.cert_der == bytes(cert_der)))

    def locks(self):
        return self._all(select(S.locks).order_by(S.locks.c.id))

    # -- policies --------------------------------------------------------------
    def add_policy(self, user_name, device_id, rule):
        rule.validate()
        uid = self.user(user_name)["id"]
        lid = self.lock(device_id)["id"]
        return self._insert(S.policies, user_id=uid, lock_id=lid, permission=rule.permission,
                            weekdays=rule.weekdays, start_min=rule.start_min, end_min=rule.end_min,
                            valid_from_s=rule.valid_from_s, valid_until_s=rule.valid_until_s, tz=rule.tz,
                            created_s=_now())

    def remove_policy(self, policy_id):
        from sqlalchemy import delete
        with self.engine.begin() as c:
            if c.execute(delete(S.policies).where(S.policies.c.id == policy_id)).rowcount != 1:
                raise StoreError("no policy %d" % policy_id)

    def rules(self, user_name=None, device_id=None):
        """Rule objects (with .user, .lock names), filtered by either name."""
        p, u, lk = S.policies, S.users, S.locks
        q = (select(p, u.c.name.label("user_name"), lk.c.device_id)
             .join(u, u.c.id == p.c.user_id).join(lk, lk.c.id == p.c.lock_id).order_by(p.c.id))
        if user_name is not None:
            q = q.where(u.c.name == user_name)
        if device_id is not None:
            q = q.where(lk.c.device_id == device_id)
        with self.engine.connect() as c:
            rows = c.execute(q).mappings().all()
        return [Rule(r["permission"], r["weekdays"], r["start_min"], r["end_min"], r["valid_from_s"],
                     r["valid_until_s"], r["tz"], id=r["id"], user=r["user_name"], lock=r["device_id"])
                for r in rows]

    # -- tokens and exi sequence numbers ---------------------------------------
    def next_exi_seq(self, lock_id):
        """Raise and return the lock's exi sequence number, in one
        transaction (a number is never handed out twice, RFC 9200 5.10.3)."""
        with self.engine.begin() as c:
            n = c.execute(update(S.exi_sequences).where(S.exi_sequences.c.lock_id == lock_id)
                          .values(last_seq=S.exi_sequences.c.last_seq + 1)).rowcount
            if n != 1:
                raise StoreError("lock %d has no exi sequence" % lock_id)
            return c.execute(select(S.exi_sequences.c.last_seq)
                             .where(S.exi_sequences.c.lock_id == lock_id)).scalar_one()

    def exi_seq(self, lock_id):
        with self.engine.connect() as c:
            return c.execute(select(S.exi_sequences.c.last_seq)
                             .where(S.exi_sequences.c.lock_id == lock_id)).scalar_one()

    def set_exi_seq(self, lock_id, value):
        """Raise the counter to at least `value` (never lowers it: numbers
        issued before, e.g. by `lockctl token --exi`, stay used)."""
        with self.engine.begin() as c:
            c.execute(update(S.exi_sequences).where(and_(S.exi_sequences.c.lock_id == lock_id,
                                                         S.exi_sequences.c.last_seq < value))
                      .values(last_seq=value))

    def record_token(self, token_id, cti, lock_id, phone_id, user_id, scope, iat_s, exp_s, exi_s):
        self._insert(S.issued_tokens, token_id=token_id, cti=cti, lock_id=lock_id, phone_id=phone_id,
                     user_id=user_id, scope=scope, iat_s=iat_s, exp_s=exp_s, exi_s=exi_s)

    def issued(self, token_id):
        t, u, lk, ph = S.issued_tokens, S.users, S.locks, S.phones
        q = (select(t, u.c.name.label("user"), lk.c.device_id, ph.c.client_id, ph.c.public_key)
             .join(u, u.c.id == t.c.user_id).join(lk, lk.c.id == t.c.lock_id)
             .join(ph, ph.c.id == t.c.phone_id).where(t.c.token_id == bytes(token_id)))
        return self._first(q)

    def tokens_of(self, user_name=None, device_id=None, client_id=None):
        t, u, lk, ph = S.issued_tokens, S.users, S.locks, S.phones
        q = (select(t, u.c.name.label("user"), lk.c.device_id, ph.c.client_id)
             .join(u, u.c.id == t.c.user_id).join(lk, lk.c.id == t.c.lock_id)
             .join(ph, ph.c.id == t.c.phone_id).order_by(t.c.iat_s))
        if user_name is not None:
            q = q.where(u.c.name == user_name)
        if device_id is not None:
            q = q.where(lk.c.device_id == device_id)
        if client_id is not None:
            q = q.where(ph.c.client_id == client_id)
        return self._all(q)

    # -- revocations (PROFILE sec. 7: GET /trl?after=POS) ---------------------
    def revoke(self, lock_id, token_id=None, cti=None, exi_floor=None, reason=None):
        """Append a revocation (one of a token id, a cti, an exi floor); its
        position, or None when the same one is already there."""
        r = S.revocations
        # What the lock takes (PROFILE sec. 2): a token id of 32 bytes, a cti
        # of 1-64; anything else would name no token there.
        if token_id is not None and len(token_id) != 32:
            raise StoreError("a token id is 32 bytes (64 hex digits), not %d" % len(token_id))
        if cti is not None and not 1 <= len(cti) <= 64:
            raise StoreError("a cti is 1 to 64 bytes, not %d" % len(cti))
        if token_id is not None:
            cond, vals = r.c.token_id == bytes(token_id), dict(token_id=bytes(token_id))
        elif cti is not None:
            cond, vals = r.c.cti == bytes(cti), dict(cti=bytes(cti))
        else:
            cond, vals = r.c.exi_floor >= exi_floor, dict(exi_floor=int(exi_floor))
        with self.engine.begin() as c:
            if c.execute(select(r.c.pos).where(and_(r.c.lock_id == lock_id, cond))).first():
                return None
            return c.execute(insert(r).values(lock_id=lock_id, revoked_s=_now(), reason=reason,
                                              **vals)).inserted_primary_key[0]

    def is_revoked(self, lock_id, token_id, cti, exi_seq=None):
        r = S.revocations
        cond = or_(r.c.token_id == bytes(token_id), r.c.cti == bytes(cti))
        if exi_seq is not None:
            cond = or_(cond, r.c.exi_floor >= exi_seq)
        with self.engine.connect() as c:
            return c.execute(select(r.c.pos).where(and_(r.c.lock_id == lock_id, cond))).first() is not None

    def trl(self, lock_id, after, limit, max_bytes=None):
        """(pos, ids, ctis, exi_floor or None, more): the lock's revocations
        after position `after` in position order, at most `limit` entries
        and, when `max_bytes` is given, about that many bytes of ids and
        ctis; pos is the last entry given (`after` when none)."""
        r = S.revocations
        q = (select(r.c.pos, r.c.token_id, r.c.cti, r.c.exi_floor)
             .where(and_(r.c.lock_id == lock_id, r.c.pos > after)).order_by(r.c.pos).limit(limit + 1))
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        ids, ctis, floor, pos, size, n = [], [], None, after, 0, 0
        for x in rows[:limit]:
            item = x.token_id if x.token_id is not None else x.cti
            cost = len(item) + 2 if item is not None else 10
            if max_bytes is not None and n and size + cost > max_bytes:
                break
            if x.token_id is not None:
                ids.append(bytes(x.token_id))
            elif x.cti is not None:
                ctis.append(bytes(x.cti))
            else:
                floor = max(floor or 0, x.exi_floor)
            size += cost
            n += 1
            pos = x.pos
        return pos, ids, ctis, floor, len(rows) > n

    def revocations(self, device_id=None):
        r, lk = S.revocations, S.locks
        q = select(r, lk.c.device_id).join(lk, lk.c.id == r.c.lock_id).order_by(r.c.pos)
        if device_id is not None:
            q = q.where(lk.c.device_id == device_id)
        return self._all(q)

    # -- audit (PROFILE sec. 6-7: POST /audit, idempotent by (lock, seq)) ------
    def store_audit(self, lock_id, boot, dropped, records, log_id=None):
        """records: dicts with the audit_records columns (seq, raw, ...).
        Stores those whose (lock, seq) is new in the lock's current log
        epoch, keeps the first copy of any seq seen before, logs the upload;
        returns (highest seq stored for this lock in this epoch or 0,
        number newly stored). `log_id`: the lock's log identity; another one
        than recorded (a log that started over) opens a new epoch first, so
        its seqs from 1 are not taken for ones already stored."""
        a = S.audit_records
        now = _now()
        lk = S.locks
        with self.engine.begin() as c:
            row = c.execute(select(lk.c.log_epoch, lk.c.log_id).where(lk.c.id == lock_id)).one()
            epoch = row.log_epoch
            if log_id is not None and row.log_id != log_id:
                if row.log_id is not None:
                    epoch += 1
                c.execute(lk.update().where(lk.c.id == lock_id).values(log_epoch=epoch, log_id=log_id))
        mine = and_(a.c.lock_id == lock_id, a.c.log_epoch == epoch)
        seqs = sorted({r["seq"] for r in records})
        attempt = 0
        while True:
            try:
                with self.engine.begin() as c:
                    have = set()
                    for i in range(0, len(seqs), 500):
                        have.update(c.execute(select(a.c.seq).where(and_(
                            mine, a.c.seq.in_(seqs[i:i + 500])))).scalars())
                    new, seen = [], set()
                    for r in records:
                        if r["seq"] in have or r["seq"] in seen:
                            continue
                        seen.add(r["seq"])
                        new.append(dict(r, lock_id=lock_id, log_epoch=epoch, received_s=now))
                    if new:
                        c.execute(insert(a), new)
                    c.execute(insert(S.audit_uploads).values(lock_id=lock_id, log_epoch=epoch, boot=boot,
                                                             dropped=dropped,
                                                             records=len(records), stored=len(new),
                                                             received_s=now))
                    top = c.execute(select(func.max(a.c.seq)).where(mine)).scalar()
                return top or 0, len(new)
            except IntegrityError:
                # Another upload of the same records won the race: read again.
                attempt += 1
                if attempt == 3:
                    raise

    def audit(self, device_id=None, user=None, limit=50):
        a, lk = S.audit_records, S.locks
        q = select(a, lk.c.device_id).join(lk, lk.c.id == a.c.lock_id)
        if device_id is not None:
            q = q.where(lk.c.device_id == device_id)
        if user is not None:
            q = q.where(a.c.sub == user)
        q = q.order_by(a.c.received_s.desc(), a.c.log_epoch.desc(), a.c.seq.desc()).limit(limit)
        return self._all(q)[::-1]

    def last_upload(self, lock_id):
        """The lock's latest /audit upload (its `dropped` count), or None."""
        u = S.audit_uploads
        return self._first(select(u).where(u.c.lock_id == lock_id).order_by(u.c.id.desc()).limit(1))

    def uploads(self, device_id):
        u, lk = S.audit_uploads, S.locks
        q = select(u).join(lk, lk.c.id == u.c.lock_id).where(lk.c.device_id == device_id).order_by(u.c.id)
        return self._all(q)


def _constraint(e):
    msg = str(e.orig).splitlines()[0] if e.orig is not None else str(e)
    if "UNIQUE" in msg.upper() or "duplicate" in msg:
        return "already exists (%s)" % msg
    return msg
