"""The build step: every image the environment deploys, built by `docker compose build` as <image>:<sha>.

Compose builds with BuildKit, so every build setting of the compose file applies (args, target,
cache mounts, secrets, additional contexts) and BuildKit's cache outlives each deploy. A generated
file on top of the user's (`-f FILE -f BUILD`) only names each image by its release and adds the
build arg GIT_SHA; the image-tag variable (tag_variable) is the release tag while building, so a
build arg such as `VERSION: ${DOCKER_IMAGE_TAG}` names the release. latest-<env> is not touched:
the rollout re-points it.

When <image>:<sha> already exists (built for staging), production reuses that very image:
what was tested is byte-for-byte what ships, and a promotion takes seconds. A manual rollback
(rollback_to) builds nothing: it reuses the very images its target deployment ran, and fails
plainly if cleanup has removed them.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import yaml

from deploy_config import ImageConfig
from deploy_text.formatting import short_sha
from docker_runtime import commands
from docker_runtime.errors import CommandFailed
from docker_runtime.private import private_dir
from docker_runtime.projectdir import env_file_paths, unignored
from workers.errors import BuildFailed, ReleaseGone

from .context import DeploymentContext
from .rollout import record_rollback_target
from .ship import ship_release_image

BUILD_SERVICE_PREFIX = "deployhook-build-"
"""The generated build file's service for an image deploy.yml builds from a context, not a compose service."""


def build(ctx: DeploymentContext) -> dict[str, str]:
    """Build (or reuse) every image; record and return {image name: image id}."""
    record_rollback_target(ctx)
    if ctx.deployment.rollback_to:
        return reuse_release(ctx, ctx.deployment.rollback_to)
    release = ctx.config.tags.release_tag(ctx.deployment.sha)
    images: dict[str, str] = {}
    missing = []
    for image in ctx.env.images:
        ref = f"{image.name}:{release}"
        existing = _local_image(ctx, ref)
        if existing is None and ctx.engine.remote:
            shipped = ship_release_image(ctx, ref)  # built where staging builds: shipped, not built again
            if shipped is not None:
                images[image.name] = shipped
                continue
        if existing is not None:
            ctx.log(f"{ref} already built ({existing[:19]}); reusing it")
            images[image.name] = existing
        else:
            missing.append(image)
    if missing:
        images.update(_compose_build(ctx, missing, release))
    ctx.save(images=images)
    return images


def reuse_release(ctx: DeploymentContext, target_id: str) -> dict[str, str]:
    """The images deployment `target_id` ran, still here by id (a tag may have moved); never a rebuild."""
    target = ctx.store.require(target_id)
    images, missing = {}, []
    for image in ctx.env.images:
        image_id = target.images.get(image.name, "")
        if image_id and _local_image(ctx, image_id) is not None:
            images[image.name] = image_id
        else:
            missing.append(f"{image.name} ({image_id[:19] or 'not recorded'})")
    if missing:
        raise ReleaseGone(
            f"cannot roll back to deployment {target.id} ({short_sha(target.sha)}): "
            f"its image(s) {', '.join(missing)} are "
            f"no longer on this server (cleanup keeps the last environments.{ctx.env.name}.keep_releases="
            f"{ctx.env.keep_releases} releases); nothing was touched. To rebuild that commit, deploy it: "
            f"deployhook deploy {ctx.env.name} --sha {target.sha}"
        )
    ctx.log(f"rollback to deployment {target.id}: reusing its images, nothing is rebuilt")
    for name, image_id in images.items():
        ctx.log(f"{name}: {image_id[:19]}")
    ctx.save(images=images)
    return images


def _local_image(ctx: DeploymentContext, ref: str) -> str | None:
    try:
        return str(ctx.docker.images.get(ref).id)
    except docker.errors.ImageNotFound:
        return None


def _compose_build(ctx: DeploymentContext, images: list[ImageConfig], release: str) -> dict[str, str]:
    """`docker compose build` of the services that make these images, tagged <name>:<release>; their ids."""
    assert ctx.resolved is not None
    services = {_build_service(ctx, image): image for image in images}
    refs = ", ".join(f"{image.name}:{release}" for image in images)
    _warn_env_files_in_contexts(ctx, services)
    ctx.log(f"building {refs} with Compose (BuildKit): {', '.join(services)}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="deployhook-build-", dir=private_dir(ctx.config.state_dir / "tmp")) as temp:
        build_file = Path(temp) / "compose.build.yml"
        build_file.write_text(yaml.safe_dump(_build_file(ctx, services, release), sort_keys=False))
        project = replace(ctx.project, override=build_file, runtime_dir=None)
        env = {**project.process_env(), "GIT_SHA": ctx.deployment.sha, "DOCKER_BUILDKIT": "1"}
        if ctx.env.tag_variable:
            env[ctx.env.tag_variable] = release
        try:
            commands.stream(
                project.args("--progress", "plain", "build", *services), ctx.log,
                env=env, timeout=ctx.env.deploy_timeout, redact=ctx.redact,
            )  # fmt: skip
        except CommandFailed as exc:
            raise _build_failed(refs, exc) from None
    ctx.log(f"built {refs} in {time.monotonic() - started:.1f}s")
    return {image.name: _image_id(ctx, f"{image.name}:{release}") for image in images}


def _build_service(ctx: DeploymentContext, image: ImageConfig) -> str:
    """The compose service that builds the image: its `service`, or a generated one for a context."""
    assert ctx.resolved is not None
    if image.service is None:
        return f"{BUILD_SERVICE_PREFIX}{image.name.replace('/', '-')}"
    if not ctx.resolved.services.get(image.service, {}).get("build"):
        raise BuildFailed(f"image {image.name}: compose service {image.service!r} has no build: section")
    return image.service


def _build_file(ctx: DeploymentContext, services: dict[str, ImageConfig], release: str) -> dict[str, Any]:
    """The file layered on the user's for the build: each service's image named by its release, GIT_SHA added
    to its build args (Compose merges them with the file's own); a context image gets a service of its own."""
    assert ctx.worktree is not None
    entries: dict[str, Any] = {}
    for service, image in services.items():
        build: dict[str, Any] = {"args": {"GIT_SHA": ctx.deployment.sha}}
        if image.service is None:
            build = {
                "context": str(ctx.worktree / (image.context or ".")),
                "dockerfile": image.dockerfile or "Dockerfile",
                **build,
            }
        entries[service] = {"image": f"{image.name}:{release}", "build": build}
    return {"services": entries}


def _warn_env_files_in_contexts(ctx: DeploymentContext, services: dict[str, ImageConfig]) -> None:
    """The env file checkout writes (env_file: .env) must not reach an image: say so when a build context
    holds it and its .dockerignore does not exclude it (`COPY . .` would bake the app's secrets in)."""
    assert ctx.worktree is not None and ctx.resolved is not None
    env_files = env_file_paths(ctx.project.file, ctx.worktree)
    for service, image in services.items():
        spec = ctx.resolved.services.get(service, {}).get("build") if image.service else None
        if isinstance(spec, dict):
            context, dockerfile = Path(str(spec.get("context") or ctx.worktree)), str(spec.get("dockerfile") or "")
        else:
            context, dockerfile = ctx.worktree / (image.context or "."), image.dockerfile or "Dockerfile"
        for path in unignored(context, env_files, Path(dockerfile or "Dockerfile").name):
            ctx.log(
                f"warning: {path.relative_to(ctx.worktree)} (the app's env file, written for the compose file's "
                f"env_file) is in {service}'s build context and its .dockerignore does not exclude it: its "
                "secrets reach the build, and an image that copies the context keeps them; add it to .dockerignore"
            )


def _build_failed(refs: str, exc: CommandFailed) -> BuildFailed:
    if "requires BuildKit" in exc.output or "BuildKit is" in exc.output:
        return BuildFailed(
            f"building {refs} needs BuildKit, which this Docker engine does not offer (Docker 18.09 or newer builds "
            f"with it; DOCKER_BUILDKIT=0 turns it off): {exc}"
        )
    return BuildFailed(f"building {refs} failed: {exc}")


def _image_id(ctx: DeploymentContext, ref: str) -> str:
    image_id = _local_image(ctx, ref)
    if image_id is None:
        raise BuildFailed(
            f"docker compose build finished, but {ref} is not on the engine; its service names another image"
        )
    return image_id
