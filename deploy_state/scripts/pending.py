"""The promotion guard's question, asked in Redis: has the source environment this sha on its way?

A production push made together with staging's arrives while staging's deploy of the same sha is
queued or running; that deployment is found here, so the production one can wait for it instead
of being blocked for good. Admission's script asks it too (ON_ITS_WAY is part of its body): one
definition for both.
"""

from __future__ import annotations

from typing import Any

from redis import Redis

from .. import keys
from ..replies import text
from . import script

ON_ITS_WAY = """
-- The newest queued deployment of sha (queued: the environment's queued ids of that sha), else the
-- running one when it deploys sha, or nil. record: the record key template, '{id}' where the id goes.
-- One read each, however many deployments wait: the queue is indexed by sha.
local function on_its_way(queued, running, record, sha)
  local newest = redis.call('ZREVRANGE', queued, 0, 0)[1]
  if newest then return newest end
  local current = redis.call('GET', running)
  if not current then return nil end
  local fields = redis.call('HMGET', string.gsub(record, '{id}', current), 'sha', 'status')
  if not (fields[1] and fields[2]) then return nil end
  local ok_sha, their_sha = pcall(cjson.decode, fields[1])
  local ok_status, status = pcall(cjson.decode, fields[2])
  if ok_sha and ok_status and their_sha == sha and status == 'running' then return current end
  return nil
end
"""

PENDING = script(
    "pending-deployment",
    keys=["queued", "running"],
    args=["record", "sha"],
    body=ON_ITS_WAY + "return on_its_way(K.queued, K.running, A.record, A.sha) or false\n",
)


def pending_deployment_id(conn: Redis, environment: str, sha: str) -> str | None:
    """The newest queued or running deployment of sha in environment, if any."""
    env_keys = {"queued": keys.queued_sha(environment, sha), "running": keys.running(environment)}
    found: Any = PENDING(conn, keys=env_keys, args={"record": keys.deployment("{id}"), "sha": sha})
    return text(found) if found else None
