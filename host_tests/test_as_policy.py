"""Bench AS (issue 10): policy evaluation at its edges (weekdays, hours,
from/until, windows over midnight, time zones and DST days) and the
schema (constraints enforced on SQLite; the same DDL compiles for
PostgreSQL)."""
import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.schema import CreateTable

from lockctl.authserver import schema as S
from lockctl.authserver.policy import (ALL_DAYS, PolicyError, Rule, decide, format_weekdays, parse_hours,
                                       parse_instant, parse_weekdays)
from lockctl.authserver.store import Store, StoreError

BERLIN = "Europe/Berlin"


def at(text, tz=BERLIN):
    """Unix seconds of a local wall time."""
    return int(datetime.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp())


def office(**kw):
    s, e = parse_hours("08:00-18:00")
    return Rule("unlock", parse_weekdays("mon-fri"), s, e, tz=kw.pop("tz", BERLIN), **kw)


# 2026-11-27 is a Friday, 2026-11-28 a Saturday, 2026-11-30 a Monday.
@pytest.mark.parametrize("local,allowed_until", [
    ("2026-11-30T07:59:59", None),
    ("2026-11-30T08:00:00", "2026-11-30T18:00:00"),
    ("2026-11-30T17:59:59", "2026-11-30T18:00:00"),
    ("2026-11-30T18:00:00", None),
    ("2026-11-27T12:00:00", "2026-11-27T18:00:00"),
    ("2026-11-28T12:00:00", None),          # Saturday
    ("2026-11-29T12:00:00", None),          # Sunday
])
def test_office_hours_edges(local, allowed_until):
    got = office().allows_until(at(local))
    assert got == (at(allowed_until) if allowed_until else None)


def test_the_rule_reads_hours_in_its_own_zone():
    # 08:30 in Berlin is 02:30 in New York: a New York office rule is closed.
    t = at("2026-11-30T08:30:00")
    assert office().allows_until(t) is not None
    assert office(tz="America/New_York").allows_until(t) is None
    ny = at("2026-11-30T08:30:00", "America/New_York")
    assert office(tz="America/New_York").allows_until(ny) == at("2026-11-30T18:00:00", "America/New_York")
    # UTC offset of Berlin in winter is +1: 18:00 local is 17:00 UTC.
    assert office().allows_until(t) == int(datetime.datetime(2026, 11, 30, 17, tzinfo=datetime.timezone.utc)
                                           .timestamp())


def test_dst_days_end_at_local_time():
    # EU summer time starts 2026-03-29 (Sunday) and ends 2026-10-25 (Sunday).
    s, e = parse_hours("08:00-18:00")
    r = Rule("unlock", ALL_DAYS, s, e, tz=BERLIN)
    utc = datetime.timezone.utc
    assert r.allows_until(at("2026-03-29T09:00:00")) == int(datetime.datetime(2026, 3, 29, 16, tzinfo=utc)
                                                            .timestamp())
    assert r.allows_until(at("2026-03-28T09:00:00")) == int(datetime.datetime(2026, 3, 28, 17, tzinfo=utc)
                                                            .timestamp())
    assert r.allows_until(at("2026-10-25T09:00:00")) == int(datetime.datetime(2026, 10, 25, 17, tzinfo=utc)
                                                            .timestamp())
    # A window over the spring-forward night is an hour shorter in UTC.
    n = Rule("unlock", ALL_DAYS, *parse_hours("22:00-06:00"), tz=BERLIN)
    start = at("2026-03-28T22:00:00")
    assert n.allows_until(start) - start == 7 * 3600


def test_window_over_midnight_belongs_to_its_start_day():
    r = Rule("unlock", parse_weekdays("fri"), *parse_hours("22:00-06:00"), tz=BERLIN)
    assert r.allows_until(at("2026-11-27T21:59:59")) is None
    assert r.allows_until(at("2026-11-27T22:00:00")) == at("2026-11-28T06:00:00")
    assert r.allows_until(at("2026-11-28T05:59:59")) == at("2026-11-28T06:00:00")   # Saturday morning
    assert r.allows_until(at("2026-11-28T06:00:00")) is None
    assert r.allows_until(at("2026-11-28T22:00:00")) is None                        # Saturday night


def test_all_day_weekdays_join_up():
    r = Rule("unlock", parse_weekdays("mon-fri"), tz=BERLIN)
    assert r.allows_until(at("2026-11-30T00:00:00")) == at("2026-12-05T00:00:00")
    assert r.allows_until(at("2026-11-27T23:59:59")) == at("2026-11-28T00:00:00")
    assert r.allows_until(at("2026-11-28T10:00:00")) is None
    # 24:00 ends the day; the hours rule does not join days.
    h = Rule("unlock", ALL_DAYS, *parse_hours("12:00-24:00"), tz=BERLIN)
    assert h.allows_until(at("2026-11-30T23:00:00")) == at("2026-12-01T00:00:00")


def test_from_until_edges():
    frm, until = at("2026-12-01T10:00:00"), at("2026-12-01T12:00:00")
    r = Rule("trunk", valid_from_s=frm, valid_until_s=until, tz=BERLIN)
    assert r.allows_until(frm - 1) is None
    assert r.allows_until(frm) == until
    assert r.allows_until(until - 1) == until
    assert r.allows_until(until) is None
    # until cuts a daily window short; hours cut an until short.
    o = office(valid_until_s=at("2026-11-30T12:00:00"))
    assert o.allows_until(at("2026-11-30T09:00:00")) == at("2026-11-30T12:00:00")
    o = office(valid_until_s=at("2026-12-30T12:00:00"))
    assert o.allows_until(at("2026-11-30T09:00:00")) == at("2026-11-30T18:00:00")


def test_decide_grants_what_some_rule_allows_until_the_earliest_end():
    t = at("2026-11-30T16:00:00")
    rules = [office(), Rule("status", tz=BERLIN), Rule("trunk", valid_until_s=t + 600, tz=BERLIN),
             Rule("unlock", valid_until_s=t + 60, tz=BERLIN)]
    assert decide(rules, ["status"], t, 3600) == (["status"], t + 3600)      # capped by the lifetime
    assert decide(rules, ["unlock", "status"], t, 3600 * 8) == (["unlock", "status"], at("2026-11-30T18:00:00"))
    assert decide(rules, ["trunk", "unlock"], t, 3600) == (["trunk", "unlock"], t + 600)
    assert decide(rules, ["admin"], t, 3600) == ([], None)
    assert decide(rules, ["admin", "status", "status"], t, 60) == (["status"], t + 60)
    assert decide([], ["unlock"], t, 3600) == ([], None)


def test_parsers_and_refusals():
    assert parse_weekdays("mon-fri") == 0x1F
    assert parse_weekdays("sat,sun") == 0x60
    assert parse_weekdays("fri-mon") == 0x01 | 0x10 | 0x20 | 0x40
    assert format_weekdays(0x1F) == "mon-fri" and format_weekdays(ALL_DAYS) == "all"
    assert parse_hours("08:00-18:00") == (480, 1080)
    assert parse_hours(None) == (None, None)
    assert parse_instant("2026-12-01T10:00", BERLIN) == at("2026-12-01T10:00:00")
    assert parse_instant("2026-12-01T10:00+00:00", BERLIN) == at("2026-12-01T10:00:00", "UTC")
    assert parse_instant("@1700000000", BERLIN) == 1700000000
    for bad in ("funday", "mon-xyz"):
        with pytest.raises(PolicyError):
            parse_weekdays(bad)
    for bad in ("8-18", "08:00", "10:00-10:00", "24:00-01:00", "08:61-09:00"):
        with pytest.raises(PolicyError):
            parse_hours(bad)
    with pytest.raises(PolicyError):
        Rule("unlock", tz="Mars/Olympus")
    with pytest.raises(PolicyError):
        Rule("unlock", valid_from_s=10, valid_until_s=10)
    with pytest.raises(PolicyError):
        Rule("unlock status")


# -- schema -----------------------------------------------------------------
def test_schema_constraints_hold_on_sqlite(tmp_path):
    st = Store("sqlite:///%s" % (tmp_path / "as.db"))
    st.create()
    st.check()
    st.add_user("alice", "owner")
    with pytest.raises(StoreError):
        st.add_user("alice", "owner")                    # unique name
    with pytest.raises(StoreError):
        st.add_user("eve", "root")                       # role
    lid = st.add_lock("lock-1", b"\x04" + bytes(64), b"cert", "01", False)
    uid = st.user("alice")["id"]
    base = dict(user_id=uid, lock_id=lid, permission="unlock", weekdays=1, tz="UTC", created_s=0)
    bad = [dict(weekdays=0), dict(weekdays=128), dict(start_min=60), dict(start_min=60, end_min=60),
           dict(start_min=1440, end_min=60), dict(valid_from_s=5, valid_until_s=5), dict(permission=""),
           dict(user_id=uid + 100)]                      # the last: a foreign key
    with st.engine.begin() as c:
        c.execute(insert(S.policies).values(**base))
    for b in bad:
        with pytest.raises(IntegrityError):
            with st.engine.begin() as c:
                c.execute(insert(S.policies).values(**dict(base, **b)))
    with pytest.raises(IntegrityError):
        with st.engine.begin() as c:        # a revocation names a token id or a cti, not both
            c.execute(insert(S.revocations).values(lock_id=lid, token_id=bytes(32), cti=b"x", revoked_s=0))
    st.close()


def test_schema_is_portable_to_postgresql():
    for t in S.metadata.sorted_tables:
        pg = str(CreateTable(t).compile(dialect=postgresql.dialect()))
        lite = str(CreateTable(t).compile(dialect=sqlite.dialect()))
        # Same constraints, spelled the same, on both (but the emulation of
        # BOOLEAN, which PostgreSQL has natively).
        for line in lite.splitlines():
            if "_bool CHECK" in line:
                assert "BOOLEAN" in pg
                continue
            if "CHECK" in line or "UNIQUE" in line or "FOREIGN KEY" in line:
                assert line.strip().rstrip(",") in pg, (t.name, line)
        assert "AUTOINCREMENT" not in pg
    pg = str(CreateTable(S.policies).compile(dialect=postgresql.dialect()))
    assert "BIGSERIAL" in pg and "CHECK (weekdays BETWEEN 1 AND 127)" in pg
    assert "BYTEA" in str(CreateTable(S.audit_records).compile(dialect=postgresql.dialect()))


@pytest.mark.parametrize("call, text", [
    (parse_weekdays, "monkey"),                 # was stored as "mon"
    (parse_weekdays, "mon-friends"),
    (parse_hours, "\u00b2:00-03:00"),           # a digit to isdigit(), not to int()
])
def test_bad_input_is_a_policy_error(call, text):
    """Second attack pass: these were taken, or raised a traceback."""
    with pytest.raises(PolicyError):
        call(text)


@pytest.mark.parametrize("text", ["now+9999999999d", "@99999999999999999999", "now+\u00b2h", "@-5"])
def test_instants_beyond_what_a_date_shows_are_refused(text):
    from lockctl.authserver.policy import parse_instant
    with pytest.raises(PolicyError):
        parse_instant(text, "UTC")


def test_full_day_names_still_parse():
    assert parse_weekdays("monday-friday") == parse_weekdays("mon-fri")


def test_revocations_the_lock_would_refuse_are_refused(tmp_path):
    from lockctl.authserver.home import init
    from lockctl.authserver.store import StoreError
    home = init(str(tmp_path / "as"))
    try:
        from lockctl import cose_host as ch
        home.issue_lock_cert("l1", ch.gen_key().public_key())
        lock_id = home.store.lock("l1")["id"]
        for bad in (dict(token_id=b"\x00"), dict(token_id=bytes(33)), dict(cti=b""), dict(cti=bytes(65))):
            with pytest.raises(StoreError):
                home.store.revoke(lock_id, **bad)
    finally:
        home.close()
