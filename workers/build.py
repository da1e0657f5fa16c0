"""The build step: every image the environment deploys, built locally from the worktree as <image>:<sha>.

When <image>:<sha> already exists (built for staging), production reuses that very image:
what was tested is byte-for-byte what ships, and a promotion takes seconds. A manual rollback
(rollback_to) builds nothing: it reuses the very images its target deployment ran, and fails
plainly if cleanup has removed them.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import docker

from deploy_config import ImageConfig
from deploy_text.formatting import short_sha
from workers.errors import BuildFailed, ReleaseGone

from .context import DeploymentContext

BUILD_TAIL_LINES = 20


def build(ctx: DeploymentContext) -> dict[str, str]:
    """Build (or reuse) every image; record and return {image name: image id}."""
    if ctx.deployment.rollback_to:
        return reuse_release(ctx, ctx.deployment.rollback_to)
    images: dict[str, str] = {}
    for image in ctx.env.images:
        ref = f"{image.name}:{ctx.config.tags.release_tag(ctx.deployment.sha)}"
        existing = _local_image(ctx, ref)
        if existing is not None:
            ctx.log(f"{ref} already built ({existing[:19]}); reusing it")
            images[image.name] = existing
            continue
        images[image.name] = _build_one(ctx, image, ref)
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


def _build_source(ctx: DeploymentContext, image: ImageConfig) -> tuple[Path, str]:
    """(context directory, Dockerfile relative to it) from deploy.yml or the compose service's build:."""
    assert ctx.worktree is not None and ctx.resolved is not None
    if image.service is None:
        return ctx.worktree / (image.context or "."), image.dockerfile or "Dockerfile"
    spec = ctx.resolved.services.get(image.service, {}).get("build")
    if not spec:
        raise BuildFailed(f"image {image.name}: compose service {image.service!r} has no build: section")
    if isinstance(spec, str):
        return Path(spec), "Dockerfile"
    return Path(spec.get("context", ".")), str(spec.get("dockerfile", "Dockerfile"))


def _build_one(ctx: DeploymentContext, image: ImageConfig, ref: str) -> str:
    context, dockerfile = _build_source(ctx, image)
    ctx.log(f"building {ref} from {context} ({dockerfile})")
    tail: deque[str] = deque(maxlen=BUILD_TAIL_LINES)
    image_id = ""
    try:
        stream = ctx.docker.api.build(
            path=str(context),
            dockerfile=dockerfile,
            tag=ref,
            buildargs={"GIT_SHA": ctx.deployment.sha},
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            image_id = _consume(ctx, chunk, tail) or image_id
    except docker.errors.APIError as exc:
        raise BuildFailed(f"building {ref} failed: {exc.explanation or exc}") from None
    if not image_id:
        image_id = str(ctx.docker.images.get(ref).id)
    return image_id


def _consume(ctx: DeploymentContext, chunk: dict[str, Any], tail: deque[str]) -> str | None:
    """Log one build-stream message; raise on an error; return the image id when the stream gives it."""
    if "error" in chunk:
        message = str(chunk.get("errorDetail", {}).get("message") or chunk["error"]).strip()
        ctx.log(message)
        output = "\n".join(tail)
        raise BuildFailed(f"image build failed: {message}" + (f"\n{output}" if output else ""))
    text = chunk.get("stream")
    if text:
        for line in str(text).splitlines():
            if line.strip():
                tail.append(line)
                ctx.log(line)
    aux = chunk.get("aux")
    return str(aux["ID"]) if isinstance(aux, dict) and "ID" in aux else None
