"""The RQ job every deployment runs: lock, coalesce, run the pipeline, record the outcome.

RQ retries are never attached: a half-finished deployment must not silently run again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from redis import Redis, RedisError
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from deploy_config import DeployConfig, DeployError
from deploy_state import (
    Deployment,
    DeploymentStore,
    EnvironmentLock,
    LeaseKeeper,
    Status,
    StatusConflict,
    StepStatus,
    environment_lock,
)
from deploy_text.formatting import short_sha
from deploy_text.redaction import config_redactor

from .engine_status import record_containers
from .promotion import await_promotion

if TYPE_CHECKING:
    # At run time in _run: the context loads the Docker SDK, which a worker waiting for a job does without.
    from .context import DeploymentContext

log = logging.getLogger(__name__)

Pipeline = Callable[["DeploymentContext"], Status]
"""Runs a deployment's steps; returns SUCCEEDED or ROLLED_BACK, raises DeployError on failure."""

LOCK_POLL_INTERVAL = 0.5
"""Seconds between attempts to take a busy environment lock."""


def deploy(deployment_id: str, config: DeployConfig) -> str:
    """The deploy job, enqueued by the web process by its dotted path (deploy_state.admission.DEPLOY_JOB)."""
    from .pipeline import run

    return run_deployment(deployment_id, run, None, config)


def run_deployment(deployment_id: str, pipeline: Pipeline, connection: Redis | None, config: DeployConfig) -> str:
    """Run one deployment under its environment's lock; returns the final status (connection None: the job's)."""
    began = time.monotonic()  # RQ's job timeout counts from here too, lock wait included
    conn = connection if connection is not None else _job_connection()
    store = DeploymentStore(conn)
    deployment = store.require(deployment_id)
    if deployment.is_final:
        log.info("deployment %s is already %s; nothing to do", deployment.id, deployment.status)
        return deployment.status
    lock = _deployment_lock(conn, deployment, config)
    if not _wait_for_lock(lock, store, deployment):
        return store.require(deployment_id).status
    keeper = LeaseKeeper(lock)
    keeper.start()
    try:
        recover_lost(store, deployment.environment, config)
        blocked, waited = await_promotion(store, config, deployment, lambda: _interrupted(store, deployment_id))
        began += waited  # deploy_timeout counts from the end of the wait; job_timeout allows for it
        # Read it again under the lock: it may have been cancelled or superseded while this job waited.
        deployment = store.require(deployment_id)
        if deployment.is_final:
            log.info("deployment %s was %s while it waited; nothing to do", deployment.id, deployment.status)
            return deployment.status
        newer = _newer(store, deployment)
        if newer is not None:
            return _supersede(store, deployment, newer).status
        if blocked:
            return _block(store, deployment, blocked).status
        try:
            running = store.set_status(deployment, Status.RUNNING, expect=deployment.status)
        except StatusConflict as conflict:
            log.info("deployment %s not started: %s", deployment.id, conflict)
            return conflict.current
        return _run(store, config, running, pipeline, began, keeper)
    finally:
        _trim_logs(store, deployment.environment, config)
        keeper.stop()
        lock.release()


def _run(
    store: DeploymentStore,
    config: DeployConfig,
    deployment: Deployment,
    pipeline: Pipeline,
    began: float,
    keeper: LeaseKeeper,
) -> Status:
    from .context import Cancelled, DeploymentContext

    env = config.environments[deployment.environment]
    context = DeploymentContext(config, env, store, deployment, config_redactor(config))
    context.deadline = began + env.deploy_timeout
    context.lock_lost, context.lock_held = keeper.lost, keeper.confirm
    log.info("deployment %s: %s@%s running", deployment.id, env.name, short_sha(deployment.sha))
    try:
        status = pipeline(context)
        _finish(store, deployment, status)
    except Cancelled as cancelled:
        context.log(str(cancelled))
        status = Status(_supersede(store, deployment, cancelled.by).status)
    except DeployError as exc:
        status = _fail(store, context, str(exc))
    except RedisError as exc:
        status = _fail(store, context, f"Redis stayed unreachable {_during(deployment)} longer than its retries: {exc}")
    except JobTimeoutException:
        # Only a step that hung past deploy_timeout and the rollback margin gets here (see job_timeout).
        status = _fail(
            store,
            context,
            f"timed out after {env.job_timeout:g}s: a step hung past environments.{env.name}.deploy_timeout "
            f"({env.deploy_timeout:g}s) and the time allowed for a rollback",
        )
    except Exception as exc:
        log.exception("deployment %s failed with an unexpected error", deployment.id)
        status = _fail(store, context, f"internal error: {exc!r}; the worker's log has the traceback")
    finally:
        _record_containers(context)
        context.close()
    log.info("deployment %s: %s", deployment.id, status)
    return status


def _record_containers(context: DeploymentContext) -> None:
    """The environment's containers as the deployment left them, for the page at once (the worker's next round
    is up to a minute away): best-effort, through the engine still open, never failing the deployment."""
    if not context.reached_engine:
        return  # it never reached the engine: nothing changed there, and a dead one would cost its timeout again
    try:
        record_containers(context.store, context.env, context.engine)
    except Exception:
        log.warning(
            "deployment %s: recording the containers of %s for the page failed",
            context.deployment.id,
            context.env.name,
            exc_info=True,
        )


def _trim_logs(store: DeploymentStore, env: str, config: DeployConfig) -> None:
    """Log retention, best-effort: Redis must not grow without bound, but a deployment never fails over it."""
    page = config.status_page
    try:
        store.trim_logs(env, page.log_retention, page.log_max_total_bytes)
    except Exception:
        log.warning("trimming the logs of %s beyond the newest %d failed", env, page.log_retention, exc_info=True)


def _during(deployment: Deployment) -> str:
    """The step an error stopped: the last one begun (its step() has marked it failed by now)."""
    return f"during {deployment.steps[-1].name}" if deployment.steps else "before the first step"


def _fail(store: DeploymentStore, context: DeploymentContext, reason: str) -> Status:
    reason = context.redact(reason)
    context.log(f"deployment failed: {reason}")
    return Status(_finish(store, context.deployment, Status.FAILED, reason=reason).status)


def _finish(store: DeploymentStore, deployment: Deployment, status: Status, **fields: str) -> Deployment:
    """Move the deployment to a final status (the reporter tells the outside world, from the outbox)."""
    return store.set_status(deployment, status, **fields)


def _supersede(store: DeploymentStore, deployment: Deployment, by: str) -> Deployment:
    """Mark it superseded, unless its status changed since it was read (e.g. cancelled meanwhile)."""
    try:
        superseded = _finish(
            store,
            deployment,
            Status.SUPERSEDED,
            expect=deployment.status,
            superseded_by=by,
            reason=f"superseded by deployment {by}",
        )
    except StatusConflict as conflict:
        log.info("deployment %s not superseded: %s", deployment.id, conflict)
        return store.require(deployment.id)
    log.info("deployment %s superseded by %s", deployment.id, by)
    return superseded


def _block(store: DeploymentStore, deployment: Deployment, reason: str) -> Deployment:
    """The promotion guard stops it: blocked, unless its status changed since it was read."""
    try:
        return _finish(store, deployment, Status.BLOCKED, expect=deployment.status, reason=reason)
    except StatusConflict as conflict:
        log.info("deployment %s not blocked: %s", deployment.id, conflict)
        return store.require(deployment.id)


def _interrupted(store: DeploymentStore, deployment_id: str) -> bool:
    """Whether a wait should end early: the deployment ended (cancelled) or a newer one is queued."""
    current = store.require(deployment_id)
    return current.is_final or _newer(store, current) is not None


def _newer(store: DeploymentStore, deployment: Deployment) -> str | None:
    """A newer deployment of the same environment that is queued or has already started, if any.

    A newer one that already started counts too: with two workers, an older deployment still
    waiting for the lock must not run after the newer one took it, or an old sha would ship last.
    """
    env = deployment.environment
    candidates = [int(i) for i in (store.newest_queued(env), store.newest_started(env)) if i is not None]
    newest = max(candidates, default=0)
    return str(newest) if newest > int(deployment.id) else None


def _wait_for_lock(lock: EnvironmentLock, store: DeploymentStore, deployment: Deployment) -> bool:
    """Take the environment lock; False if, while waiting, this deployment was superseded or ended."""
    while not lock.acquire():
        current = store.require(deployment.id)
        if current.is_final:
            return False
        newer = _newer(store, current)
        if newer is not None:
            _supersede(store, current, newer)
            return False
        time.sleep(LOCK_POLL_INTERVAL)
    return True


def recover_lost(store: DeploymentStore, environment: str, config: DeployConfig, how: str = "") -> Deployment | None:
    """Mark failed a deployment left 'running' by a worker that died; call only while holding the lock."""
    running_id = store.running(environment)
    lost = store.get(running_id) if running_id else None
    if lost is None or lost.status != Status.RUNNING:
        return None
    step = next((s.name for s in reversed(lost.steps) if s.status == StepStatus.RUNNING), "start")
    reason = f"worker lost during {step}" + (f" ({how})" if how else "")
    for s in lost.steps:
        if s.status == StepStatus.RUNNING:
            store.finish_step(lost, s, StepStatus.FAILED, reason)
    store.append_log(lost.id, f"deployment failed: {reason}")
    log.warning("deployment %s: %s", lost.id, reason)
    return _finish(store, lost, Status.FAILED, reason=reason)


def recover_lost_deployments(connection: Redis, config: DeployConfig) -> list[Deployment]:
    """At worker start: fail every deployment whose worker died, where no live worker holds the lock."""
    store = DeploymentStore(connection)
    recovered = []
    for env in config.environments:
        lock = environment_lock(connection, env, "recovery", config.lock_lease)
        if lock.acquire():
            try:
                lost = recover_lost(store, env, config)
                if lost is not None:
                    recovered.append(lost)
            finally:
                lock.release()
    return recovered


def fail_killed_horse(connection: Redis, config: DeployConfig, deployment_id: str, horse_pid: int, how: str) -> None:
    """The work horse died under a live worker (the OOM killer, a stray kill): fail its deployment at once.

    Only if the dead horse held the environment's lock (it may have died waiting for it): then its
    deployment is the one running, and the lock is released now rather than when its lease runs out.
    """
    store = DeploymentStore(connection)
    deployment = store.get(deployment_id)
    if deployment is None or deployment.is_final:
        return
    lock = _deployment_lock(connection, deployment, config, pid=horse_pid)
    if lock.holder() != lock.token:
        return
    try:
        recover_lost(store, deployment.environment, config, how)
    finally:
        lock.release()


def _deployment_lock(
    connection: Redis, deployment: Deployment, config: DeployConfig, pid: int | None = None
) -> EnvironmentLock:
    """The environment lock as the deployment holds it, on this host, in this process (the work horse) or pid."""
    return environment_lock(connection, deployment.environment, f"deployment-{deployment.id}", config.lock_lease, pid)


def _job_connection() -> Redis:
    job = get_current_job()
    if job is None:
        raise RuntimeError("run_deployment() outside an RQ job needs an explicit connection")
    return job.connection
