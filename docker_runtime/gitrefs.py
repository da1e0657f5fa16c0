"""Asking the repository what a branch or ref points at (git ls-remote): for the API, the CLI and the poller."""

from __future__ import annotations

from deploy_config import DeployError
from deploy_text.redaction import display_url

from .gitauth import git_access

GIT_TIMEOUT = 30
"""Seconds a `git ls-remote` may take: a hung remote must not hang a request or the poller."""


def ls_remote(url: str, *refs: str) -> dict[str, str]:
    """{ref name: sha} for the refs (branches, tags, full refs) the remote has."""
    import git  # GitPython (~10 MiB) only when a ref is resolved: the web app imports this module at start

    try:
        with git_access(url) as (remote, env):
            output = git.cmd.Git().ls_remote(remote, *refs, kill_after_timeout=GIT_TIMEOUT, env=env)
    except git.GitCommandError as exc:
        stderr = str(exc.stderr).strip().strip("'").strip()
        raise DeployError(f"cannot read refs from {display_url(url)}: {stderr or exc}") from None
    except git.CommandError as exc:  # git itself is missing (GitCommandNotFound)
        raise DeployError(f"cannot read refs from {display_url(url)}: cannot run git: {exc}") from None
    found: dict[str, str] = {}
    for line in str(output).splitlines():
        sha, _, name = line.partition("\t")
        if name:
            found[name] = sha
    return found


def resolve_ref(url: str, ref: str) -> str:
    """The sha a branch, tag or full ref points at; DeployError when the remote has no such ref."""
    candidates = [ref] if ref.startswith("refs/") else [f"refs/heads/{ref}", f"refs/tags/{ref}"]
    # ls-remote lists an annotated tag's peeled entry (<tag>^{}) only when a pattern names it.
    found = ls_remote(url, *candidates, *(f"{candidate}^{{}}" for candidate in candidates))
    for candidate in candidates:
        # An annotated tag's commit is listed as <tag>^{}.
        sha = found.get(f"{candidate}^{{}}") or found.get(candidate)
        if sha:
            return sha
    raise DeployError(f"ref {ref!r} does not exist in {display_url(url)}")
