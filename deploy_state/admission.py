"""Admission: the one way a deployment starts, whatever asked for it (a push, a poll, the API or the CLI through it).

`Admission(config, connection).admit(request)` turns one DeployRequest into exactly one recorded
deployment with its RQ job enqueued, in ONE Redis round trip (scripts/admit.py says what the
script checks and writes, in which order).

The job is enqueued by dotted path (DEPLOY_JOB): the web process never imports worker code.
RQ's own Job builds the job hash once per (job, environment) (job_template); the script only
fills in what depends on the id allocated inside it: the job's key and id, its description and
its arguments (JSON, as the queues' serializer writes them: a job in Redis is data, never a
pickle).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from enum import Enum
from functools import cached_property, lru_cache
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.utils import now, utcformat

from deploy_config import DeployConfig, EnvironmentConfig
from deploy_config.secrets import secret_env_values
from deploy_text.formatting import short_sha
from deploy_text.redaction import Redactor, config_redactor

from . import keys, outbox
from .indexes import permanent_indexes, status_indexes
from .models import Deployment, Status, Trigger
from .queues import SERIALIZER, queue_name
from .replies import text
from .scripts.admit import ID, Indexes, admit
from .store import AUDIT_MAXLEN, bounded_field

log = logging.getLogger(__name__)

DEPLOY_JOB = "workers.jobs.deploy"
"""The RQ job every deployment runs, by dotted path (its one spelling): the web process never imports worker code."""

JOB_RESULT_TTL = 7 * 24 * 3600
"""Seconds RQ keeps a finished job; the deployment record itself is kept regardless."""

DELIVERY_TTL = 30 * 24 * 3600
"""Seconds a delivery id is remembered; GitHub lets one redeliver for about that long."""


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
        args=(ID,),
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
    marker = ID.encode()
    # RQ's JSONSerializer is json with UTF-8 bytes: the same calls here, typed.
    head, tail = json.dumps((job, None, (ID,), {})).encode().split(marker)
    if SERIALIZER.loads(head + b"42" + tail) != [job, None, ["42"], {}]:  # type: ignore[no-untyped-call]
        raise RuntimeError(f"cannot template the serialized arguments of {job}")  # the serializer changed: a bug
    # As redis-py would encode them: a JobStatus is a str subclass, sent as its value.
    flat = tuple(item.value if isinstance(item, Enum) else text(item) for pair in fields.items() for item in pair)
    job_id = f"deployment-{ID}"
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
        template = job_template(self.job, env.name, int(env.job_timeout))
        enqueued = utcformat(now())
        indexes = Indexes(
            permanent=permanent_indexes(env.name),
            queued=status_indexes(env.name, Status.QUEUED, request.sha),
            blocked=status_indexes(env.name, Status.BLOCKED, request.sha),
        )
        fields = self._record(request, created_at)
        record = [item for name, value in fields.items() for item in (name, json.dumps(value))]
        audit = [
            *("actor", bounded_field(request.actor), "environment", env.name),
            *("trigger", str(request.trigger), "source", request.source),
        ]
        job = [*template.fields, "created_at", enqueued, "enqueued_at", enqueued]
        script_keys, args = _script_keys(env, request, template), self._script_args(env, request, template)
        return admit(self.conn, script_keys, args, indexes, record, audit, job)

    def _script_args(self, env: EnvironmentConfig, request: DeployRequest, template: JobTemplate) -> dict[str, Any]:
        guarded = env.promote_from is not None and not request.force  # the script also asks: is it on its way?
        return {
            "sha": request.sha,
            "tracks_head": _flag(request.trigger in (Trigger.WEBHOOK, Trigger.POLL)),  # the API deploys on demand
            "has_delivery": _flag(bool(request.delivery_id)),
            "guarded": _flag(guarded),
            "record": keys.deployment(ID),
            "job_key": template.job_key,
            "job_id": template.job_id,
            "job_data_head": template.data_head,
            "job_data_tail": template.data_tail,
            "description": f"deploy {env.name} {short_sha(request.sha)} (#{ID})",
            "block_reason": json.dumps(self._block_reason(request) if guarded else ""),
            "reason": json.dumps(request.reason),
            "audit_maxlen": AUDIT_MAXLEN,
            "cancel": keys.cancel_requested(ID),
            "cancel_running": _flag(env.cancel_running),
            "delivery_ttl": DELIVERY_TTL,
            "outbox_maxlen": outbox.MAXLEN,
        }


def _script_keys(env: EnvironmentConfig, request: DeployRequest, template: JobTemplate) -> dict[str, str]:
    source = env.promote_from or env.name
    return {
        "sequence": keys.sequence(),
        "head": keys.head(env.name),
        "delivery": keys.delivery(request.source, request.delivery_id or "-"),  # named even when unused
        "finished_counts": keys.finished_counts(env.name),
        "source_succeeded": keys.succeeded_shas(source),
        "source_queued": keys.queued_sha(source, request.sha),
        "source_running": keys.running(source),
        "running": keys.running(env.name),
        "audit": keys.audit(),
        "outbox": keys.outbox(),
        "rq_queues": Queue.redis_queues_keys,
        "rq_queue": template.queue_key,
    }


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
