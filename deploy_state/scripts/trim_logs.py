"""Log retention's script: delete the logs of final deployments and mark their records, pair by pair.

Atomic per pair, so a record never says "trimmed" while its log is still there, nor the reverse.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from redis import Redis

from .. import keys
from . import script

TRIM = script(
    "trim-logs",
    keys=["total"],
    args=[],
    # total: the environment's log bytes (log_append.py keeps it); less each deleted log's bytes.
    # Further KEYS: (record, log) pairs. Further ARGV: the final statuses, as a record stores them (JSON).
    # Replies per pair: 1 trimmed, 0 nothing to trim, -1 not final yet (left alone).
    body="""
local final = {}
for i = A.REST, #ARGV do final[ARGV[i]] = true end
local out = {}
for i = K.REST, #KEYS, 2 do
  local status = redis.call('hget', KEYS[i], 'status')
  if status and not final[status] then
    out[#out + 1] = -1
  elseif redis.call('del', KEYS[i + 1]) == 1 and status then
    local size = tonumber(redis.call('hget', KEYS[i], 'log_bytes') or '0')
    if size > 0 then redis.call('decrby', K.total, size) end
    redis.call('hset', KEYS[i], 'log_trimmed', 'true', 'log_bytes', 0)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
""",
)


def trim_final_logs(conn: Redis, env: str, ids: Sequence[str], final_statuses: Iterable[str]) -> list[int]:
    """Per id (of env's deployments): 1 its log was deleted, 0 it had none, -1 it is not final yet (kept)."""
    pairs = [key for i in ids for key in (keys.deployment(i), keys.log(i))]
    final = [json.dumps(str(s)) for s in final_statuses]
    replies: Any = TRIM(conn, keys={"total": keys.log_bytes(env)}, more_keys=pairs, more_args=final)
    return [int(reply) for reply in replies]
