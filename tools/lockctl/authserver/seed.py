"""Bench AS: the seeds' people as a ready dataset (draft-maler-ace-oauth-uma
sec. 3.3-3.4, 5.1-5.2): Alice owns the lock and may do anything at any time;
Bob, her employee, has office hours (Monday to Friday, 08:00-18:00 in the
office's time zone); Trudy may open the trunk, and only that, for two hours
(the groceries left in Alice's car).
"""
from .. import cose_host as ch
from .policy import Rule, parse_hours, parse_weekdays

PEOPLE = (
    # user, role, client_id
    ("alice", "owner", "alice-phone"),
    ("bob", "member", "bob-phone"),
    ("trudy", "guest", "trudy-phone"),
)
OWNER_PERMISSIONS = ("unlock", "lock", "status", "admin", "trunk")
BOB_PERMISSIONS = ("unlock", "lock", "status")
TRUDY_PERMISSION = "trunk"
TRUDY_SECONDS = 2 * 3600


def rules(now_s, tz):
    """{user: [Rule, ...]} of the seeds, Trudy's two hours from `now_s`."""
    start, end = parse_hours("08:00-18:00")
    return {
        "alice": [Rule(p, tz=tz) for p in OWNER_PERMISSIONS],
        "bob": [Rule(p, weekdays=parse_weekdays("mon-fri"), start_min=start, end_min=end, tz=tz)
                for p in BOB_PERMISSIONS],
        "trudy": [Rule(TRUDY_PERMISSION, valid_from_s=now_s, valid_until_s=now_s + TRUDY_SECONDS, tz=tz)],
    }


def load(store, device_id, now_s, tz="UTC", keys=None):
    """Add the three users, their phones and rules for lock `device_id` (which
    must exist). keys: {user: private key}; generated when missing. Returns
    {user: private key} (the phones' PoP keys)."""
    keys = dict(keys or {})
    for user, role, client_id in PEOPLE:
        key = keys.setdefault(user, ch.gen_key())
        store.add_user(user, role)
        store.add_phone(client_id, user, ch.pub_bytes(key))
    for user, rs in rules(now_s, tz).items():
        for r in rs:
            store.add_policy(user, device_id, r)
    return keys


def bench_home(path, now_s, tz="UTC", locks=(("front-door", False), ("car", True))):
    """A whole bench AS in `path` for tests and demos: the AS, the locks
    (device_id, exi) with certificates issued and recorded, and the seeds'
    people with their rules on every lock. Returns (home, {user: phone key},
    {device_id: lock key})."""
    from .home import init
    home = init(path)
    lock_keys = {}
    for device_id, exi in locks:
        lock_keys[device_id] = ch.gen_key()
        home.issue_lock_cert(device_id, lock_keys[device_id].public_key(), exi=exi)
    keys = None
    for i, (device_id, _exi) in enumerate(locks):
        if i == 0:
            keys = load(home.store, device_id, now_s, tz)
        else:
            for user, rs in rules(now_s, tz).items():
                for r in rs:
                    home.store.add_policy(user, device_id, r)
    return home, keys, lock_keys
