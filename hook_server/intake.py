"""Intake: turning a push, a poll or an API request into exactly one recorded, queued deployment.

Recording, enqueueing and marking the delivery as seen happen in one Redis transaction,
so a delivery is never marked seen without its deployment, and a redelivery after a
failure (503) works. WATCH makes concurrent receivers of one delivery agree on one
deployment without a lock.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field, replace

from redis import Redis, WatchError
from redis.client import Pipeline

from deploy_config import DeployConfig
from deploy_config.secrets import config_redactor
from deploy_state import Deployment, DeploymentStore, Status, Trigger, queue_for
from deploy_state.reporting import report

log = logging.getLogger(__name__)

DEPLOY_JOB = "workers.jobs.deploy"
"""The RQ job every deployment runs, by dotted path: the web process never imports worker code."""

JOB_RESULT_TTL = 7 * 24 * 3600
"""Seconds RQ keeps a finished job; the deployment record itself is kept regardless."""

_MAX_ATTEMPTS = 50
_BACKOFF = 0.002
"""Seconds: a transaction that lost a race waits up to attempt x this (jittered) before retrying, so that
concurrent pushes to one environment, which all WATCH its head key, take turns instead of colliding again."""


@dataclass(frozen=True)
class DeployRequest:
    environment: str
    sha: str
    trigger: Trigger
    source: str
    """github, gitea, gitlab, poll, or api."""
    actor: str
    """Who asked: the pusher, the API token's owner, or 'poll'."""
    ref: str = ""
    repository: str = ""
    message: str = ""
    commit_url: str = ""
    delivery_id: str = ""
    reason: str = ""
    force: bool = False
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IntakeResult:
    deployment: Deployment
    created: bool
    """False when an earlier delivery (or the poller, or a webhook) already made this deployment."""


class Intake:
    """Records and enqueues deployments on an explicitly passed Redis connection."""

    def __init__(self, config: DeployConfig, connection: Redis, job: str = DEPLOY_JOB) -> None:
        self.config = config
        self.conn = connection
        self.store = DeploymentStore(connection)
        self.job = job

    def submit(self, request: DeployRequest) -> IntakeResult:
        """Record and enqueue the request, or return the deployment an earlier one made."""
        request = self._redacted(request)
        watched = self.store.intake_keys(request.environment, request.source, request.delivery_id)
        for attempt in range(_MAX_ATTEMPTS):
            with self.conn.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*watched)  # type: ignore[no-untyped-call]
                    existing = self._existing(pipe, request)
                    if existing is not None:
                        pipe.reset()
                        return IntakeResult(existing, created=False)
                    deployment = self._new_deployment(request)
                    pipe.multi()
                    self._write(pipe, deployment, request)
                    pipe.execute()
                except WatchError:
                    # Another receiver got there first: look again, after a jittered pause.
                    time.sleep(random.uniform(0, _BACKOFF * (attempt + 1)))
                    continue
            self._after_commit(deployment)
            report(self.config, self.store, deployment)
            return IntakeResult(deployment, created=True)
        # A WatchError is a RedisError: the receiver answers 503 and the forge may redeliver.
        raise WatchError(f"intake of {request.environment}@{request.sha} kept conflicting; giving up")

    def _redacted(self, request: DeployRequest) -> DeployRequest:
        """The request with known secret values masked in its free text: a pusher may paste one into a commit."""
        redact = config_redactor(self.config)
        return replace(
            request,
            actor=redact(request.actor),
            ref=redact(request.ref),
            message=redact(request.message),
            commit_url=redact(request.commit_url),
            reason=redact(request.reason),
        )

    def _existing(self, pipe: Pipeline, request: DeployRequest) -> Deployment | None:
        """The deployment this request duplicates: same delivery, or a branch head already taken."""
        if request.delivery_id:
            delivered = self.store.delivered(pipe, request.source, request.delivery_id)
            if delivered is not None:
                return delivered
        if request.trigger in (Trigger.WEBHOOK, Trigger.POLL):
            return self.store.head_deployment(pipe, request.environment, request.sha)
        return None

    def _new_deployment(self, request: DeployRequest) -> Deployment:
        blocked = self._promotion_block(request)
        return self.store.new(
            request.environment,
            request.sha,
            ref=request.ref,
            repository=request.repository,
            pusher=request.actor,
            message=request.message,
            commit_url=request.commit_url,
            trigger=request.trigger,
            source=request.source,
            delivery_id=request.delivery_id,
            reason=blocked or request.reason,
            force=request.force,
            status=Status.BLOCKED if blocked else Status.QUEUED,
        )

    def _promotion_block(self, request: DeployRequest) -> str:
        """Why the promotion guard blocks this request, or '' when it may run."""
        source_env = self.config.environments[request.environment].promote_from
        if source_env is None or request.force or self.store.has_succeeded(source_env, request.sha):
            return ""
        return (
            f"sha {request.sha[:12]} has no succeeded {source_env} deployment; deploy it to {source_env} first, "
            f"or force it through the API"
        )

    def _write(self, pipe: Pipeline, deployment: Deployment, request: DeployRequest) -> None:
        self.store.add(deployment, pipe)
        if deployment.status == Status.QUEUED:
            env = self.config.environments[deployment.environment]
            queue_for(self.conn, deployment.environment).enqueue_call(
                self.job,
                args=(deployment.id,),
                job_id=f"deployment-{deployment.id}",
                timeout=int(env.deploy_timeout),
                result_ttl=JOB_RESULT_TTL,
                failure_ttl=JOB_RESULT_TTL,
                description=f"deploy {deployment.environment} {deployment.sha[:12]} (#{deployment.id})",
                pipeline=pipe,
            )
        if request.trigger in (Trigger.WEBHOOK, Trigger.POLL):
            self.store.mark_head(pipe, deployment)
        if request.delivery_id:
            self.store.mark_delivery(pipe, request.source, request.delivery_id, deployment.id)
        self.store.audit(
            "deploy",
            request.actor,
            str(deployment.status),
            pipe=pipe,
            deployment=deployment.id,
            environment=deployment.environment,
            sha=deployment.sha,
            trigger=str(request.trigger),
            source=request.source,
        )

    def _after_commit(self, deployment: Deployment) -> None:
        env = self.config.environments[deployment.environment]
        if deployment.status == Status.BLOCKED:
            log.warning("deployment %s of %s blocked: %s", deployment.id, env.name, deployment.reason)
            return
        log.info("deployment %s queued: %s@%s", deployment.id, env.name, deployment.sha[:12])
        running = self.store.running(env.name)
        if env.cancel_running and running is not None:
            self.store.request_cancel(running, by=deployment.id)
            log.info("deployment %s will stop at its next step: superseded by %s", running, deployment.id)
