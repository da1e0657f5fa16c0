"""The smoke step, and the environment's pre_deploy and post_deploy commands.

They run in the worktree with the allow-listed environment Compose gets (childenv.py): none of
deployhook's own secrets (webhook secret, tokens, chat URLs) reach code that comes from the repository.
"""

from __future__ import annotations

from deploy_config.schema import CommandHook
from deploy_config.secrets import secret_env_names
from docker_runtime import commands
from docker_runtime.childenv import child_environment
from docker_runtime.errors import CommandFailed
from workers.errors import RolloutFailed

from .context import DeploymentContext


def hook_environment(ctx: DeploymentContext) -> dict[str, str]:
    extra = {
        "TARGET_URL": ctx.env.base_url,
        "ENVIRONMENT": ctx.env.name,
        "GIT_SHA": ctx.deployment.sha,
        "COMPOSE_PROJECT_NAME": ctx.env.project or "",
    }
    if ctx.env.name == "staging":
        extra["STAGING_URL"] = ctx.env.base_url  # the seed's `STAGING_URL=... make test-staging`
    return child_environment(extra, secret_names=secret_env_names(ctx.config), engine=ctx.engine.docker_env())


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
