"""The checkout step: one mirror of the repository, one worktree per environment, exactly the pushed sha.

Staging and production never share a working tree, so a staging deploy can never
change the files a production deploy is building from.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path, PurePosixPath

import git

from deploy_config.errors import DeployError
from deploy_text.formatting import short_sha
from deploy_text.redaction import display_url
from docker_runtime.compose import ComposeProject
from docker_runtime.gitauth import git_access
from docker_runtime.private import open_private, private_dir, private_file, private_tree, shared_umask
from docker_runtime.projectdir import clean_excludes, env_file_paths, kept_paths, place_env_files
from workers.errors import CheckoutFailed

from .context import DeploymentContext
from .isolation import lint_checkout, lint_reads
from .push_order import check_push_order, is_ancestor


def checkout(ctx: DeploymentContext) -> Path:
    """Fetch, refuse a sha not on the environment's branch, and check it out in the environment's worktree."""
    state = ctx.config.state_dir
    sha, branch = ctx.deployment.sha, ctx.env.branch
    with _mirror_lock(state):
        mirror = _fetched_mirror(ctx, ctx.config.mirror_dir)
        _require_on_branch(mirror, sha, branch, _promoted_branch(ctx))
        check_push_order(ctx, mirror)
        worktree = _checked_out(ctx, mirror, ctx.config.worktree(ctx.env.name), sha)
    ctx.worktree = worktree
    project = ComposeProject.for_environment(ctx.config, ctx.env, worktree)
    ctx.compose = replace(project, engine_env=ctx.engine.docker_env(), engine_ids=ctx.engine.user_ids())
    commit = mirror.commit(sha)
    ctx.log(f"checked out {short_sha(sha)} ({str(commit.summary)!r} by {commit.author.name}) in {worktree}")
    if not ctx.deployment.message:
        # Masked like every other trigger's message: a pusher may paste an env-file secret into a commit.
        ctx.save(message=ctx.redact(str(commit.message).strip()))
    lint_reads(ctx, ctx.compose.file)
    env_files = _place_env_files(ctx, worktree)
    try:
        ctx.resolved, override = ctx.compose.resolve_release(ctx.redact)
    except DeployError as exc:
        raise CheckoutFailed(f"the compose file does not resolve at {short_sha(sha)}: {exc}") from None
    _clean(ctx, worktree, [*kept_paths(ctx.resolved, worktree), *(path.relative_to(worktree) for path in env_files)])
    lint_checkout(ctx)
    if override is not None:
        _write_override(ctx, override)
    return worktree


def _write_override(ctx: DeploymentContext, override: str) -> None:
    """start-first: the environment's proxy override, as its compose calls from now on use it. Written here
    only: by the environment's own deployment, once its lint passed, while it holds the environment's lock."""
    assert ctx.compose is not None and ctx.compose.override is not None
    ctx.check_lock("writing its proxy override")
    if ctx.compose.write_override(override):
        ctx.log(f"proxy override written: {ctx.compose.override}")


def _place_env_files(ctx: DeploymentContext, worktree: Path) -> list[Path]:
    """The app's env file (deploy.yml env_file) wherever the compose file's services read one (`env_file:
    .env`): it is never committed, and Compose refuses a service whose env file is missing."""
    assert ctx.compose is not None
    tracked = set(git.Repo(worktree).git.ls_files().splitlines())
    wanted = [
        path for path in env_file_paths(ctx.compose.file, worktree) if str(path.relative_to(worktree)) not in tracked
    ]
    if not wanted:
        return []
    names = ", ".join(str(path.relative_to(worktree)) for path in wanted)
    if not ctx.config.env_file.is_file():
        raise CheckoutFailed(
            f"{ctx.env.compose_file} reads {names} (env_file), which deployhook writes from deploy.yml's env_file "
            f"{ctx.config.env_file}: that file does not exist; create it from the repository's .env.example"
        )
    written = place_env_files(wanted, ctx.config.env_file.read_bytes())
    ctx.log(f"env file {names} written from {ctx.config.env_file.name} (mode 0600)")
    return written


def _clean(ctx: DeploymentContext, worktree: Path, kept: list[PurePosixPath | Path]) -> None:
    """Nothing left over from an earlier deploy but what the app wrote under its bind-mounted paths
    (./logs, ./backups) and the env files: those the running containers use, and they outlive a release."""
    try:
        git.Repo(worktree).git.clean("-ffdx", *clean_excludes(kept))
    except git.GitCommandError as exc:
        raise CheckoutFailed(f"cannot clean {worktree}: {_git_error(exc)}") from None
    if kept:
        ctx.log(
            f"untracked files kept (bind-mounted paths, env files): {', '.join(sorted(str(path) for path in kept))}"
        )


@contextmanager
def _mirror_lock(state: Path) -> Iterator[None]:
    """Workers of different environments share the mirror: one fetch or worktree change at a time."""
    private_dir(state)
    with open_private(state / "repo.lock", truncate=False) as handle:
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
        _make_private(mirror, path)
        with git_access(url) as (plain_url, env):
            # Set on every fetch: it also rewrites a URL with credentials that an older version stored.
            verb = "set-url" if "origin" in (remote.name for remote in mirror.remotes) else "add"
            mirror.git.remote(verb, "origin", plain_url)
            mirror.git.fetch(
                "--prune", "origin", "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*", env=env,
                kill_after_timeout=ctx.config.repository.fetch_timeout,
            )  # fmt: skip
        return mirror
    except git.GitCommandError as exc:
        raise CheckoutFailed(f"cannot fetch {display_url(url)}: {_git_error(exc)}") from None


def _make_private(mirror: git.Repo, path: Path) -> None:
    """Git creates the mirror's files 0600 and its directories 0700 from now on, whatever the umask."""
    if mirror.git.config("--get", "core.sharedRepository", with_exceptions=False) != "0600":
        mirror.git.config("core.sharedRepository", "0600")
    private_file(path / "config")


def _promoted_branch(ctx: DeploymentContext) -> str:
    """A promotion's source environment's branch, which may hold the sha instead of the environment's own."""
    source = ctx.config.environments.get(ctx.deployment.promoted_from)
    return source.branch if source is not None else ""


def _require_on_branch(mirror: git.Repo, sha: str, branch: str, promoted_branch: str = "") -> None:
    try:
        mirror.git.cat_file("-e", f"{sha}^{{commit}}")
    except git.GitCommandError:
        raise CheckoutFailed(
            f"commit {short_sha(sha)} does not exist in the repository (force-pushed away, or a forged payload)"
        ) from None
    for allowed in (branch, promoted_branch):
        if allowed and is_ancestor(mirror, sha, f"refs/heads/{allowed}"):
            return
    where = f"branch {branch}" + (f" nor on {promoted_branch}, which it is promoted from" if promoted_branch else "")
    raise CheckoutFailed(
        f"commit {short_sha(sha)} is not on {where} (force-pushed away, or a forged payload); refusing it"
    )


def _checked_out(ctx: DeploymentContext, mirror: git.Repo, worktree: Path, sha: str) -> Path:
    private_dir(worktree.parent)
    try:
        # The usual modes inside the worktree (its 0700 parent keeps it private): Docker's COPY keeps
        # a file's mode, and an image whose user is not root must still read what it copied.
        with shared_umask():
            if not (worktree / ".git").exists():
                mirror.git.worktree("prune")
                mirror.git.worktree("add", "--detach", "--force", str(worktree), sha)
            else:
                # Untracked files go once the compose file says which are the app's (_clean).
                git.Repo(worktree).git.checkout("--detach", "--force", sha)
        private_tree(Path(mirror.git_dir) / "worktrees")  # git's record of the worktree, made under that umask
    except git.GitCommandError as exc:
        raise CheckoutFailed(f"cannot check out {short_sha(sha)} in {worktree}: {_git_error(exc)}") from None
    return worktree


def _git_error(exc: git.GitCommandError) -> str:
    return str(exc.stderr).strip().strip("'").strip() or str(exc)
