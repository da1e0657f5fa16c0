"""The rollout step: point <image>:latest-<env> at the new build, then `docker compose up -d`."""

from __future__ import annotations

import docker

from docker_runtime import commands
from docker_runtime.containers import project_containers
from docker_runtime.errors import CommandFailed
from workers.errors import RolloutFailed

from .context import DeploymentContext


def rollout(ctx: DeploymentContext) -> None:
    """Re-point latest-<env> at the new build, bring the stack up."""
    point_current_tags(ctx, ctx.deployment.images)
    compose_up(ctx)


def record_rollback_target(ctx: DeploymentContext) -> None:
    """Remember what latest-<env> points at and the last succeeded sha: what a rollback puts back.

    Recorded before anything is built, so nothing the build does can change what a rollback restores."""
    previous = {image.name: image_id for image in ctx.env.images if (image_id := current_image(ctx, image.name))}
    last = ctx.store.last_succeeded(ctx.env.name, before=ctx.deployment.id)
    ctx.save(previous_images=previous, previous_sha=last.sha if last else "")


def current_image(ctx: DeploymentContext, name: str) -> str | None:
    """The id <name>:latest-<env> points at, or None before the first deploy."""
    try:
        return str(ctx.docker.images.get(f"{name}:{ctx.config.tags.current_tag(ctx.env.name)}").id)
    except docker.errors.ImageNotFound:
        return None


def point_current_tags(ctx: DeploymentContext, images: dict[str, str]) -> None:
    tag = ctx.config.tags.current_tag(ctx.env.name)
    for name, image_id in images.items():
        ctx.docker.images.get(image_id).tag(name, tag)
        ctx.log(f"{name}:{tag} -> {image_id[:19]}")


def compose_up(ctx: DeploymentContext) -> None:
    """`docker compose up -d --remove-orphans`, waiting for healthchecks when the services define them."""
    assert ctx.resolved is not None
    wait = any(service.get("healthcheck") for service in ctx.resolved.services.values())
    timeout = ctx.env.rollout_timeout
    extra = ["--wait", "--wait-timeout", str(int(timeout))] if wait else []
    args = ctx.project.args("up", "-d", "--remove-orphans", *extra)
    try:
        commands.stream(args, ctx.log, env=ctx.project.process_env(), timeout=timeout + 30, redact=ctx.redact)
    except CommandFailed as exc:
        # Only when compose's --wait gave up on health: not when compose itself was killed or timed out.
        gave_up = wait and exc.returncode is not None and exc.returncode > 0 and "healthy" in exc.output
        unhealthy = unhealthy_containers(ctx) if gave_up else []
        if unhealthy:
            raise _not_healthy(ctx, unhealthy, f"docker compose up failed: {exc}") from None
        raise RolloutFailed(f"docker compose up failed: {exc}") from None
    # Compose 2.26 can exit 0 when --wait-timeout runs out with a container still unhealthy: check.
    unhealthy = unhealthy_containers(ctx, running_only=True) if wait else []
    if unhealthy:
        raise _not_healthy(ctx, unhealthy, "docker compose up --wait exited 0 regardless")


def _not_healthy(ctx: DeploymentContext, unhealthy: list[str], detail: str) -> RolloutFailed:
    return RolloutFailed(
        f"{', '.join(unhealthy)} did not become healthy within {ctx.env.rollout_timeout:g}s (their Docker "
        f"healthcheck; environments.{ctx.env.name}.rollout_timeout): {detail}"
    )


def unhealthy_containers(ctx: DeploymentContext, running_only: bool = False) -> list[str]:
    """The project's containers whose healthcheck does not say healthy (starting or unhealthy), described."""
    try:
        containers = project_containers(ctx.docker, ctx.env.project or "", stopped_too=not running_only)
    except docker.errors.DockerException:
        return []  # a description, best effort: the engine may be the problem
    found = []
    for container in containers:
        health = (container.attrs.get("State") or {}).get("Health") or {}
        if health.get("Status") not in (None, "healthy"):
            found.append(f"{container.name} ({health['Status']})")
    return sorted(found)
