"""The rollback step: when anything after the rollout fails, put the previous release back.

The database is never restored automatically: the record names the backup taken
before the rollout and the command that restores it.
"""

from __future__ import annotations

from docker.models.containers import Container

from deploy_config.errors import DeployError
from deploy_state import Status
from deploy_text.formatting import short_sha
from docker_runtime.containers import project_containers
from workers.errors import RollbackFailed

from .context import DeploymentContext
from .healthcheck import health_gate
from .rollout import compose_up, point_current_tags


def rollback(ctx: DeploymentContext, cause: DeployError) -> Status:
    """Re-point latest-<env> at the previous images, bring them up, gate on health; ROLLED_BACK or raise."""
    previous, sha = ctx.deployment.previous_images, ctx.deployment.previous_sha
    if not previous:
        raise DeployError(
            f"{cause}; this was the first deploy of {ctx.env.name}, so there is no previous release to roll back to"
        )
    try:
        with ctx.step("rollback", cancellable=False, deadline=False):  # past the deadline too: that is its job
            ctx.log(f"rolling back to {short_sha(sha) or 'the previous images'} because: {cause}")
            point_current_tags(ctx, previous)
            compose_up(ctx)
            if sha:
                health_gate(ctx, sha)
    except DeployError as exc:
        failed = f"{cause}; the rollback to {short_sha(sha) or 'the previous images'} failed too: {exc}"
        raise degraded(ctx, failed) from None
    serving = short_sha(sha) or "the previous release"
    ctx.save(reason=f"{cause}; rolled back: {serving} is serving again{restore_hint(ctx)}")
    return Status.ROLLED_BACK


def degraded(ctx: DeploymentContext, what: str) -> RollbackFailed:
    """Mark the environment degraded (the page's banner); the error that says so and what runs now."""
    running = describe_running(ctx)
    ctx.store.mark_degraded(ctx.env.name, f"rollback of deployment {ctx.deployment.id} failed; running: {running}")
    return RollbackFailed(f"{what}; {ctx.env.name} is degraded; running now: {running}")


def restore_hint(ctx: DeploymentContext) -> str:
    if not ctx.deployment.backup:
        return ""
    return (
        f"; the database was not restored (backup {ctx.deployment.backup}; to restore it: "
        f"deployhook backups restore {ctx.env.name} {ctx.deployment.backup} --yes)"
    )


def describe_running(ctx: DeploymentContext) -> str:
    try:
        containers = project_containers(ctx.docker, ctx.env.project or "")
    except Exception as exc:  # noqa: BLE001 - a description, best effort, even when Docker is down
        return f"unknown ({exc})"
    if not containers:
        return "no containers"
    return ", ".join(f"{c.name} ({_image_name(c)}: {c.status})" for c in containers)


def _image_name(container: Container) -> str:
    image = container.image
    if image is None:
        return "image removed"
    return str(image.tags[0]) if image.tags else str(image.short_id)
