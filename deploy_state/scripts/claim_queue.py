"""A worker joining an environment's queue (queue_workers.py): drop lapsed members, then join.

An exclusive worker joins only if no other live worker serves the queue.
"""

from __future__ import annotations

from typing import Any

from redis import Redis

from ..replies import text
from . import script

CLAIM = script(
    "claim-queue",
    keys=["workers"],
    args=["member", "expires", "now", "exclusive"],
    # Replies the other live members when an exclusive claim finds any (it joins nothing then), else {}.
    body="""
redis.call('zremrangebyscore', K.workers, '-inf', A.now)
local others = {}
for _, member in ipairs(redis.call('zrange', K.workers, 0, -1)) do
  if member ~= A.member then table.insert(others, member) end
end
if #others > 0 and A.exclusive == '1' then return others end
redis.call('zadd', K.workers, A.expires, A.member)
return {}
""",
)


def claim_queue(conn: Redis, key: str, member: str, expires: float, now: float, exclusive: bool) -> list[str]:
    """Join key's members until `expires`; an exclusive claim that finds other live members joins nothing and
    returns them. Otherwise []."""
    args = {"member": member, "expires": expires, "now": now, "exclusive": "1" if exclusive else "0"}
    others: Any = CLAIM(conn, keys={"workers": key}, args=args)
    return [text(member) for member in others]
