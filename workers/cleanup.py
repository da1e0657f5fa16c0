"""Step 8, cleanup: keep the images of the environment's last K releases; remove its older unused ones.

Only releases this environment deployed are candidates, and never one that another
environment keeps or a container (running or stopped) uses.
"""

from __future__ import annotations

import docker

from deploy_state import Status

from .context import DeploymentContext, StepWarning

HISTORY = 200
"""Succeeded deployments looked at per environment."""


def _succeeded_shas(ctx: DeploymentContext, env: str) -> list[str]:
    """Distinct shas of env's succeeded deployments, newest first."""
    deployments, _ = ctx.store.page(environment=env, status=Status.SUCCEEDED, limit=HISTORY)
    return list(dict.fromkeys(d.sha for d in deployments))


def cleanup(ctx: DeploymentContext) -> list[str]:
    """Remove this environment's release images beyond keep_releases; returns the refs removed."""
    # This deployment is not marked succeeded yet, but it is the newest release.
    mine = list(dict.fromkeys([ctx.deployment.sha, *_succeeded_shas(ctx, ctx.env.name)]))
    keep = set(mine[: ctx.env.keep_releases])
    for other in ctx.config.environments.values():
        if other.name != ctx.env.name:
            keep |= set(_succeeded_shas(ctx, other.name)[: other.keep_releases])
    # sparse: one list call, no inspect per container, which fails (404) when another project's
    # container goes away between the list and the inspect (any compose down on the same engine).
    in_use = {c.attrs.get("ImageID") for c in ctx.docker.containers.list(all=True, sparse=True)}
    removed, failures = [], []
    for sha in mine:
        if sha in keep:
            continue
        for image in ctx.env.images:
            ref = f"{image.name}:{ctx.config.tags.release_tag(sha)}"
            try:
                found = ctx.docker.images.get(ref)
                if found.id in in_use:
                    continue
                ctx.docker.images.remove(ref)
                removed.append(ref)
                ctx.log(f"removed {ref} (older than the last {ctx.env.keep_releases} releases)")
            except docker.errors.ImageNotFound:
                continue
            except docker.errors.APIError as exc:
                failures.append(f"{ref}: {exc.explanation or exc}")
    if failures:
        raise StepWarning(f"could not remove {len(failures)} old image(s): {'; '.join(failures)}")
    return removed
