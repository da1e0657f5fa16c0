"""The smoke step, and the environment's pre_deploy and post_deploy commands.

They run in the worktree with a small, explicit environment: none of deployhook's own
secrets (webhook secret, API token) reach code that comes from the repository.
"""

from __future__ import annotations

import os

from deploy_config.schema import CommandHook
from docker_runtime import commands
from docker_runtime.errors import CommandFailed
from workers.errors import RolloutFailed

from .context import DeploymentContext

_PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "DOCKER_HOST")


def hook_environment(ctx: DeploymentContext) -> dict[str, str]:
    env = {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
    env.update(
        TARGET_URL=ctx.env.base_url,
        ENVIRONMENT=ctx.env.name,
        GIT_SHA=ctx.deployment.sha,
        COMPOSE_PROJECT_NAME=ctx.env.project or "",
    )
    if ctx.env.name == "staging":
        env["STAGING_URL"] = ctx.env.base_url  # the seed's `STAGING_URL=... make test-staging`
    return env


def run_hook(ctx: DeploymentContext, name: str, hook: CommandHook) -> None:
    """Run one hook command; a non-zero exit or a timeout fails the step with its output's tail."""
    assert ctx.worktree is not None
    try:
        commands.stream(
            hook.command, ctx.log, cwd=ctx.worktree, env=hook_environment(ctx), timeout=hook.timeout,
            redact=ctx.redact,
        )  # fmt: skip
    except CommandFailed as exc:
        raise RolloutFailed(f"{name} command failed: {exc}") from None
