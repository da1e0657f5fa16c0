"""Admission's script (admission.py): a request becomes one recorded deployment with its RQ job
enqueued, or the deployment an earlier delivery made, in one round trip.

In order: the delivery's claim, then the branch head's (webhooks and polls claim both, so a
redelivery, a second receiver or the poller seeing the same sha get the deployment already made);
then the id, the promotion guard, the job (RQ's hash, pushed on the environment's queue), the
record, its indexes (the keys indexes.py gives for its first status), the audit and outbox
entries; the claims last. Lua does not roll back, so every check comes before every write and the
claims come last: an error part way never leaves a delivery claimed without its job.

A claim names a deployment and holds only while that deployment's record exists (one claimed by
an older release that died before recording is free again).

Replies {'taken', id, record hash...} or {'new', id, status, superseded running id or ''}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis

from . import script
from .pending import ON_ITS_WAY

ID = "{id}"
"""Where a key or text template takes the deployment id the script allocates."""

ADMIT = script(
    "admit",
    keys=[
        "sequence",
        "head",
        "delivery",
        "finished_counts",
        "source_succeeded",
        "source_queued",
        "source_running",
        "running",
        "audit",
        "outbox",
        "rq_queues",
        "rq_queue",
    ],
    args=[
        "sha",
        "tracks_head",
        "has_delivery",
        "guarded",
        "record",
        "job_key",
        "job_id",
        "job_data_head",
        "job_data_tail",
        "description",
        "block_reason",
        "reason",
        "audit_maxlen",
        "cancel",
        "cancel_running",
        "delivery_ttl",
        "outbox_maxlen",
        "n_permanent",
        "n_queued",
        "n_blocked",
        "n_record",
        "n_audit",
    ],
    # Further KEYS: the indexes of every record, then those of status queued, then of blocked.
    # Further ARGV: the record's fields, the audit entry's, then RQ's job hash fields.
    body=ON_ITS_WAY
    + """
local function fill(template, id)
  local at = string.find(template, '{id}', 1, true)
  return string.sub(template, 1, at - 1) .. id .. string.sub(template, at + 4)
end
local function holder(key, sha)
  local raw = redis.call('GET', key)
  if not raw then return nil end
  local ok, claim = pcall(cjson.decode, raw)
  if not ok or type(claim) ~= 'table' or type(claim['deployment_id']) ~= 'string' then return nil end
  if sha and claim['sha'] ~= sha then return nil end
  if redis.call('EXISTS', fill(A.record, claim['deployment_id'])) == 0 then return nil end
  return claim['deployment_id']
end
local function taken(id)
  local reply = {'taken', id}
  for _, v in ipairs(redis.call('HGETALL', fill(A.record, id))) do reply[#reply + 1] = v end
  return reply
end
local function keys_from(first, count)
  local out = {}
  for i = first, first + count - 1 do out[#out + 1] = KEYS[i] end
  return out
end

local sha = A.sha
if A.has_delivery == '1' then
  local id = holder(K.delivery, nil)
  if id then return taken(id) end
end
if A.tracks_head == '1' then
  local id = holder(K.head, sha)
  if id then return taken(id) end
end

local id = tostring(redis.call('INCR', K.sequence))
local score = tonumber(id)
local blocked = A.guarded == '1' and redis.call('SISMEMBER', K.source_succeeded, sha) == 0
  and not on_its_way(K.source_queued, K.source_running, A.record, sha)
local status = blocked and 'blocked' or 'queued'
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local n_permanent, n_queued, n_blocked = tonumber(A.n_permanent), tonumber(A.n_queued), tonumber(A.n_blocked)
local first_audit = A.REST + tonumber(A.n_record)
local first_job = first_audit + tonumber(A.n_audit)

local superseded = ''
if not blocked then
  -- RQ's Job.restore reads data uncompressed when it is not zlib's: the JSON goes in as it is.
  local job = {'data', A.job_data_head .. id .. A.job_data_tail, 'description', fill(A.description, id)}
  for i = first_job, #ARGV do job[#job + 1] = ARGV[i] end
  redis.call('HSET', fill(A.job_key, id), unpack(job))
  redis.call('RPUSH', K.rq_queue, fill(A.job_id, id))
  redis.call('SADD', K.rq_queues, K.rq_queue)
  if A.cancel_running == '1' then
    local running = redis.call('GET', K.running)
    if running then
      redis.call('SET', fill(A.cancel, running), id, 'EX', 86400)
      superseded = running
    end
  end
end

local reason = blocked and A.block_reason or A.reason
local record = {'id', cjson.encode(id), 'status', cjson.encode(status), 'reason', reason}
for i = A.REST, first_audit - 1 do record[#record + 1] = ARGV[i] end
redis.call('HSET', fill(A.record, id), unpack(record))
local indexes = keys_from(K.REST, n_permanent)
local first_status = K.REST + n_permanent + (blocked and n_queued or 0)
for _, key in ipairs(keys_from(first_status, blocked and n_blocked or n_queued)) do indexes[#indexes + 1] = key end
for _, key in ipairs(indexes) do redis.call('ZADD', key, score, id) end
if blocked then redis.call('HINCRBY', K.finished_counts, 'blocked', 1) end
local entry = {'t', string.format('%.3f', now_ms / 1000), 'action', 'deploy'}
for i = first_audit, first_job - 1 do entry[#entry + 1] = ARGV[i] end
for _, v in ipairs({'outcome', status, 'deployment', id, 'sha', sha}) do entry[#entry + 1] = v end
redis.call('XADD', K.audit, 'MAXLEN', '~', A.audit_maxlen, '*', unpack(entry))
redis.call('XADD', K.outbox, 'MAXLEN', '~', A.outbox_maxlen, '*', 'deployment', id, 'status', status)

local claim = cjson.encode({sha = sha, deployment_id = id, at = now_ms})
if A.tracks_head == '1' then redis.call('SET', K.head, claim) end
if A.has_delivery == '1' then redis.call('SET', K.delivery, claim, 'EX', A.delivery_ttl) end
return {'new', id, status, superseded}
""",
)


@dataclass(frozen=True)
class Indexes:
    """The keys of the sorted sets a new record joins: always, and per first status (indexes.py)."""

    permanent: Sequence[str]
    queued: Sequence[str]
    blocked: Sequence[str]


def admit(
    conn: Redis,
    keys: Mapping[str, str],
    args: Mapping[str, Any],
    indexes: Indexes,
    record: Sequence[str],
    audit: Sequence[str],
    job: Sequence[str | bytes],
) -> Any:
    """Run the script; args are its named ones less the counts, which the lists give."""
    counts = {
        "n_permanent": len(indexes.permanent),
        "n_queued": len(indexes.queued),
        "n_blocked": len(indexes.blocked),
        "n_record": len(record),
        "n_audit": len(audit),
    }
    return ADMIT(
        conn,
        keys=keys,
        args={**args, **counts},
        more_keys=[*indexes.permanent, *indexes.queued, *indexes.blocked],
        more_args=[*record, *audit, *job],
    )
