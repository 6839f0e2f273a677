"""Bench AS: policy evaluation (who may use which permission on which lock,
when). Pure: no database, no clock; the caller passes the instant.

A rule allows one permission on one lock to one user:
- `weekdays`: bit 0 Monday .. bit 6 Sunday, in the rule's time zone;
- `start_min`/`end_min`: minutes of the local day, [start, end); both None
  for all day; start > end is a window over midnight that belongs to the
  day it starts (Friday 22:00-06:00 covers Saturday 00:00-06:00 too);
- `valid_from_s`/`valid_until_s`: Unix seconds, [from, until), None = open;
- `tz`: an IANA zone name, always explicit (never the host's zone).
Local times are resolved with zoneinfo, so DST days are right: a window
ends at its local end time, whatever the UTC offset that day.
"""
import datetime
import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = 0x7F


class PolicyError(ValueError):
    """A rule that cannot be stored: bad zone, hours, days or validity."""


def zone(name):
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicyError("unknown time zone %r (an IANA name such as Europe/Berlin or UTC)" % name) from None


def _day(word):
    # 'mon' or 'monday' (not 'monkey'): ValueError otherwise.
    w = word.strip()
    i = DAY_NAMES.index(w[:3])
    if len(w) > 3 and w != _FULL_DAYS[i]:
        raise ValueError(word)
    return i


_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def parse_weekdays(text):
    """'mon-fri', 'sat,sun', 'mon,wed-fri', 'all' -> bit mask."""
    text = (text or "all").strip().lower()
    if text in ("all", "*", "any"):
        return ALL_DAYS
    mask = 0
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        try:
            i = _day(a)
            j = _day(b) if b else i
        except ValueError:
            raise PolicyError("weekdays: %r is not mon..sun (e.g. mon-fri or sat,sun)" % part) from None
        k = i
        while True:           # a range may wrap: fri-mon
            mask |= 1 << k
            if k == j:
                break
            k = (k + 1) % 7
    return mask


def format_weekdays(mask):
    if mask == ALL_DAYS:
        return "all"
    days = [d for i, d in enumerate(DAY_NAMES) if mask >> i & 1]
    if mask == 0x1F:
        return "mon-fri"
    return ",".join(days)


def _hm(text):
    h, sep, m = text.strip().partition(":")
    if not sep or not (h.isascii() and h.isdigit() and m.isascii() and m.isdigit()):
        raise PolicyError("time of day %r is not HH:MM" % text)
    v = int(h) * 60 + int(m)
    if int(m) >= 60 or v > 1440:
        raise PolicyError("time of day %r is out of range" % text)
    return v


def parse_hours(text):
    """'08:00-18:00' -> (480, 1080); None/'any' -> (None, None). 24:00 ends
    a day; 22:00-06:00 spans midnight."""
    if text is None or text.strip().lower() in ("", "any", "all"):
        return None, None
    a, sep, b = text.partition("-")
    if not sep:
        raise PolicyError("hours %r is not HH:MM-HH:MM" % text)
    s, e = _hm(a), _hm(b)
    if s == 1440 or s == e:
        raise PolicyError("hours %r is an empty window" % text)
    return s, e


def format_hours(start_min, end_min):
    if start_min is None:
        return "any"
    return "%02d:%02d-%02d:%02d" % (start_min // 60, start_min % 60, end_min // 60, end_min % 60)


class Rule:
    """One policy row (see the module docstring for the fields)."""
    __slots__ = ("id", "user", "lock", "permission", "weekdays", "start_min", "end_min",
                 "valid_from_s", "valid_until_s", "tz")

    def __init__(self, permission, weekdays=ALL_DAYS, start_min=None, end_min=None, valid_from_s=None,
                 valid_until_s=None, tz="UTC", id=None, user=None, lock=None):
        self.id, self.user, self.lock = id, user, lock
        self.permission = permission
        self.weekdays = weekdays
        self.start_min, self.end_min = start_min, end_min
        self.valid_from_s, self.valid_until_s = valid_from_s, valid_until_s
        self.tz = tz
        self.validate()

    def validate(self):
        zone(self.tz)
        if not self.permission or " " in self.permission:
            raise PolicyError("a permission is one word (unlock, lock, status, admin, trunk...)")
        if not 1 <= self.weekdays <= ALL_DAYS:
            raise PolicyError("weekdays: at least one day")
        if (self.start_min is None) != (self.end_min is None):
            raise PolicyError("hours need a start and an end")
        if self.start_min is not None and not (0 <= self.start_min < 1440 and 0 <= self.end_min <= 1440
                                               and self.start_min != self.end_min):
            raise PolicyError("hours out of range")
        if (self.valid_from_s is not None and self.valid_until_s is not None
                and self.valid_from_s >= self.valid_until_s):
            raise PolicyError("valid from must be before valid until")

    def _windows(self, local_day):
        """The [start, end) UTC second intervals of this rule's daily window
        that start on local date `local_day` (a datetime.date)."""
        tz = zone(self.tz)
        if not self.weekdays >> local_day.weekday() & 1:
            return None
        if self.start_min is None:
            s_min, e_min, e_day = 0, 0, local_day + datetime.timedelta(days=1)
        else:
            s_min, e_min = self.start_min, self.end_min
            e_day = local_day if e_min > s_min else local_day + datetime.timedelta(days=1)
            if e_min == 1440:
                e_min, e_day = 0, local_day + datetime.timedelta(days=1)
        return (_local_to_utc_s(local_day, s_min, tz), _local_to_utc_s(e_day, e_min, tz))

    def allows_until(self, now_s):
        """None when the rule does not allow at `now_s`; else the Unix second
        its current allowance ends: valid_until or the end of the current
        daily window, whichever is first (a rule for every day and hour
        gives a far horizon, which the token lifetime caps)."""
        if self.valid_from_s is not None and now_s < self.valid_from_s:
            return None
        if self.valid_until_s is not None and now_s >= self.valid_until_s:
            return None
        tz = zone(self.tz)
        today = datetime.datetime.fromtimestamp(now_s, tz).date()
        end = None
        if self.start_min is None and self.weekdays == ALL_DAYS:
            end = _FAR
        else:
            # Today's window, or yesterday's when it runs over midnight.
            for d in (today, today - datetime.timedelta(days=1)):
                w = self._windows(d)
                if w and w[0] <= now_s < w[1]:
                    end = w[1]
                    # Consecutive all-day windows join (mon-fri all day).
                    nxt = d + datetime.timedelta(days=1)
                    while self.start_min is None and end != _FAR:
                        w2 = self._windows(nxt)
                        if not w2 or w2[0] != end:
                            break
                        end, nxt = w2[1], nxt + datetime.timedelta(days=1)
                    break
        if end is None:
            return None
        if self.valid_until_s is not None:
            end = min(end, self.valid_until_s)
        return end


_FAR = 1 << 62


def _local_to_utc_s(day, minute, tz):
    """Unix seconds of local `day` at `minute` past midnight in `tz`. A local
    time that does not exist (the hour skipped when DST starts) is read
    with the offset in force before the change (PEP 495 fold=0), as if the
    clocks had not moved yet; a repeated one is its first occurrence."""
    naive = datetime.datetime(day.year, day.month, day.day) + datetime.timedelta(minutes=minute)
    return int(naive.replace(tzinfo=tz, fold=0).timestamp())


def decide(rules, requested, now_s, max_ttl_s):
    """Evaluate a user's rules for one lock at `now_s`.

    requested: permission names the client asked for. Returns (granted,
    horizon_s): the permissions some rule allows now (in request order)
    and the second the token must end by, the earliest horizon over the
    granted permissions, each the latest end among the rules allowing it,
    capped at now + max_ttl_s. ([], None) when nothing is allowed."""
    horizon = {}
    for r in rules:
        if r.permission not in requested:
            continue
        end = r.allows_until(now_s)
        if end is not None and end > now_s:
            horizon[r.permission] = max(end, horizon.get(r.permission, 0))
    granted = [p for p in dict.fromkeys(requested) if p in horizon]
    if not granted:
        return [], None
    return granted, min(min(horizon[p] for p in granted), now_s + max_ttl_s)


# Instants a policy may name: up to the year 9999 (what dates can show).
_LAST_S = 253402300799


def parse_instant(text, tz):
    """'2026-12-01T08:00' (read in zone `tz`), with an explicit offset
    ('...+01:00', 'Z'), '@UNIX' seconds, or 'now', 'now+2h', 'now+30m'.
    PolicyError for anything else, or an instant before 1970 or after 9999."""
    s = _parse_instant(text, tz)
    if not 0 <= s <= _LAST_S:
        raise PolicyError("%r: an instant from 1970 to the year 9999" % text)
    return s


def _parse_instant(text, tz):
    text = text.strip()
    if text.startswith("now"):
        base = int(time.time())
        rest = text[3:]
        if not rest:
            return base
        if rest[0] != "+" or rest[-1] not in "smhd" or not (rest[1:-1].isascii() and rest[1:-1].isdigit()):
            raise PolicyError("%r: use now, now+90s, now+30m, now+2h or now+1d" % text)
        return base + int(rest[1:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[rest[-1]]
    if text.startswith("@"):
        try:
            if not (text[1:].isascii() and text[1:].isdigit()):
                raise ValueError
            return int(text[1:])
        except ValueError:
            raise PolicyError("%r is not @UNIX_SECONDS" % text) from None
    try:
        dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PolicyError("%r is not an ISO date-time (2026-12-01T08:00)" % text) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone(tz))
    return int(dt.timestamp())


def format_instant(s, tz):
    if s is None:
        return "-"
    return datetime.datetime.fromtimestamp(s, zone(tz)).strftime("%Y-%m-%d %H:%M %Z")
