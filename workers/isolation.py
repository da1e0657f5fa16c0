"""Checkout's isolation lint: the compose files at the pushed sha, under the rules of `config check`.

`deployhook config check` lints the files of one checkout on the operator's machine; what a push
deploys is another matter. Each deployment lints its own commit: this environment's resolved
compose file against every other environment's file from the same worktree. A push that makes
staging publish production's port or join production's network fails here, before the build,
with the rule's name and message, and nothing running is touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from deploy_config.errors import DeployError
from deploy_config.isolation import compose_reads_outside, lint, lint_notes
from deploy_config.resolved import ResolvedCompose
from deploy_text.formatting import short_sha
from docker_runtime.compose import resolve_for_lint
from workers.errors import IsolationLintFailed

from .context import DeploymentContext


def lint_reads(ctx: DeploymentContext, compose_file: Path) -> None:
    """The host-paths rule's part that needs no Compose: what the file has Compose read (env files, build
    contexts...) must stay in the project. Asked before Compose resolves the file, which reads every env file
    it names, wherever it is."""
    _refuse(short_sha(ctx.deployment.sha), {"host-paths": compose_reads_outside(ctx.config, ctx.env, compose_file)})


def _refuse(sha: str, violations: Mapping[str, Sequence[str]]) -> None:
    failed = {rule: found for rule, found in violations.items() if found}
    if failed:
        summary = "; ".join(f"{rule}: {' '.join(found)}" for rule, found in failed.items())
        raise IsolationLintFailed(
            f"the compose files at {sha} break the isolation lint ({', '.join(failed)}): "
            f"{summary}; fix them and push again (`deployhook config check --repo-dir <checkout>` shows the same)"
        )


def lint_checkout(ctx: DeploymentContext) -> None:
    """Run every isolation rule on the worktree's compose files; raise IsolationLintFailed on a violation."""
    assert ctx.worktree is not None and ctx.resolved is not None, "checkout resolves the compose file first"
    sha = short_sha(ctx.deployment.sha)
    stacks: dict[str, ResolvedCompose] = {ctx.env.name: ctx.resolved}
    for name, env in ctx.config.environments.items():
        if name == ctx.env.name:
            continue
        try:
            stacks[name] = resolve_for_lint(ctx.config, env, ctx.worktree, ctx.redact)
        except DeployError as exc:
            raise IsolationLintFailed(
                f"the isolation lint cannot run at {sha}: {name}'s compose file does not resolve there: {exc}"
            ) from None
    results = lint(ctx.config, stacks)
    _refuse(sha, {r.rule.name: r.violations for r in results if not r.passed})
    ctx.log(f"isolation lint at {sha}: all {len(results)} rules hold ({', '.join(sorted(stacks))})")
    for note in lint_notes(ctx.config, stacks):
        ctx.log(f"isolation lint: {note}")
