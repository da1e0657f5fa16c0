"""The (environment, status) index backfill's script (listing.py): a batch of records at a time.

It reads each record's environment and status inside the script, so a status change running
meanwhile cannot leave an id behind.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis

from .. import keys
from . import script

BACKFILL = script(
    "backfill-indexes",
    keys=[],
    args=["record", "index"],
    # record and index: key templates with '{id}', '{env}' and '{status}' placeholders; then the ids.
    # Values in a record hash are JSON: '"staging"' decodes to staging.
    body="""
for i = A.REST, #ARGV do
  local id = ARGV[i]
  local record = string.gsub(A.record, '{id}', id)
  local fields = redis.call('HMGET', record, 'environment', 'status')
  if fields[1] and fields[2] then
    local env = cjson.decode(fields[1])
    local status = cjson.decode(fields[2])
    local index = string.gsub(string.gsub(A.index, '{env}', env), '{status}', status)
    redis.call('ZADD', index, tonumber(id), id)
  end
end
return #ARGV - A.REST + 1
""",
)


def backfill_batch(conn: Redis, ids: Sequence[str]) -> int:
    """Add these records to their (environment, status) index; how many ids it read."""
    templates = {"record": keys.deployment("{id}"), "index": keys.index_env_status("{env}", "{status}")}
    return int(BACKFILL(conn, keys={}, args=templates, more_args=ids))
