"""The rollout step: point <image>:latest-<env> at the new build, then `docker compose up -d`.

Also the compose calls both strategies make (recreate here and in rollback.py, start-first in start_first.py):
one `docker compose` call streamed into the log, and `up` waiting for healthchecks.
"""

from __future__ import annotations

from collections.abc import Sequence

import docker

from docker_runtime import commands
from docker_runtime.containers import SERVICE_LABEL, project_containers
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


def compose(ctx: DeploymentContext, *args: str) -> None:
    """One `docker compose` call of a rollout (the environment's -p, -f and env), its output in the log."""
    try:
        _stream(ctx, args)
    except CommandFailed as exc:
        raise RolloutFailed(f"docker compose {' '.join(args[:2])} failed: {exc}") from None


def _stream(ctx: DeploymentContext, args: Sequence[str]) -> None:
    timeout = ctx.env.rollout_timeout
    commands.stream(
        ctx.project.args(*args), ctx.log, env=ctx.project.process_env(), timeout=timeout + 30, redact=ctx.redact
    )


def compose_up(ctx: DeploymentContext, *options: str, services: Sequence[str] = ()) -> None:
    """`docker compose up -d`: the named services with options, or every service with --remove-orphans when
    none is named; waiting for healthchecks when those services define them (start-first: the database is
    ready before the app's migrations)."""
    assert ctx.resolved is not None
    scope = list(services) or None
    wait = any(ctx.resolved.services[name].get("healthcheck") for name in scope or ctx.resolved.services)
    flags = [*options] if scope else ["--remove-orphans", *options]
    extra = ["--wait", "--wait-timeout", str(int(ctx.env.rollout_timeout))] if wait else []
    try:
        _stream(ctx, ["up", "-d", *flags, *extra, *(scope or [])])
    except CommandFailed as exc:
        # Only when compose's --wait gave up on health: not when compose itself was killed or timed out.
        gave_up = wait and exc.returncode is not None and exc.returncode > 0 and "healthy" in exc.output
        unhealthy = unhealthy_containers(ctx, services=scope) if gave_up else []
        if unhealthy:
            raise _not_healthy(ctx, unhealthy, f"docker compose up failed: {exc}") from None
        raise RolloutFailed(f"docker compose up failed: {exc}") from None
    # Compose 2.26 can exit 0 when --wait-timeout runs out with a container still unhealthy: check.
    unhealthy = unhealthy_containers(ctx, running_only=True, services=scope) if wait else []
    if unhealthy:
        raise _not_healthy(ctx, unhealthy, "docker compose up --wait exited 0 regardless")


def _not_healthy(ctx: DeploymentContext, unhealthy: list[str], detail: str) -> RolloutFailed:
    return RolloutFailed(
        f"{', '.join(unhealthy)} did not become healthy within {ctx.env.rollout_timeout:g}s (their Docker "
        f"healthcheck; environments.{ctx.env.name}.rollout_timeout): {detail}"
    )


def unhealthy_containers(
    ctx: DeploymentContext, running_only: bool = False, services: Sequence[str] | None = None
) -> list[str]:
    """The project's containers (of those services, if given) whose healthcheck does not say healthy
    (starting or unhealthy), described."""
    try:
        containers = project_containers(ctx.docker, ctx.env.project or "", stopped_too=not running_only)
    except docker.errors.DockerException:
        return []  # a description, best effort: the engine may be the problem
    found = []
    for container in containers:
        if services is not None and container.labels.get(SERVICE_LABEL) not in services:
            continue
        health = (container.attrs.get("State") or {}).get("Health") or {}
        if health.get("Status") not in (None, "healthy"):
            found.append(f"{container.name} ({health['Status']})")
    return sorted(found)
