"""Push order: a push older than the newest one accepted for its branch deploys nothing.

A forge's delivery id is not covered by its signature, so a captured push can be re-sent
with a new id; its payload's push time is covered, and a replay carries the old one. The
newest accepted push time per environment is kept here, next to the branch-head claim, and
compared and raised in one Lua script, so concurrent receivers agree.
"""

from __future__ import annotations

from redis import Redis

from . import keys

# KEYS: newest push time. ARGV: this push's time. Replies 1 (newest so far: recorded) or 0 (older).
_ADMIT = """
local newest = tonumber(redis.call('GET', KEYS[1]) or '')
local pushed = tonumber(ARGV[1])
if newest and pushed < newest then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


class PushOrder:
    """The newest accepted push time per environment, on an explicitly passed Redis connection."""

    def __init__(self, connection: Redis) -> None:
        self.conn = connection
        self.admit_script = connection.register_script(_ADMIT)

    def admit(self, environment: str, pushed_at: float) -> bool:
        """True (and remembered) unless a push newer than `pushed_at` was accepted for environment.

        Equal times pass: two pushes in one second, or a redelivery of the newest push (the
        branch-head and delivery claims deduplicate those)."""
        return bool(self.admit_script(keys=[keys.newest_push(environment)], args=[repr(float(pushed_at))]))
