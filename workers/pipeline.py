"""The deploy pipeline: the seed's runbook, one step module each, run in order.

Nothing is touched before the rollout: a failure up to the backup leaves the running
containers, the latest-<env> tags and the database as they were. From the rollout on,
a failure rolls back, and a newer push no longer interrupts (never mid-rollout).
"""

from __future__ import annotations

import docker
import requests
from rq.timeouts import JobTimeoutException

from deploy_config.errors import DeployError
from deploy_state import Status, StepStatus
from docker_runtime.engine import docker_unreachable
from workers.errors import PreflightFailed

from .backup import backup
from .build import build
from .checkout import checkout
from .cleanup import cleanup
from .context import DeploymentContext
from .healthcheck import health_gate, watching_health
from .hooks import run_hook
from .preflight import preflight
from .release_notes import release_notes
from .rollback import rollback
from .rollout import rollout
from .ship import ship_project
from .start_first import run_start_first
from .verify import verify


def run(ctx: DeploymentContext) -> Status:
    """Run every step of the deployment; returns SUCCEEDED or ROLLED_BACK, raises DeployError on failure."""
    try:
        return _run(ctx)
    except DeployError as exc:
        engine = None if _names_the_engine(exc) else docker_unreachable(client=ctx.engine.client)
        if engine is None:
            raise
        # A stopped dockerd kills what it runs: a build then "fails" with 137, compose with its own
        # words. The cause to act on is the engine, so say that first.
        step = next((s.name for s in reversed(ctx.deployment.steps) if s.status == StepStatus.FAILED), "the deployment")
        raise DeployError(
            f"the Docker engine stopped answering during {step} ({ctx.engine.address}: {engine}); start it "
            f"(systemctl start docker), check `docker info`, then deploy again (deployhook deploy {ctx.env.name}); "
            f"what failed: {exc}"
        ) from exc


def _names_the_engine(exc: DeployError) -> bool:
    """The step already said the engine failed (DeploymentContext.step turns Docker's errors into that),
    or it was preflight, which checks the engine first and says so."""
    docker_failed = isinstance(exc.__cause__, (docker.errors.DockerException, requests.ConnectionError))
    return docker_failed or isinstance(exc, PreflightFailed)


def _run(ctx: DeploymentContext) -> Status:
    with ctx.step("preflight"):
        preflight(ctx)
    with ctx.step("checkout"):
        checkout(ctx)
    release_notes(ctx)  # not a step: best-effort, for the chat message
    with ctx.step("build"):
        build(ctx)
    if ctx.engine.remote:
        with ctx.step("ship"):
            ship_project(ctx)
    if ctx.env.pre_deploy is not None:
        with ctx.step("pre_deploy"):
            run_hook(ctx, "pre_deploy", ctx.env.pre_deploy)
    with ctx.step("backup"):
        backup(ctx)
    ctx.check_cancelled()  # the last boundary where a newer push (or a lost lock) may stop this one
    ctx.check_lock("rollout")
    if ctx.env.rollout.start_first:
        switched_back = run_start_first(ctx, _after_rollout)
        if switched_back is not None:
            return switched_back
    else:
        try:
            _roll_out(ctx)
        except DeployError as cause:
            return rollback(ctx, cause)
        except JobTimeoutException:
            # A step hung past deploy_timeout and RQ's margin: the alarm fires once, so the rollback can still run.
            return rollback(ctx, DeployError(f"timed out after {ctx.env.job_timeout:g}s in the middle of the rollout"))
    ctx.store.clear_degraded(ctx.env.name)
    with ctx.step("cleanup", cancellable=False, deadline=False):
        cleanup(ctx)
    return Status.SUCCEEDED


def _roll_out(ctx: DeploymentContext) -> None:
    with watching_health(ctx) as watch:
        with ctx.step("rollout", cancellable=False):
            rollout(ctx)
        with ctx.step("health", cancellable=False):
            ctx.save(health=health_gate(ctx, watch=watch))
    _after_rollout(ctx)


def _after_rollout(ctx: DeploymentContext) -> None:
    """smoke, verify, post_deploy: after the health gate (start-first: after the switch)."""
    if ctx.env.smoke is not None:
        with ctx.step("smoke", cancellable=False):
            run_hook(ctx, "smoke", ctx.env.smoke)
    with ctx.step("verify", cancellable=False):
        verify(ctx)
    if ctx.env.post_deploy is not None:
        with ctx.step("post_deploy", cancellable=False):
            run_hook(ctx, "post_deploy", ctx.env.post_deploy)
