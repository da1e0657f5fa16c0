"""A lease's compare-and-set scripts: only the token that holds a key renews or deletes it.

The environment lock (locks.py) and the running pointer (store.py) use them.
"""

from __future__ import annotations

from redis import Redis

from . import script

RENEW = script(
    "renew-if-held",
    keys=["lease"],
    args=["token", "ms"],
    body="if redis.call('get', K.lease) == A.token then return redis.call('pexpire', K.lease, A.ms) end return 0",
)

RELEASE = script(
    "release-if-held",
    keys=["lease"],
    args=["token"],
    body="if redis.call('get', K.lease) == A.token then return redis.call('del', K.lease) end return 0",
)


def renew_if_held(conn: Redis, key: str, token: str, lease_ms: int) -> bool:
    """Extend key's expiry to lease_ms if token still holds it."""
    return bool(RENEW(conn, keys={"lease": key}, args={"token": token, "ms": lease_ms}))


def release_if_held(conn: Redis, key: str, token: str) -> bool:
    """Delete key if token still holds it: a holder whose lease ran out never deletes its successor's."""
    return bool(RELEASE(conn, keys={"lease": key}, args={"token": token}))
