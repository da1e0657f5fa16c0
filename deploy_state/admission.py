"""Admission: the one way a deployment starts, whatever asked for it (a push, a poll, the API or the CLI through it).

`Admission(config, connection).admit(request)` turns one DeployRequest into exactly one recorded
deployment with its RQ job enqueued, in ONE Redis round trip: a Lua script refuses a replayed push
(one older than the newest accepted for its branch), checks the delivery
and the branch head (webhooks and polls claim both, so a redelivery, a second receiver or the
poller seeing the same sha get the deployment already made), allocates the id, applies the
promotion guard, writes the record, its indexes, the audit entry and the outbox entry, writes
RQ's job hash and pushes the job onto the environment's queue, and only then claims the delivery
and the head: a delivery counts as seen only once its job is enqueued.

The job is enqueued by dotted path (DEPLOY_JOB): the web process never imports worker code.
RQ's own Job builds the job hash once per (job, environment) (job_template); the script only
fills in what depends on the id allocated inside it: the job's key and id, its description and
its arguments (JSON, as the queues' serializer writes them: a job in Redis is data, never a
pickle). Keys derived from that id are built inside the script, which therefore
needs a single Redis server (not Redis Cluster), which is what deployhook runs on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from enum import Enum
from functools import cached_property, lru_cache
from typing import Any

from redis import Redis
from redis.exceptions import NoScriptError
from rq import Queue
from rq.job import Job, JobStatus
from rq.utils import now, utcformat

from deploy_config import DeployConfig, DeployError
from deploy_config.secrets import secret_env_values
from deploy_text.formatting import short_sha, utc_time
from deploy_text.redaction import Redactor, config_redactor

from . import keys, outbox
from .models import Deployment, Status, Trigger
from .queues import SERIALIZER, queue_name
from .replies import text
from .store import AUDIT_MAXLEN

log = logging.getLogger(__name__)

DEPLOY_JOB = "workers.jobs.deploy"
"""The RQ job every deployment runs, by dotted path (its one spelling): the web process never imports worker code."""

JOB_RESULT_TTL = 7 * 24 * 3600
"""Seconds RQ keeps a finished job; the deployment record itself is kept regardless."""

DELIVERY_TTL = 30 * 24 * 3600
"""Seconds a delivery id is remembered; GitHub lets one redeliver for about that long."""

_ID = "{id}"
"""Where a key or text template takes the deployment id the script allocates."""

# KEYS: 1 sequence, 2 head, 3 delivery, 4 index_all, 5 index_env, 6 queued(env), 7 status index
# queued, 8 status index blocked, 9 finished counts, 10 succeeded shas of promote_from, 11 running
# pointer, 12 audit, 13 outbox, 14 RQ's set of queues, 15 RQ's queue, 16 and 17 the environment's
# status indexes queued and blocked, 18 the newest accepted push time, 19 and 20 promote_from's
# queued index and running pointer (the promotion guard's "on its way"). ARGV: see Admission._run.
# A claim (head or delivery) names a deployment and holds only while that deployment's record
# exists (one claimed by an older release that died before recording is free again). Writes come
# after every check and the claims last, so that an error part way (Lua does not roll back) never
# leaves a delivery claimed without its job.
# Replies {'taken', id, record hash...}, {'new', id, status, superseded running id or ''} or
# {'older', ''} (a push older than the newest accepted for its branch: nothing written).
_ADMIT = """
local function fill(template, id)
  local at = string.find(template, '{id}', 1, true)
  return string.sub(template, 1, at - 1) .. id .. string.sub(template, at + 4)
end
local function holder(key, sha)
  local raw = redis.call('GET', KEYS[key])
  if not raw then return nil end
  local ok, claim = pcall(cjson.decode, raw)
  if not ok or type(claim) ~= 'table' or type(claim['deployment_id']) ~= 'string' then return nil end
  if sha and claim['sha'] ~= sha then return nil end
  if redis.call('EXISTS', fill(ARGV[5], claim['deployment_id'])) == 0 then return nil end
  return claim['deployment_id']
end
local function taken(id)
  local reply = {'taken', id}
  for _, v in ipairs(redis.call('HGETALL', fill(ARGV[5], id))) do reply[#reply + 1] = v end
  return reply
end
-- Whether promote_from has a queued or running deployment of sha: then the worker waits for it
-- (promotion_wait) instead of the deployment being blocked for good now. The same question as
-- promotion.pending_deployment, which the worker asks while it waits: change them together.
local function on_its_way(sha)
  local ids = redis.call('ZRANGE', KEYS[19], 0, -1)
  local running = redis.call('GET', KEYS[20])
  if running then ids[#ids + 1] = running end
  for _, id in ipairs(ids) do
    local fields = redis.call('HMGET', fill(ARGV[5], id), 'sha', 'status')
    if fields[1] and fields[2] then
      local ok_sha, their_sha = pcall(cjson.decode, fields[1])
      local ok_status, status = pcall(cjson.decode, fields[2])
      if ok_sha and ok_status and their_sha == sha and (status == 'queued' or status == 'running') then
        return true
      end
    end
  end
  return false
end
-- zlib's format around one stored (uncompressed) deflate block: what RQ's Job.restore decompresses.
local function zlib_stored(s)
  local a, b = 1, 0
  for i = 1, #s do a = (a + string.byte(s, i)) % 65521; b = (b + a) % 65521 end
  return '\\120\\1\\1' .. struct.pack('<I2<I2', #s, 65535 - #s) .. s .. struct.pack('>I4', b * 65536 + a)
end

local sha = ARGV[1]
-- Equal times pass: two pushes in one second, or a redelivery of the newest (the claims dedupe those).
if ARGV[20] ~= '' then
  local newest = tonumber(redis.call('GET', KEYS[18]) or '')
  if newest and tonumber(ARGV[20]) < newest then return {'older', ''} end
  redis.call('SET', KEYS[18], ARGV[20])
end
if ARGV[3] == '1' then
  local id = holder(3, nil)
  if id then return taken(id) end
end
if ARGV[2] == '1' then
  local id = holder(2, sha)
  if id then return taken(id) end
end

local id = tostring(redis.call('INCR', KEYS[1]))
local score = tonumber(id)
local blocked = ARGV[4] == '1' and redis.call('SISMEMBER', KEYS[10], sha) == 0 and not on_its_way(sha)
local status = blocked and 'blocked' or 'queued'
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local nrecord, naudit = tonumber(ARGV[18]), tonumber(ARGV[19])
local first_audit, first_job = 21 + nrecord, 21 + nrecord + naudit

local superseded = ''
if not blocked then
  local job_id = fill(ARGV[7], id)
  local data = ARGV[8] .. id .. ARGV[9]
  local job = {'data', zlib_stored(data), 'description', fill(ARGV[10], id)}
  for i = first_job, #ARGV do job[#job + 1] = ARGV[i] end
  redis.call('HSET', fill(ARGV[6], id), unpack(job))
  redis.call('RPUSH', KEYS[15], job_id)
  redis.call('SADD', KEYS[14], KEYS[15])
  if ARGV[15] == '1' then
    local running = redis.call('GET', KEYS[11])
    if running then
      redis.call('SET', fill(ARGV[14], running), id, 'EX', 86400)
      superseded = running
    end
  end
end

local record = {'id', cjson.encode(id), 'status', cjson.encode(status), 'reason', blocked and ARGV[11] or ARGV[12]}
for i = 21, first_audit - 1 do record[#record + 1] = ARGV[i] end
redis.call('HSET', fill(ARGV[5], id), unpack(record))
redis.call('ZADD', KEYS[4], score, id)
redis.call('ZADD', KEYS[5], score, id)
if blocked then
  redis.call('ZADD', KEYS[8], score, id)
  redis.call('ZADD', KEYS[17], score, id)
  redis.call('HINCRBY', KEYS[9], 'blocked', 1)
else
  redis.call('ZADD', KEYS[7], score, id)
  redis.call('ZADD', KEYS[16], score, id)
  redis.call('ZADD', KEYS[6], score, id)
end
local entry = {'t', string.format('%.3f', now_ms / 1000), 'action', 'deploy'}
for i = first_audit, first_job - 1 do entry[#entry + 1] = ARGV[i] end
for _, v in ipairs({'outcome', status, 'deployment', id, 'sha', sha}) do entry[#entry + 1] = v end
redis.call('XADD', KEYS[12], 'MAXLEN', '~', ARGV[13], '*', unpack(entry))
redis.call('XADD', KEYS[13], 'MAXLEN', '~', ARGV[17], '*', 'deployment', id, 'status', status)

local claim = cjson.encode({sha = sha, deployment_id = id, at = now_ms})
if ARGV[2] == '1' then redis.call('SET', KEYS[2], claim) end
if ARGV[3] == '1' then redis.call('SET', KEYS[3], claim, 'EX', ARGV[16]) end
return {'new', id, status, superseded}
"""
_ADMIT_SHA = hashlib.sha1(_ADMIT.encode()).hexdigest()


@dataclass(frozen=True)
class DeployRequest:
    """What asks for a deployment: everything the record is built from."""

    environment: str
    sha: str
    trigger: Trigger
    source: str
    """github, gitea, gitlab, poll or api."""
    actor: str
    """Who asked: the pusher, the API token's name, or 'poll'."""
    ref: str = ""
    repository: str = ""
    message: str = ""
    commit_url: str = ""
    delivery_id: str = ""
    reason: str = ""
    force: bool = False
    rollback_to: str = ""
    """A manual rollback: the succeeded deployment whose release (its kept images) goes back, unbuilt."""
    promoted_from: str = ""
    """A promotion: the environment whose succeeded release this deploys (checkout accepts its branch)."""
    pushed_at: float | None = None
    """A push's time (Unix seconds) from its signed payload: an older one than the newest accepted is refused."""

    @classmethod
    def again(
        cls, deployment: Deployment, trigger: Trigger, source: str, actor: str, reason: str, force: bool
    ) -> DeployRequest:
        """A request to deploy an earlier deployment's commit again (a redeploy, a rollback to it)."""
        return cls(
            environment=deployment.environment,
            sha=deployment.sha,
            trigger=trigger,
            source=source,
            actor=actor,
            ref=deployment.ref,
            repository=deployment.repository,
            message=deployment.message,
            commit_url=deployment.commit_url,
            reason=reason,
            force=force,
            promoted_from=deployment.promoted_from,
        )


class OlderPush(DeployError):
    """A push older than the newest one accepted for its branch: a replay, or a late redelivery; nothing recorded.

    A forge's delivery id is not covered by its signature, so a captured push can be re-sent under a
    new id; its payload's push time is covered, and a replay carries the old one.
    """


@dataclass(frozen=True)
class Admitted:
    deployment: Deployment
    created: bool
    """False when an earlier delivery (or the poller, or a webhook) already made this deployment."""


@dataclass(frozen=True)
class JobTemplate:
    """RQ's job hash for one (job, environment), less what depends on the deployment id."""

    fields: tuple[str, ...]
    """Field, value, field, value...: everything but data, description and the two timestamps."""
    data_head: bytes
    data_tail: bytes
    """The serialized (job, None, (id,), {}) before and after the id: JSON, the id a digit string."""
    job_key: str
    job_id: str
    queue_key: str


@lru_cache(maxsize=64)
def job_template(job: str, environment: str, timeout: int) -> JobTemplate:
    """The job hash RQ itself writes for `job` on environment's queue (Job.create and to_dict, as enqueue does)."""
    queue = Queue(queue_name(environment), connection=Redis())  # never connects: only its key names are read
    rq_job = Job.create(
        job,
        args=(_ID,),
        connection=queue.connection,
        id="deployment-0",  # RQ checks the id's characters; the script writes the real one
        timeout=timeout,
        result_ttl=JOB_RESULT_TTL,
        failure_ttl=JOB_RESULT_TTL,
        origin=queue.name,
        status=JobStatus.QUEUED,
        description="",
        serializer=SERIALIZER,
    )
    rq_job.enqueued_at = now()
    fields = rq_job.to_dict()
    for per_request in ("data", "description", "created_at", "enqueued_at"):
        fields.pop(per_request, None)
    marker = _ID.encode()
    # RQ's JSONSerializer is json with UTF-8 bytes: the same calls here, typed.
    head, tail = json.dumps((job, None, (_ID,), {})).encode().split(marker)
    if SERIALIZER.loads(head + b"42" + tail) != [job, None, ["42"], {}]:  # type: ignore[no-untyped-call]
        raise RuntimeError(f"cannot template the serialized arguments of {job}")  # the serializer changed: a bug
    # As redis-py would encode them: a JobStatus is a str subclass, sent as its value.
    flat = tuple(item.value if isinstance(item, Enum) else text(item) for pair in fields.items() for item in pair)
    job_id = f"deployment-{_ID}"
    return JobTemplate(flat, head, tail, f"{Job.redis_job_namespace_prefix}{job_id}", job_id, queue.key)


class Admission:
    """Admits deployment requests on an explicitly passed Redis connection."""

    def __init__(self, config: DeployConfig, connection: Redis, job: str = DEPLOY_JOB) -> None:
        self.config = config
        self.conn = connection
        self.job = job

    @cached_property
    def redactor(self) -> Redactor:
        """The config's redactor, read again whenever the env file or a secret variable changed."""
        return _redactor(self.config)

    def admit(self, request: DeployRequest) -> Admitted:
        """Record and enqueue the request, or return the deployment an earlier one made."""
        request = self._redacted(request)
        created_at = time.time()
        reply: list[Any] = self._run(request, created_at)
        kind, deployment_id = text(reply[0]), text(reply[1])
        if kind == "older":
            raise OlderPush(
                f"push of {short_sha(request.sha)} to {request.environment} was pushed at "
                f"{utc_time(request.pushed_at)}, "
                "before the newest push accepted for it (a replay?); nothing was deployed"
            )
        if kind == "taken":
            record = dict(zip(reply[2::2], reply[3::2], strict=True))
            return Admitted(Deployment.from_hash(record), created=False)
        status, superseded = Status(text(reply[2])), text(reply[3])
        deployment = self._deployment(request, deployment_id, status, created_at)
        if status == Status.BLOCKED:
            log.warning("deployment %s of %s blocked: %s", deployment_id, request.environment, deployment.reason)
        else:
            log.info("deployment %s queued: %s@%s", deployment_id, request.environment, short_sha(request.sha))
        if superseded:
            log.info("deployment %s will stop at its next step: superseded by %s", superseded, deployment_id)
        return Admitted(deployment, created=True)

    def _redacted(self, request: DeployRequest) -> DeployRequest:
        """The request with known secret values masked in its free text: a pusher may paste one into a commit."""
        redact = self.redactor
        return replace(
            request,
            actor=redact(request.actor),
            ref=redact(request.ref),
            message=redact(request.message),
            commit_url=redact(request.commit_url),
            reason=redact(request.reason),
        )

    def _block_reason(self, request: DeployRequest) -> str:
        """Why the promotion guard would block this request (the script decides whether it does)."""
        source_env = self.config.environments[request.environment].promote_from
        return (
            f"sha {short_sha(request.sha)} has no succeeded {source_env} deployment; deploy it to {source_env} first, "
            f"or force it through the API"
        )

    @staticmethod
    def _record(request: DeployRequest, created_at: float) -> dict[str, Any]:
        """The record's fields a request sets (the script adds id, status and reason; the rest keep defaults)."""
        return {
            "environment": request.environment,
            "sha": request.sha,
            "ref": request.ref,
            "repository": request.repository,
            "pusher": request.actor,
            "message": request.message,
            "commit_url": request.commit_url,
            "trigger": str(request.trigger),
            "source": request.source,
            "delivery_id": request.delivery_id,
            "force": request.force,
            "created_at": created_at,
            "rollback_to": request.rollback_to,
            "promoted_from": request.promoted_from,
        }

    def _deployment(self, request: DeployRequest, deployment_id: str, status: Status, created_at: float) -> Deployment:
        reason = self._block_reason(request) if status == Status.BLOCKED else request.reason
        return Deployment(id=deployment_id, status=status, reason=reason, **self._record(request, created_at))

    def _run(self, request: DeployRequest, created_at: float) -> Any:
        env = self.config.environments[request.environment]
        tracks_head = request.trigger in (Trigger.WEBHOOK, Trigger.POLL)  # API requests deploy on demand
        guarded = env.promote_from is not None and not request.force  # the script also asks: is it on its way?
        template = job_template(self.job, env.name, int(env.job_timeout))
        record = [
            item for name, value in self._record(request, created_at).items() for item in (name, json.dumps(value))
        ]
        audit = [
            "actor",
            request.actor,
            "environment",
            env.name,
            "trigger",
            str(request.trigger),
            "source",
            request.source,
        ]
        enqueued = utcformat(now())
        script_keys = [
            keys.sequence(),
            keys.head(env.name),
            keys.delivery(request.source, request.delivery_id or "-"),  # a script names every key, even unused
            keys.index_all(),
            keys.index_environment(env.name),
            keys.queued(env.name),
            keys.index_status(Status.QUEUED),
            keys.index_status(Status.BLOCKED),
            keys.finished_counts(env.name),
            keys.succeeded_shas(env.promote_from or env.name),
            keys.running(env.name),
            keys.audit(),
            keys.outbox(),
            Queue.redis_queues_keys,
            template.queue_key,
            keys.index_env_status(env.name, Status.QUEUED),
            keys.index_env_status(env.name, Status.BLOCKED),
            keys.newest_push(env.name),
            keys.queued(env.promote_from or env.name),
            keys.running(env.promote_from or env.name),
        ]
        argv: list[str | bytes | int] = [
            request.sha,
            _flag(tracks_head),
            _flag(bool(request.delivery_id)),
            _flag(guarded),
            keys.deployment(_ID),
            template.job_key,
            template.job_id,
            template.data_head,
            template.data_tail,
            f"deploy {env.name} {short_sha(request.sha)} (#{_ID})",
            json.dumps(self._block_reason(request) if guarded else ""),
            json.dumps(request.reason),
            AUDIT_MAXLEN,
            keys.cancel_requested(_ID),
            _flag(env.cancel_running),
            DELIVERY_TTL,
            outbox.MAXLEN,
            len(record),
            len(audit),
            "" if request.pushed_at is None else repr(float(request.pushed_at)),
            *record,
            *audit,
            *template.fields,
            "created_at",
            enqueued,
            "enqueued_at",
            enqueued,
        ]
        try:
            return self.conn.evalsha(_ADMIT_SHA, len(script_keys), *script_keys, *argv)
        except NoScriptError:  # first use on this server (or after a restart): send the script itself
            return self.conn.eval(_ADMIT, len(script_keys), *script_keys, *argv)


_REDACTORS: dict[tuple[Any, ...], Redactor] = {}
"""config_redactor's result per everything it reads (env file, its stat, the secret values, public_env, masked_env,
repository.url): the web app admits per request, and reading and parsing the env file each time was a tenth of a
push's CPU."""


def _redactor(config: DeployConfig) -> Redactor:
    """config_redactor, built again only when the env file (its mtime, size, inode), a secret variable or the
    config's masking fields changed."""
    try:
        stat = config.env_file.stat()
        stamp: tuple[int, ...] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    except OSError:
        stamp = ()
    key = (
        str(config.env_file),
        stamp,
        tuple(secret_env_values(config)),
        tuple(config.public_env),
        tuple(config.masked_env),
        config.repository.url,
    )
    redactor = _REDACTORS.get(key)
    if redactor is None:
        if len(_REDACTORS) > 16:  # configs and edits come and go: keep it small
            _REDACTORS.clear()
        redactor = _REDACTORS[key] = config_redactor(config)
    return redactor


def _flag(value: bool) -> str:
    return "1" if value else "0"
