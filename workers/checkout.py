"""Step 1, checkout: one mirror of the repository, one worktree per environment, exactly the pushed sha.

Staging and production never share a working tree, so a staging deploy can never
change the files a production deploy is building from.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import git

from deploy_config import defaults
from deploy_config.errors import DeployError
from deploy_config.secrets import display_url
from docker_runtime.compose import ComposeProject
from workers.errors import CheckoutFailed

from .context import DeploymentContext


def checkout(ctx: DeploymentContext) -> Path:
    """Fetch, refuse a sha not on the environment's branch, and check it out in the environment's worktree."""
    state = ctx.config.state_dir
    sha, branch = ctx.deployment.sha, ctx.env.branch
    with _mirror_lock(state):
        mirror = _fetched_mirror(ctx, state / "repo.git")
        _require_on_branch(mirror, sha, branch, _promoted_branch(ctx))
        worktree = _checked_out(ctx, mirror, state / "worktrees" / ctx.env.name, sha)
    ctx.worktree = worktree
    ctx.compose = ComposeProject.for_environment(ctx.config, ctx.env, worktree)
    commit = mirror.commit(sha)
    ctx.log(f"checked out {sha[:12]} ({str(commit.summary)!r} by {commit.author.name}) in {worktree}")
    if not ctx.deployment.message:
        ctx.save(message=str(commit.message).strip())
    try:
        ctx.resolved = ctx.compose.resolve(ctx.redact)
    except DeployError as exc:
        raise CheckoutFailed(f"the compose file does not resolve at {sha[:12]}: {exc}") from None
    return worktree


@contextmanager
def _mirror_lock(state: Path) -> Iterator[None]:
    """Workers of different environments share the mirror: one fetch or worktree change at a time."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "repo.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _fetched_mirror(ctx: DeploymentContext, path: Path) -> git.Repo:
    """The bare mirror at `path`, fetched; the first deploy creates it (init + fetch, not clone:
    `git clone` through GitPython cannot be given a timeout, a fetch can)."""
    url = ctx.config.repository.url
    try:
        if (path / "HEAD").exists():
            mirror = git.Repo(path)
        else:
            ctx.log(f"cloning a mirror of {display_url(url)}")
            mirror = git.Repo.init(path, bare=True)
        if "origin" in (remote.name for remote in mirror.remotes):
            mirror.git.remote("set-url", "origin", url)
        else:
            mirror.git.remote("add", "origin", url)
        mirror.git.fetch(
            "--prune", "origin", "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*", env=defaults.GIT_ENV,
            kill_after_timeout=ctx.config.repository.fetch_timeout,
        )  # fmt: skip
        return mirror
    except git.GitCommandError as exc:
        raise CheckoutFailed(f"cannot fetch {display_url(url)}: {_git_error(exc)}") from None


def _promoted_branch(ctx: DeploymentContext) -> str:
    """A promotion's source environment's branch, which may hold the sha instead of the environment's own."""
    source = ctx.config.environments.get(ctx.deployment.promoted_from)
    return source.branch if source is not None else ""


def _require_on_branch(mirror: git.Repo, sha: str, branch: str, promoted_branch: str = "") -> None:
    try:
        mirror.git.cat_file("-e", f"{sha}^{{commit}}")
    except git.GitCommandError:
        raise CheckoutFailed(
            f"commit {sha[:12]} does not exist in the repository (force-pushed away, or a forged payload)"
        ) from None
    for allowed in (branch, promoted_branch):
        if allowed and _is_ancestor(mirror, sha, allowed):
            return
    where = f"branch {branch}" + (f" nor on {promoted_branch}, which it is promoted from" if promoted_branch else "")
    raise CheckoutFailed(f"commit {sha[:12]} is not on {where} (force-pushed away, or a forged payload); refusing it")


def _is_ancestor(mirror: git.Repo, sha: str, branch: str) -> bool:
    try:
        mirror.git.merge_base("--is-ancestor", sha, f"refs/heads/{branch}")
    except git.GitCommandError:
        return False
    return True


def _checked_out(ctx: DeploymentContext, mirror: git.Repo, worktree: Path, sha: str) -> Path:
    try:
        if not (worktree / ".git").exists():
            worktree.parent.mkdir(parents=True, exist_ok=True)
            mirror.git.worktree("prune")
            mirror.git.worktree("add", "--detach", "--force", str(worktree), sha)
        else:
            tree = git.Repo(worktree)
            tree.git.checkout("--detach", "--force", sha)
            # Build from exactly the commit: nothing left over from an earlier deploy.
            tree.git.clean("-ffdx")
    except git.GitCommandError as exc:
        raise CheckoutFailed(f"cannot check out {sha[:12]} in {worktree}: {_git_error(exc)}") from None
    return worktree


def _git_error(exc: git.GitCommandError) -> str:
    return str(exc.stderr).strip().strip("'").strip() or str(exc)
