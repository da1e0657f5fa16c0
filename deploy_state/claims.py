"""Intake claims: which request makes the deployment for a delivery or a branch head.

One Lua script checks the delivery and the branch head and, when neither is taken, claims
both and allocates the deployment id, in one round trip. Concurrent pushes to one
environment therefore never conflict (the old WATCH on the head key made them retry each
other), while two receivers of one delivery, or a webhook and the poller seeing one sha,
still agree on one deployment.

A claim is committed when the deployment record exists: the intake writes the record and
enqueues its job in one MULTI right after claiming. A claim whose record has not appeared
within CLAIM_GRACE (its receiver died between the two steps) is abandoned, and the next
request for it takes it over; a receiver whose MULTI fails releases its claim at once, so a
redelivery after a 503 makes the deployment.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from . import keys

CLAIM_GRACE = 5.0
"""Seconds a claim may stay uncommitted before another request takes it over.

Claiming and committing are two consecutive round trips of one request thread; only a
receiver that died (or hung) in between leaves a claim this old."""

DELIVERY_TTL = 30 * 24 * 3600
"""Seconds a delivery id is remembered; GitHub lets one redeliver for about that long."""

# KEYS: sequence, head, delivery. ARGV: sha, track head (1/0), track delivery (1/0),
# delivery TTL, abandoned deployment id ('' for none).
# A head or delivery that names the abandoned id, or that cannot be read, counts as free.
# Replies {'taken', id, age ms} or {'new', id, previous head or ''}.
_CLAIM = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local function holder(key)
  local raw = redis.call('GET', KEYS[key])
  if not raw then return nil, raw end
  local ok, claim = pcall(cjson.decode, raw)
  if not ok or type(claim) ~= 'table' or claim['deployment_id'] == nil then return nil, raw end
  if claim['deployment_id'] == ARGV[5] then return nil, raw end
  return claim, raw
end
if ARGV[3] == '1' then
  local claim = holder(3)
  if claim then return {'taken', claim['deployment_id'], now_ms - (tonumber(claim['at']) or 0)} end
end
local previous = ''
if ARGV[2] == '1' then
  local claim, raw = holder(2)
  if claim and claim['sha'] == ARGV[1] then
    return {'taken', claim['deployment_id'], now_ms - (tonumber(claim['at']) or 0)}
  end
  previous = raw or ''
end
local id = tostring(redis.call('INCR', KEYS[1]))
local value = cjson.encode({sha = ARGV[1], deployment_id = id, at = now_ms})
if ARGV[2] == '1' then redis.call('SET', KEYS[2], value) end
if ARGV[3] == '1' then redis.call('SET', KEYS[3], value, 'EX', ARGV[4]) end
return {'new', id, previous}
"""

# KEYS: head, delivery. ARGV: deployment id, previous head ('' for none), track head, track delivery.
# Undo a claim that still names this deployment; a newer claim is left alone.
_RELEASE = """
local function names(key)
  local raw = redis.call('GET', KEYS[key])
  if not raw then return false end
  local ok, claim = pcall(cjson.decode, raw)
  return ok and type(claim) == 'table' and claim['deployment_id'] == ARGV[1]
end
if ARGV[3] == '1' and names(1) then
  if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
end
if ARGV[4] == '1' and names(2) then redis.call('DEL', KEYS[2]) end
return 1
"""


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming: a new deployment id, or the deployment another request holds."""

    deployment_id: str
    taken: bool
    """True when another request (or an earlier one) holds the delivery or the head."""
    age: float = 0.0
    """Seconds since the holder claimed (taken claims only)."""
    previous_head: str = ""
    """The head record this claim replaced, restored if the claim is released."""


class Claims:
    """Claims of deliveries and branch heads on an explicitly passed Redis connection."""

    def __init__(self, connection: Redis) -> None:
        self.claim_script = connection.register_script(_CLAIM)
        self.release_script = connection.register_script(_RELEASE)

    def claim(
        self, environment: str, sha: str, *, source: str, delivery_id: str, track_head: bool, abandoned: str = ""
    ) -> Claim:
        """Claim the delivery (when it has an id) and, for pushes and polls, the branch head."""
        kind, deployment_id, extra = self.claim_script(
            keys=[keys.sequence(), keys.head(environment), _delivery_key(source, delivery_id)],
            args=[sha, _flag(track_head), _flag(bool(delivery_id)), DELIVERY_TTL, abandoned],
        )
        if _text(kind) == "taken":
            return Claim(_text(deployment_id), taken=True, age=int(extra) / 1000)
        return Claim(_text(deployment_id), taken=False, previous_head=_text(extra))

    def release(self, claim: Claim, environment: str, *, source: str, delivery_id: str, track_head: bool) -> None:
        """Undo a new claim whose deployment could not be recorded, so that a redelivery makes it."""
        self.release_script(
            keys=[keys.head(environment), _delivery_key(source, delivery_id)],
            args=[claim.deployment_id, claim.previous_head, _flag(track_head), _flag(bool(delivery_id))],
        )


def _delivery_key(source: str, delivery_id: str) -> str:
    # Lua scripts must name every key they may touch; an unused slot still needs a name.
    return keys.delivery(source, delivery_id or "-")


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
