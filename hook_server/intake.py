"""Intake: turning a push, a poll or an API request into exactly one recorded, queued deployment.

Two round trips per push: a claim (deploy_state/claims.py: one Lua script checks and claims
the delivery and the branch head, and allocates the id), then one MULTI that records the
deployment, enqueues its job and audits it. Concurrent receivers of one delivery agree on
one deployment; concurrent pushes to one environment do not contend. A request whose MULTI
fails releases its claim, so a redelivery after the 503 makes the deployment.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property

from redis import Redis
from redis.client import Pipeline

from deploy_config import DeployConfig
from deploy_reporting.reporting import enabled as reporting_enabled
from deploy_reporting.reporting import report
from deploy_state import Deployment, DeploymentStore, Status, Trigger, queue_for
from deploy_state.claims import CLAIM_GRACE, Claim, Claims
from deploy_state.promotion import pending_deployment
from deploy_text.formatting import short_sha
from deploy_text.redaction import Redactor, config_redactor

log = logging.getLogger(__name__)

DEPLOY_JOB = "workers.jobs.deploy"
"""The RQ job every deployment runs, by dotted path: the web process never imports worker code."""

JOB_RESULT_TTL = 7 * 24 * 3600
"""Seconds RQ keeps a finished job; the deployment record itself is kept regardless."""

_CLAIM_POLL = 0.005
"""Seconds between looks for the record of a delivery or head another request has just claimed."""

_REPORTERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="deployhook-report")
"""Sends the web process's 'queued' reports: GitHub and chat calls must not hold up the forge's request."""


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
    promoted_from: str = ""
    """A promotion: the environment whose succeeded release this deploys."""


@dataclass(frozen=True)
class IntakeResult:
    deployment: Deployment
    created: bool
    """False when an earlier delivery (or the poller, or a webhook) already made this deployment."""


class Intake:
    """Records and enqueues deployments on an explicitly passed Redis connection."""

    def __init__(
        self, config: DeployConfig, connection: Redis, job: str = DEPLOY_JOB, report_in_background: bool = False
    ) -> None:
        self.config = config
        self.conn = connection
        self.store = DeploymentStore(connection)
        self.claims = Claims(connection)
        self.job = job
        self.report_in_background = report_in_background

    def submit(self, request: DeployRequest) -> IntakeResult:
        """Record and enqueue the request, or return the deployment an earlier one made."""
        request = self._redacted(request)
        claim = self._claim(request)
        while claim.taken:
            existing = self._await_record(claim)
            if existing is not None:
                return IntakeResult(existing, created=False)
            # The holder died between claiming and recording: this request makes the deployment.
            log.warning("claim of deployment %s was abandoned; taking it over", claim.deployment_id)
            claim = self._claim(request, abandoned=claim.deployment_id)
        try:
            deployment = self._new_deployment(request, claim.deployment_id)
            with self.conn.pipeline(transaction=True) as pipe:
                pipe.multi()  # explicitly: RQ's enqueue on a pipeline calls multi() unless one was
                self._write(pipe, deployment, request)
                pipe.execute()
        except BaseException:
            self._release(request, claim)
            raise
        self._after_commit(deployment)
        self._report(deployment)
        return IntakeResult(deployment, created=True)

    @cached_property
    def redactor(self) -> Redactor:
        """Read once per Intake; the web app makes one per request, so an edited env file counts at once."""
        return config_redactor(self.config)

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

    def _claim(self, request: DeployRequest, abandoned: str = "") -> Claim:
        return self.claims.claim(
            request.environment,
            request.sha,
            source=request.source,
            delivery_id=request.delivery_id,
            track_head=_tracks_head(request),
            abandoned=abandoned,
        )

    def _release(self, request: DeployRequest, claim: Claim) -> None:
        try:
            self.claims.release(
                claim,
                request.environment,
                source=request.source,
                delivery_id=request.delivery_id,
                track_head=_tracks_head(request),
            )
        except Exception:  # noqa: BLE001 - the original error matters more; an unreleased claim lapses
            log.warning("could not release the claim of deployment %s", claim.deployment_id, exc_info=True)

    def _await_record(self, claim: Claim) -> Deployment | None:
        """The deployment a taken claim stands for, once recorded; None once the claim is abandoned."""
        deadline = time.monotonic() + max(0.0, CLAIM_GRACE - claim.age)
        while True:
            deployment = self.store.get(claim.deployment_id)
            if deployment is not None or time.monotonic() > deadline:
                return deployment
            time.sleep(_CLAIM_POLL)

    def _new_deployment(self, request: DeployRequest, deployment_id: str) -> Deployment:
        blocked = self._promotion_block(request)
        return Deployment(
            id=deployment_id,
            environment=request.environment,
            sha=request.sha,
            created_at=time.time(),
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
            promoted_from=request.promoted_from,
        )

    def _promotion_block(self, request: DeployRequest) -> str:
        """Why the promotion guard blocks this request, or '' when it may run."""
        source_env = self.config.environments[request.environment].promote_from
        if source_env is None or request.force or self.store.has_succeeded(source_env, request.sha):
            return ""
        if pending_deployment(self.store, source_env, request.sha) is not None:
            return ""  # the worker waits for it (environments.<name>.promotion_wait), then runs or blocks
        return (
            f"sha {short_sha(request.sha)} has no succeeded {source_env} deployment; deploy it to {source_env} first, "
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
                timeout=int(env.job_timeout),
                result_ttl=JOB_RESULT_TTL,
                failure_ttl=JOB_RESULT_TTL,
                description=f"deploy {deployment.environment} {short_sha(deployment.sha)} (#{deployment.id})",
                pipeline=pipe,
            )
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
        log.info("deployment %s queued: %s@%s", deployment.id, env.name, short_sha(deployment.sha))
        running = self.store.running(env.name) if env.cancel_running else None
        if running is not None:
            self.store.request_cancel(running, by=deployment.id)
            log.info("deployment %s will stop at its next step: superseded by %s", running, deployment.id)

    def _report(self, deployment: Deployment) -> None:
        if not reporting_enabled(self.config):
            return
        if self.report_in_background:
            _REPORTERS.submit(report, self.config, self.store, deployment)
        else:
            report(self.config, self.store, deployment)


def _tracks_head(request: DeployRequest) -> bool:
    """Pushes and polls record the branch head they saw; API requests deploy on demand."""
    return request.trigger in (Trigger.WEBHOOK, Trigger.POLL)
